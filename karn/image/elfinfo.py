"""Validate an ELF file for running under karn and read what the loader needs.

A small struct-based parser: it reads the ELF header, the program headers and the
dynamic section, nothing else. It is on the start-up path of every `karn run`, and
importing pyelftools alone costs tens of milliseconds, so pyelftools is kept for the
debug paths (symbols, DWARF) only.

Every malformed input becomes one ImageError line; no struct.error or IndexError escapes.
"""

from __future__ import annotations

import os
import stat
import struct

from karn.errors import ImageError

# e_ident / e_type / e_machine values (elf.h names).
ELFMAG = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_REL, ET_EXEC, ET_DYN, ET_CORE = 1, 2, 3, 4
EM_X86_64 = 62

PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_PHDR, PT_TLS = 1, 2, 3, 6, 7
PT_GNU_STACK = 0x6474E551
PF_X, PF_W, PF_R = 1, 2, 4

DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 14, 15, 29

_MACHINES = {
    2: "sparc",
    3: "i386",
    8: "mips",
    20: "ppc",
    21: "ppc64",
    22: "s390x",
    40: "arm",
    43: "sparc64",
    50: "ia64",
    62: "x86-64",
    183: "aarch64",
    243: "riscv",
    258: "loongarch",
}
_TYPES = {ET_REL: "a relocatable object (ET_REL)", ET_CORE: "a core dump (ET_CORE)"}

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr, 64 bytes
_PHDR = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr, 56 bytes
_DYN = struct.Struct("<qQ")  # Elf64_Dyn
_MAX_PHNUM = 4096  # far above anything real; bounds the work a hostile header can cause


class LoadSegment:
    """One PT_LOAD program header. (A plain class: a NamedTuple costs ~0.1 ms of every
    start-up to create.)"""

    __slots__ = ("vaddr", "memsz", "filesz", "offset", "flags", "align")

    def __init__(self, vaddr: int, memsz: int, filesz: int, offset: int, flags: int,
                 align: int) -> None:
        self.vaddr, self.memsz, self.filesz, self.offset = vaddr, memsz, filesz, offset
        self.flags = flags  # PF_R | PF_W | PF_X
        self.align = align


class ElfInfo:
    """What karn needs to know about an x86-64 ELF executable or shared object."""

    __slots__ = (
        "path", "e_type", "entry", "phoff", "phnum", "phentsize", "segments", "interpreter",
        "needed", "soname", "rpath", "runpath", "has_tls", "exec_stack", "is_dynamic",
    )  # fmt: skip

    def __init__(
        self,
        path: str,
        e_type: int,
        entry: int,
        phoff: int,
        phnum: int,
        phentsize: int,
        segments: list[LoadSegment] | None = None,
        interpreter: str | None = None,
        needed: list[str] | None = None,
        soname: str | None = None,
        rpath: list[str] | None = None,
        runpath: list[str] | None = None,
        has_tls: bool = False,
        exec_stack: bool = False,
        is_dynamic: bool = False,
    ) -> None:
        self.path = path
        self.e_type = e_type
        self.entry = entry
        self.phoff = phoff
        self.phnum = phnum
        self.phentsize = phentsize
        self.segments = [] if segments is None else segments
        self.interpreter = interpreter
        self.needed = [] if needed is None else needed
        self.soname = soname
        self.rpath = [] if rpath is None else rpath
        self.runpath = [] if runpath is None else runpath
        self.has_tls = has_tls
        self.exec_stack = exec_stack  # PT_GNU_STACK with PF_X (or no PT_GNU_STACK at all)
        self.is_dynamic = is_dynamic  # has PT_DYNAMIC

    @property
    def vaddr_range(self) -> tuple[int, int]:
        """[lowest, highest) link-time address covered by PT_LOAD segments."""
        if not self.segments:
            return (0, 0)
        lo = min(s.vaddr for s in self.segments)
        hi = max(s.vaddr + s.memsz for s in self.segments)
        return (lo, hi)


