"""The guest's KVM VM, made in a thread while the main thread imports and builds the rest
of the guest (builder.py).

Giving KVM the guest's memory (KVM_SET_USER_MEMORY_REGION; since 2026-12-02 the slots
cover only what is mapped, platform/memory.py `cover`) waits in the kernel now and then
(an SRCU grace period: up to a few ms under load for little CPU); as root, the
sandbox's network namespace (`also`) waits likewise now and then. The ioctls release
the GIL, so beside the main thread's ~15 ms of imports and filesystem set-up those
waits cost no wall time. Nothing done here imports (`also` must
not either): the thread never contends for an import lock.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from karn.platform.kvm import VirtualMachine
from karn.platform.layout import GIB, layout_for
from karn.run.config import MAX_SPAN

EXIT_WAIT = 1.0  # seconds a finished thread may take to leave the kernel (normally µs)
MIN_SPAN = 4 * GIB  # guest address space; KVM slots cover only what the guest maps in it

_ahead: VirtualMachine | None = None  # made before this process's run was known


def make_ahead(memory: int) -> None:
    """Make the VM of a run of `memory` bytes before the run is known (a `karn daemon`'s
    spare, karn/cli/daemon.py): the run takes it if its span is the same."""
    global _ahead
    _ahead = VirtualMachine(layout_for(address_space_span(memory)))


def address_space_span(memory: int) -> int:
    span = max(MIN_SPAN, 4 * memory)
    return min(MAX_SPAN, (span + GIB - 1) // GIB * GIB)


def discard_ahead() -> None:
    global _ahead
    if _ahead is not None:
        _ahead.close()
        _ahead = None


class PendingVm:
    """A VM for a guest of `memory` bytes, being made; result() waits for it. `also`:
    more of the run's set-up for the same thread, after the VM (the sandbox's)."""

    def __init__(self, memory: int, also: Callable[[], None] | None = None) -> None:
        global _ahead
        self._span = address_space_span(memory)
        self._also = also
        self._vm, _ahead = _ahead, None
        if self._vm is not None and self._vm.layout.span != self._span:
            self._vm.close()  # made ahead for another size
            self._vm = None
        self._error: BaseException | None = None
        self._taken = False
        self._thread: threading.Thread | None = None
        if self._vm is None or also is not None:
            self._thread = threading.Thread(target=self._make, name="karn-vm-setup",
                                            daemon=True)
            self._thread.start()

    def _make(self) -> None:
        try:
            if self._vm is None:
                self._vm = VirtualMachine(layout_for(self._span))
        except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
            self._error = err
            return
        if self._also is not None:
            self._also()

    def _join(self) -> None:
        """Wait for the thread to end, in the kernel too: the sandbox signals every task
        it finds in /proc/self/task and waits for each to confine itself, which a thread
        still in its exit could not do (the run would fail to confine)."""
        if self._thread is None:
            return  # the VM was made ahead, and there is nothing more to make
        self._thread.join()
        task = f"/proc/self/task/{self._thread.native_id}"
        deadline = time.monotonic() + EXIT_WAIT
        while os.path.exists(task) and time.monotonic() < deadline:
            time.sleep(0.0001)

    def result(self) -> VirtualMachine:
        """The VM, once made; what making it raised (a PlatformError), raised here."""
        self._join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        assert self._vm is not None
        self._taken = True
        return self._vm

    def discard(self) -> None:
        """A build that failed: the VM, if made and never handed out, is closed."""
        self._join()
        if self._vm is not None and not self._taken:
            self._vm.close()
