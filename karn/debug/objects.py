"""Which ELF objects are mapped in the guest, and where: from the address space's VMAs.

karn's loader maps the program and its interpreter; the interpreter maps the libraries
with mmap. Every file mapping is a VMA named by its guest path, and an object's mapping
at file offset 0 sits at its load bias plus its lowest PT_LOAD address.
"""

from __future__ import annotations

from collections.abc import Callable

from karn.errors import ImageError
from karn.hints import TYPE_CHECKING, NamedTuple
from karn.image.elfinfo import inspect_elf

if TYPE_CHECKING:
    from karn.kernel.mm import AddressSpace

PAGE = 0x1000


class MappedObject(NamedTuple):
    guest_path: str
    host_path: str
    base: int  # guest address of the mapping at file offset 0
    bias: int  # run-time minus link-time address


def mapped_objects(mm: AddressSpace, host_path: Callable[[str], str | None]) -> list[MappedObject]:
    seen: set[str] = set()
    out: list[MappedObject] = []
    for vma in sorted(mm.vmas(), key=lambda v: v.start):
        name = vma.name
        if not name.startswith("/") or vma.offset != 0 or name in seen:
            continue
        seen.add(name)
        host = host_path(name)
        if host is None:
            continue
        try:
            info = inspect_elf(host)
        except (ImageError, OSError):
            continue
        low = min((s.vaddr for s in info.segments), default=0) & ~(PAGE - 1)
        bias = vma.start - low
        out.append(MappedObject(name, host, vma.start, bias))
    return out


def read_auxv(mem, rsp: int) -> bytes:
    """The auxiliary vector from the initial stack: argc, argv, NULL, envp, NULL, auxv."""
    from karn.abi.errno import SyscallError

    try:
        argc = mem.read_u64(rsp)
        p = rsp + 8 * (argc + 2)
        while mem.read_u64(p):
            p += 8
        start = p = p + 8
        while mem.read_u64(p) != 0:
            p += 16
        return mem.read(start, p + 16 - start)
    except SyscallError:
        return b""