class _Source:
    """Bounded reads from either a byte string or an open file."""

    def __init__(self, data: bytes | bytearray | None, fd: int | None, size: int) -> None:
        self._data = data
        self._fd = fd
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise _Malformed(f"data at offset {offset:#x}+{length:#x} is past the end of file")
        if self._data is not None:
            return bytes(self._data[offset : offset + length])
        assert self._fd is not None
        out = os.pread(self._fd, length, offset)
        if len(out) != length:
            raise _Malformed("file is truncated")
        return out


class _Malformed(Exception):
    """Internal: turned into ImageError with the file name by inspect_elf."""


def inspect_elf(data_or_path: bytes | bytearray | str | os.PathLike[str],
                name: str | None = None) -> ElfInfo:
    """Parse and validate an x86-64 ELF executable/shared object; ImageError if unusable.

    `name` is the path used in messages (defaults to the path, or "<memory>" for bytes).
    """
    if isinstance(data_or_path, bytes | bytearray):  # read as is: a program is not copied
        label = name or "<memory>"
        return _parse_checked(_Source(data_or_path, None, len(data_or_path)), label)
    path = os.fspath(data_or_path)
    label = name or path
    fd = _open(path, label)
    try:
        return _parse_checked(_Source(None, fd, os.fstat(fd).st_size), label)
    finally:
        os.close(fd)


def inspect_open_elf(fd: int, name: str) -> ElfInfo:
    """inspect_elf of an open host file, read where it looks (the loader maps the rest)."""
    return _parse_checked(_Source(None, fd, os.fstat(fd).st_size), name)


