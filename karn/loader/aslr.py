"""Address-space layout randomisation: where the PIE program, the mmap area (and with it
the interpreter and libraries), the stack and the vDSO go. `--no-aslr` gives the fixed
layout.

The guest address space is small (4 GiB unless --memory is large, platform/layout.py),
so the ranges are smaller than Linux's: 16 bits of page offset for the program and the
mmap area, 11 bits for the stack, 10 for the vDSO (Linux x86-64: 28, 28, 22 and 18).
"""

from __future__ import annotations

import os

from karn.kernel.limits import STACK_SIZE

PAGE = 4096
PIE_RANGE = 256 << 20
MMAP_RANGE = 256 << 20
STACK_RANGE = 8 << 20  # inside the gap kept between the stack and the mmap area
VDSO_RANGE = 4 << 20  # below the lowest the stack may reach, in the same gap
MMAP_GAP = 16 << 20  # between the stack and the top-down mmap area


class Placement:
    """(A plain class: a NamedTuple costs ~0.1 ms of every start-up to create.)"""

    __slots__ = ("pie_offset", "mmap_offset", "stack_offset", "vdso_offset")

    def __init__(self, pie_offset: int, mmap_offset: int, stack_offset: int,
                 vdso_offset: int) -> None:
        self.pie_offset = pie_offset  # added to the fixed PIE base
        self.mmap_offset = mmap_offset  # taken off the top of the mmap area
        self.stack_offset = stack_offset  # taken off the top of the stack
        self.vdso_offset = vdso_offset  # taken off the top of the vDSO's range (loader/vdso.py)


FIXED = Placement(0, 0, 0, 0)


def _random_pages(span: int) -> int:
    return int.from_bytes(os.urandom(4), "little") % (span // PAGE) * PAGE


def choose_placement(randomize: bool) -> Placement:
    if not randomize:
        return FIXED
    return Placement(_random_pages(PIE_RANGE), _random_pages(MMAP_RANGE),
                     _random_pages(STACK_RANGE), _random_pages(VDSO_RANGE))


def mmap_top(user_end: int, placement: Placement) -> int:
    """Where the top-down mmap area starts: below the stack, the gap and the offset."""
    return user_end - STACK_SIZE - MMAP_GAP - placement.mmap_offset
