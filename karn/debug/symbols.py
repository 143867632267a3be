"""Turn guest addresses into "function+0xoff (object)" and source lines for crash reports.

Lazy on purpose: building a Symbolizer costs nothing; an object's symbol table is read
the first time an address falls inside it, and pyelftools is imported only then (it costs
tens of milliseconds to import, which karn does not pay unless a report is being made).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable

from karn.errors import ImageError
from karn.hints import TYPE_CHECKING, Any
from karn.image.elfinfo import inspect_elf

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile

_FUNC_TYPES = ("STT_FUNC", "STT_GNU_IFUNC")


class LoadedObject:
    """One ELF mapped in the guest: host file, load bias, and the name shown in reports.

    The load bias is run-time address minus link-time address (0 for ET_EXEC).
    """

    __slots__ = ("host_path", "bias", "name", "_range", "_syms", "_lines")

    def __init__(self, host_path: str, bias: int, name: str | None = None) -> None:
        self.host_path = host_path
        self.bias = bias
        self.name = name or host_path
        self._range: tuple[int, int] | None = None
        self._syms: _SymbolTable | None = None
        self._lines: _LineTable | None = None

    def contains(self, addr: int) -> bool:
        if self._range is None:
            try:
                lo, hi = inspect_elf(self.host_path).vaddr_range
            except ImageError:
                lo = hi = 0
            self._range = (lo + self.bias, hi + self.bias)
        return self._range[0] <= addr < self._range[1]

    def symbols(self) -> _SymbolTable:
        if self._syms is None:
            self._syms = _with_elf(self.host_path, _SymbolTable.from_elf, _SymbolTable([]))
        return self._syms

    def lines(self) -> _LineTable:
        if self._lines is None:
            self._lines = _with_elf(self.host_path, _LineTable.from_elf, _LineTable([]))
        return self._lines


class Symbolizer:
    """Symbolize guest addresses against a set of loaded objects."""

    def __init__(self, objects: Iterable[LoadedObject | tuple[str, int]]) -> None:
        self.objects = [o if isinstance(o, LoadedObject) else LoadedObject(*o) for o in objects]

    def find_object(self, addr: int) -> LoadedObject | None:
        return next((o for o in self.objects if o.contains(addr)), None)

    def symbolize(self, addr: int) -> str | None:
        """ "name+0xoff (object)", or "object+0xoff" with no covering symbol; None if unmapped."""
        obj = self.find_object(addr)
        if obj is None:
            return None
        link_addr = addr - obj.bias
        hit = obj.symbols().lookup(link_addr)
        if hit is None:
            return f"{obj.name}+{link_addr:#x}"
        name, start = hit
        return f"{name}+{link_addr - start:#x} ({obj.name})"

    def addr2line(self, addr: int) -> tuple[str, int] | None:
        """(source file, line) from DWARF .debug_line, or None without line info."""
        obj = self.find_object(addr)
        if obj is None:
            return None
        return obj.lines().lookup(addr - obj.bias)


class _SymbolTable:
    """Function symbols sorted by address; .symtab preferred over .dynsym at one address."""

    def __init__(self, syms: list[tuple[int, int, str]]) -> None:
        syms.sort(key=lambda s: s[0])
        self._starts = [s[0] for s in syms]
        self._syms = syms

    @classmethod
    def from_elf(cls, elf: ELFFile) -> _SymbolTable:
        best: dict[int, tuple[tuple[bool, bool, bool], int, str]] = {}
        for section_name in (".symtab", ".dynsym"):
            section = elf.get_section_by_name(section_name)
            if section is None or not hasattr(section, "iter_symbols"):
                continue
            for sym in section.iter_symbols():
                entry = sym.entry
                if entry.st_info.type not in _FUNC_TYPES or entry.st_shndx == "SHN_UNDEF":
                    continue
                if not sym.name or not entry.st_value:
                    continue
                # Among aliases at one address prefer: sized, from .symtab, global.
                rank = (
                    entry.st_size > 0,
                    section_name == ".symtab",
                    entry.st_info.bind == "STB_GLOBAL",
                )
                prev = best.get(entry.st_value)
                if prev is None or rank > prev[0]:
                    best[entry.st_value] = (rank, entry.st_size, sym.name)
        return cls([(addr, size, name) for addr, (_, size, name) in best.items()])

    def lookup(self, addr: int) -> tuple[str, int] | None:
        i = bisect.bisect_right(self._starts, addr) - 1
        # Walk back over a few symbols: a sized one may enclose a smaller one after it.
        for start, size, name in reversed(self._syms[max(0, i - 8) : i + 1]):
            if size == 0 or addr < start + size:
                return (name, start)
        return None


class _LineTable:
    """DWARF line rows as (address, file, line, end_of_sequence), sorted by address."""

    def __init__(self, rows: list[tuple[int, str, int, bool]]) -> None:
        rows.sort(key=lambda r: (r[0], not r[3]))
        self._addrs = [r[0] for r in rows]
        self._rows = rows

    @classmethod
    def from_elf(cls, elf: ELFFile) -> _LineTable:
        if elf.get_section_by_name(".debug_line") is None:
            return cls([])
        dwarf = elf.get_dwarf_info()
        rows: list[tuple[int, str, int, bool]] = []
        for cu in dwarf.iter_CUs():
            program = dwarf.line_program_for_CU(cu)
            if program is None:
                continue
            files = _file_names(program, cu)
            for entry in program.get_entries():
                state = entry.state
                if state is not None:
                    path = files.get(state.file, "??")
                    rows.append((state.address, path, state.line, state.end_sequence))
        return cls(rows)

    def lookup(self, addr: int) -> tuple[str, int] | None:
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return None
        _, path, line, end = self._rows[i]
        return None if end else (path, line)


def _file_names(program: Any, cu: Any) -> dict[int, str]:
    """File index -> path for a line program (DWARF 5 counts from 0, earlier from 1)."""
    header = program.header
    version = header["version"]
    top = cu.get_top_DIE()
    comp_dir = _attr_str(top, "DW_AT_comp_dir") or ""
    dirs = [_decode(d) for d in header["include_directory"]]
    if version < 5:
        dirs.insert(0, comp_dir)
    base = 0 if version >= 5 else 1
    out: dict[int, str] = {}
    for i, fe in enumerate(header["file_entry"]):
        name = _decode(fe.name)
        d = dirs[fe.dir_index] if fe.dir_index < len(dirs) else ""
        if d and not os.path.isabs(d) and comp_dir:
            d = os.path.join(comp_dir, d)
        out[i + base] = os.path.join(d, name) if d else name
    return out


def _attr_str(die: Any, name: str) -> str | None:
    attr = die.attributes.get(name)
    return _decode(attr.value) if attr is not None else None


def _decode(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _with_elf(path: str, build: Any, default: Any) -> Any:
    """Run `build(ELFFile)` on `path`; a crash report must not fail on a bad object."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as f:
            return build(ELFFile(f))
    except (OSError, ELFError, ValueError, KeyError, IndexError):
        return default