def is_compatible_elf(path: str) -> bool:
    """True if `path` is a readable 64-bit little-endian x86-64 ELF (the ld.so check)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        head = os.pread(fd, 20, 0)
    except OSError:  # e.g. a directory
        return False
    finally:
        os.close(fd)
    return (
        len(head) == 20
        and head[:4] == ELFMAG
        and head[4] == ELFCLASS64
        and head[5] == ELFDATA2LSB
        and struct.unpack_from("<H", head, 18)[0] == EM_X86_64
    )


def _open(path: str, label: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file or directory") from None
    except PermissionError:
        raise ImageError(f"{label}: permission denied") from None
    except OSError as e:
        raise ImageError(f"{label}: cannot open: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageError(f"{label}: not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _parse_checked(src: _Source, label: str) -> ElfInfo:
    try:
        return _parse(src, label)
    except _Malformed as e:
        raise ImageError(f"{label}: malformed ELF file: {e}") from None
    except (struct.error, UnicodeDecodeError, ValueError) as e:
        raise ImageError(f"{label}: malformed ELF file: {e}") from None
    except OSError as e:
        raise ImageError(f"{label}: cannot read: {e.strerror}") from None


def _check_ident(src: _Source, label: str) -> None:
    ident = src.read(0, min(src.size, 20))
    if len(ident) < 20 or ident[:4] != ELFMAG:
        raise ImageError(f"{label}: not an ELF executable")
    klass, data = ident[4], ident[5]
    if klass == ELFCLASS32:
        raise ImageError(f"{label}: 32-bit ELF is not supported; karn runs x86-64 programs")
    if klass != ELFCLASS64 or data not in (ELFDATA2LSB, ELFDATA2MSB):
        raise ImageError(f"{label}: malformed ELF file: bad class/data bytes")
    machine = struct.unpack_from("<H" if data == ELFDATA2LSB else ">H", ident, 18)[0]
    if machine != EM_X86_64 or data != ELFDATA2LSB:
        arch = _MACHINES.get(machine, f"machine {machine}")
        raise ImageError(f"{label}: ELF for {arch}, karn runs x86-64 programs")


def _parse(src: _Source, label: str) -> ElfInfo:
    _check_ident(src, label)
    if src.size < _EHDR.size:
        raise _Malformed("ELF header is truncated")
    (_, e_type, _, _, entry, phoff, _, _, _, phentsize, phnum, _, _, _) = _EHDR.unpack(
        src.read(0, _EHDR.size)
    )
    if e_type not in (ET_EXEC, ET_DYN):
        what = _TYPES.get(e_type, f"ELF type {e_type}")
        raise ImageError(f"{label}: {what}, not an executable")
    if phnum == 0 or phnum > _MAX_PHNUM:
        raise _Malformed(f"bad program header count {phnum}")
    if phentsize != _PHDR.size:
        raise _Malformed(f"bad program header size {phentsize}")
    info = ElfInfo(label, e_type, entry, phoff, phnum, phentsize)
    table = src.read(phoff, phnum * phentsize)
    dynamic: tuple[int, int] | None = None
    has_gnu_stack = False
    for p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz, p_align in _PHDR.iter_unpack(
        table
    ):
        if p_type == PT_LOAD:
            if p_filesz > p_memsz:
                raise _Malformed("PT_LOAD with p_filesz > p_memsz")
            if p_offset + p_filesz > src.size:
                raise _Malformed("PT_LOAD extends past the end of file")
            seg = LoadSegment(p_vaddr, p_memsz, p_filesz, p_offset, p_flags, p_align)
            info.segments.append(seg)
        elif p_type == PT_INTERP:
            raw = src.read(p_offset, p_filesz)
            info.interpreter = raw.split(b"\0", 1)[0].decode()
            if not info.interpreter.startswith("/"):
                raise _Malformed(f"PT_INTERP {info.interpreter!r} is not an absolute path")
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
        elif p_type == PT_TLS:
            info.has_tls = True
        elif p_type == PT_GNU_STACK:
            has_gnu_stack = True
            info.exec_stack = bool(p_flags & PF_X)
    if not info.segments:
        raise _Malformed("no PT_LOAD segments")
    info.exec_stack = info.exec_stack or not has_gnu_stack
    if dynamic is not None:
        info.is_dynamic = True
        _read_dynamic(src, info, *dynamic)
    return info


def _read_dynamic(src: _Source, info: ElfInfo, offset: int, size: int) -> None:
    tags: list[tuple[int, int]] = []
    for tag, val in _DYN.iter_unpack(src.read(offset, size - size % _DYN.size)):
        if tag == DT_NULL:
            break
        tags.append((tag, val))
    strtab = next((v for t, v in tags if t == DT_STRTAB), None)
    strsz = next((v for t, v in tags if t == DT_STRSZ), 0)
    if strtab is None:
        if any(t in (DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH) for t, _ in tags):
            raise _Malformed("dynamic section names strings but has no DT_STRTAB")
        return
    # DT_STRTAB is a link-time address: find the file offset through PT_LOAD.
    str_off = _vaddr_to_offset(info.segments, strtab, strsz)
    strings = src.read(str_off, strsz)

    def string(index: int) -> str:
        if index >= len(strings):
            raise _Malformed("dynamic string index out of range")
        return strings[index : strings.index(b"\0", index)].decode()

    for tag, val in tags:
        if tag == DT_NEEDED:
            info.needed.append(string(val))
        elif tag == DT_SONAME:
            info.soname = string(val)
        elif tag == DT_RPATH:
            info.rpath.extend(p for p in string(val).split(":") if p)
        elif tag == DT_RUNPATH:
            info.runpath.extend(p for p in string(val).split(":") if p)


def _vaddr_to_offset(segments: list[LoadSegment], vaddr: int, size: int) -> int:
    for s in segments:
        if s.vaddr <= vaddr and vaddr + size <= s.vaddr + s.filesz:
            return s.offset + (vaddr - s.vaddr)
    raise _Malformed(f"address {vaddr:#x} is not in any PT_LOAD segment")
