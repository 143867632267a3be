"""Mapping the vDSO and its time page into a new program, as Linux does at execve:
[vvar] (one page) immediately below [vdso], between the mmap area and the stack, at a
randomised page (aslr.py). The image's code reaches the time page RIP-relative, so the
two must stay adjacent; both are read-only (+exec for the code) and, like Linux's, not
counted against the memory limit. AT_SYSINFO_EHDR (stack.py) points at [vdso].
"""

from __future__ import annotations

from collections.abc import Callable

from karn.hints import Any, Protocol
from karn.kernel.guestmem import GuestMemory
from karn.kernel.limits import STACK_SIZE
from karn.kernel.mm import PROT_EXEC, PROT_READ, AddressSpace, page_up
from karn.loader.aslr import STACK_RANGE, Placement
from karn.platform import vdso

VVAR_NAME, VDSO_NAME = "[vvar]", "[vdso]"


class TimeSource(Protocol):
    """What keeps the time page (platform/timepage.py)."""

    def attach(self, page: memoryview, mapped: Callable[[], bool]) -> None: ...

    def resync(self) -> bool:
        """Keep the page's clocks on the host's (called about once a second); whether
        the page was rewritten."""
        ...

    def forked(self, machine: Any) -> None:
        """In a forked monitor: sample the TSC through the child's own machine."""
        ...


def map_vdso(mem: GuestMemory, mm: AddressSpace, placement: Placement,
             clock: TimeSource) -> int:
    """Map [vvar] and [vdso], hand the time page to `clock`; returns the vDSO's address."""
    image = vdso.image()
    size = page_up(len(image))
    # The stack never reaches below this (aslr.py), and the mmap area starts lower still.
    top = mm.region.user_end - STACK_RANGE - STACK_SIZE - placement.vdso_offset
    base = top - size
    vvar = base - vdso.VVAR_SIZE
    mm.map(vvar, vdso.VVAR_SIZE, PROT_READ, VVAR_NAME, charged=False)
    mm.map(base, size, PROT_READ | PROT_EXEC, VDSO_NAME, charged=False)
    mem.write(base, image)

    def mapped() -> bool:
        """Whether the guest still has the time page where it was put (it may unmap or
        replace it; then the monitor must not write there any more)."""
        vma = mm.find_vma(vvar)
        return vma is not None and vma.start == vvar and vma.name == VVAR_NAME

    clock.attach(mem.view(vvar, vdso.VVAR_SIZE), mapped)
    return base
