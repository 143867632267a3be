"""The fast syscall transport, deferred until the process is warm.

A program of a few dozen calls (hello makes ~20) gains nothing from the fast transport: no
site is patched before WARM_EXITS exits (platform/fastcall/patcher.py), and building it
(its modules, the C helper, a vCPU's TSC read, the slots) costs ~2.5 ms of start-up. So a
run starts on the exit path alone and the transport is made at the WARM_EXITS-th exit, or
when a second thread starts, whichever comes first. Either happens in an exit of the
process's only vCPU in use, on its own thread, so no vCPU is in guest mode while the
transport is attached; that vCPU joins it there (Vcpu.join_fast), later ones as they
are made. The sites that exited meanwhile are handed over, so a hot one is patched at
its next exit as if the transport had been there from the start.
"""

from __future__ import annotations

from collections.abc import Callable

# Exits at unpatched sites before any site is patched: a program that makes fewer calls
# would pay for an arena, its patches and the server's start (~1.5 ms of a static hello's
# 3.5) and save nothing.
WARM_EXITS = 32


class ExitCount:
    """A program's exits at sites not patched, towards WARM_EXITS, and the sites they came
    from: counted by the warm-up until the transport is made, then handed to the patcher
    (Patcher.count), which counts on. Until then it is the address space's code watcher
    (kernel/mm.py CodeWatcher): sites unmapped are forgotten, and an execve starts the
    count afresh."""

    __slots__ = ("exits", "seen")

    def __init__(self, exits: int = 0, seen: set[int] | None = None) -> None:
        self.exits = exits  # since the program's start
        self.seen: set[int] = set() if seen is None else seen  # sites that exited

    def copy(self) -> ExitCount:
        """A forked process's: the program runs on there."""
        return ExitCount(self.exits, set(self.seen))

    def forget(self, start: int, end: int) -> None:
        self.seen = {site for site in self.seen if not start <= site < end}

    def new_program(self) -> None:
        self.exits = 0


class WarmUp:
    """Counts a process's exits until its fast transport is due; `enable` makes it (False:
    it could not be made, and the run stays on the exit path). Until then its count is
    what hears of guest code going away (the address space's code watcher, as the
    patcher is later)."""

    def __init__(self, enable: Callable[[WarmUp], bool], count: ExitCount | None = None
                 ) -> None:
        self._enable: Callable[[WarmUp], bool] | None = enable
        self.count = ExitCount() if count is None else count
        self.counted = 0  # exits of this process (a forked child's count from none)

    def exit(self, site: int) -> bool:
        """A `syscall` at `site` exits; True when this one made the transport: as the
        patcher would count (Patcher.site_exit), the exit after WARM_EXITS, whose site
        is then patched if it exited before."""
        count = self.count
        if count.exits >= WARM_EXITS:
            return self.enable()
        count.exits += 1
        count.seen.add(site)
        self.counted += 1
        return False

    def enable(self) -> bool:
        """Make the transport (once: a failed attempt is not repeated)."""
        enable, self._enable = self._enable, None
        return enable is not None and enable(self)

    def forked(self, enable: Callable[[WarmUp], bool]) -> WarmUp:
        """A forked process's: the program's count so far (it runs on), none of its own."""
        return WarmUp(enable, self.count.copy())
