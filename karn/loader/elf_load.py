"""Placing an ELF object's PT_LOAD segments in guest memory.

(No `from __future__ import annotations`: LoadedObject's field types are then types, not
strings that typing.NamedTuple would compile one by one, ~10 µs each, at every start-up.)
"""

import os

from karn.abi.errno import SyscallError
from karn.errors import ImageError
from karn.hints import TYPE_CHECKING, NamedTuple
from karn.image.elfinfo import ET_DYN, ElfInfo, LoadSegment
from karn.kernel.guestmem import GuestMemory
from karn.kernel.mm import (
    PAGE,
    PROT_EXEC,
    PROT_READ,
    PROT_WRITE,
    AddressSpace,
    page_down,
    page_up,
)

if TYPE_CHECKING:
    from karn.loader.program import ElfFile

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


def load_object(mem: GuestMemory, mm: AddressSpace, elf: "ElfFile", bias: int) -> LoadedObject:
    """Map every segment first, then fill them: segments may share a page. A host file's
    segments are its own pages mapped in place (copy on write, read when touched), as
    Linux maps them, where the file's layout allows; others are copied in."""
    info, guest_path = elf.info, elf.path
    try:
        for seg in info.segments:
            start = page_down(bias + seg.vaddr)
            end = page_up(bias + seg.vaddr + seg.memsz)
            mm.map(start, end - start, _prot(seg.flags), guest_path, page_down(seg.offset))
        for seg in info.segments:
            if seg.filesz:
                _fill(mem, mm, elf, seg, bias)
            if seg.flags & PF_W:  # data and bss: written from the program's first steps
                mm.prefault(page_down(bias + seg.vaddr), page_up(bias + seg.vaddr + seg.memsz),
                            used=True)
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


def _fill(mem: GuestMemory, mm: AddressSpace, elf: "ElfFile", seg: LoadSegment,
          bias: int) -> None:
    """A segment's file bytes at its address: mapped from the host file where its pages
    are its own (no other segment in them, file offset and address alike within a page),
    else written; where bss follows, the rest of its last file page zeroed, as Linux's
    padzero (ld.so's own first allocations take that room as zeroed memory)."""
    vaddr = bias + seg.vaddr
    start, file_end = page_down(vaddr), page_up(vaddr + seg.filesz)
    if elf.fd is not None and (vaddr - seg.offset) % PAGE == 0 and not any(
            other is not seg and page_down(bias + other.vaddr) < file_end
            and start < page_up(bias + other.vaddr + other.memsz)
            for other in elf.info.segments):
        try:
            mm.memory.map_file_private(start, file_end - start, elf.fd, page_down(seg.offset))
        except SyscallError:
            pass  # the host will not map it (its map count, the file system): copied below
        else:
            if seg.memsz > seg.filesz:  # to the page's end: ld.so's first heap is there
                mem.zero(vaddr + seg.filesz, file_end - (vaddr + seg.filesz))
            return
    view = mem.view(vaddr, seg.filesz)
    if elf.data is not None:  # written from the file's bytes, not copies
        view[:] = memoryview(elf.data)[seg.offset : seg.offset + seg.filesz]
        return
    assert elf.fd is not None
    done = 0
    while done < seg.filesz:
        n = os.preadv(elf.fd, [view[done:]], seg.offset + done)
        if n <= 0:
            raise ImageError(f"{elf.path}: the file was cut short while loading")
        done += n


def _phdr_vaddr(info: ElfInfo) -> int:
    for seg in info.segments:
        if seg.offset <= info.phoff < seg.offset + seg.filesz:
            return seg.vaddr + (info.phoff - seg.offset)
    raise ImageError(f"{info.path}: program headers are not in a loadable segment")


def is_position_independent(info: ElfInfo) -> bool:
    return info.e_type == ET_DYN
