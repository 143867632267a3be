"""Placing an ELF object's PT_LOAD segments in guest memory.

(No `from __future__ import annotations`: LoadedObject's field types are then types, not
strings that typing.NamedTuple would compile one by one, ~10 µs each, at every start-up.)
"""

from typing import NamedTuple

from karn.abi.errno import SyscallError
from karn.errors import ImageError
from karn.image.elfinfo import ET_DYN, ElfInfo
from karn.kernel.guestmem import GuestMemory
from karn.kernel.mm import PROT_EXEC, PROT_READ, PROT_WRITE, AddressSpace, page_down, page_up

PF_X, PF_W, PF_R = 1, 2, 4


class LoadedObject(NamedTuple):
    """Where an ELF object landed: what auxv, /proc/self/maps and crash reports need."""

    guest_path: str
    bias: int  # added to every p_vaddr (0 for ET_EXEC)
    entry: int
    phdr: int
    phnum: int
    phentsize: int
    end: int  # first byte after the highest segment


def _prot(flags: int) -> int:
    return (
        (PROT_READ if flags & PF_R else 0)
        | (PROT_WRITE if flags & PF_W else 0)
        | (PROT_EXEC if flags & PF_X else 0)
    )


def extent(info: ElfInfo) -> tuple[int, int]:
    """Page-aligned [low, high) of the object's segments at bias 0."""
    if not info.segments:
        raise ImageError(f"{info.path}: no loadable segments")
    low = page_down(min(s.vaddr for s in info.segments))
    high = page_up(max(s.vaddr + s.memsz for s in info.segments))
    return low, high


def load_object(
    mem: GuestMemory,
    mm: AddressSpace,
    info: ElfInfo,
    data: bytearray,
    guest_path: str,
    bias: int,
) -> LoadedObject:
    """Map every segment first, then copy: segments may share a page."""
    try:
        for seg in info.segments:
            start = page_down(bias + seg.vaddr)
            end = page_up(bias + seg.vaddr + seg.memsz)
            mm.map(start, end - start, _prot(seg.flags), guest_path, page_down(seg.offset))
        view = memoryview(data)  # segments are written from the file's bytes, not copies
        for seg in info.segments:
            if seg.filesz:
                mem.write(bias + seg.vaddr, view[seg.offset : seg.offset + seg.filesz])
    except SyscallError as err:
        raise ImageError(
            f"{guest_path}: does not fit in the guest address space ({err}); try a larger --memory"
        ) from None
    low, high = extent(info)
    return LoadedObject(
        guest_path=guest_path,
        bias=bias,
        entry=bias + info.entry,
        phdr=bias + _phdr_vaddr(info),
        phnum=info.phnum,
        phentsize=info.phentsize,
        end=bias + high,
    )


def _phdr_vaddr(info: ElfInfo) -> int:
    for seg in info.segments:
        if seg.offset <= info.phoff < seg.offset + seg.filesz:
            return seg.vaddr + (info.phoff - seg.offset)
    raise ImageError(f"{info.path}: program headers are not in a loadable segment")


def is_position_independent(info: ElfInfo) -> bool:
    return info.e_type == ET_DYN
