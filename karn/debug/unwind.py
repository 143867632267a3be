"""Backtraces of a stopped guest thread: DWARF call-frame information (.eh_frame, found
through .eh_frame_hdr's binary-search table) where an object has it, frame pointers
where it does not.

CFI comes first because optimised code (glibc, -O1 and up) does not keep frame pointers:
walking rbp there yields garbage, while .eh_frame is in every x86-64 object (the ABI
requires it for exceptions). The frame-pointer walk serves code without CFI (hand-written
assembly, some JIT or stripped objects).
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from karn.debug.symbols import LoadedObject, Symbolizer, _with_elf

if TYPE_CHECKING:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

MAX_FRAMES = 64
# DWARF register numbers for x86-64 -> names (System V psABI, figure 3.36)
DWARF_REGS = ("rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip")
RA = 16

ReadU64 = Callable[[int], int | None]


class Frame(NamedTuple):
    pc: int
    sp: int
    how: str  # "fault" (frame 0), "cfi" or "fp": how this frame's caller was found


class _Cfi:
    """The FDE lookup for one object: .eh_frame_hdr table, then lazy FDE parsing."""

    def __init__(self, elf: ELFFile) -> None:
        from elftools.dwarf.callframe import CallFrameInfo

        self._starts: list[int] = []
        self._fde_offsets: list[int] = []
        self._cfi: Any = None
        self._decoded: dict[int, Any] = {}
        self._fdes: dict[int, Any] = {}
        if not elf.has_dwarf_info():
            return
        dwarf = elf.get_dwarf_info(relocate_dwarf_sections=False)
        eh = dwarf.eh_frame_sec
        if eh is None:
            return
        self._cfi = CallFrameInfo(stream=eh.stream, size=eh.size, address=eh.address,
                                  base_structs=dwarf.structs, for_eh_frame=True)
        hdr = elf.get_section_by_name(".eh_frame_hdr")
        data = hdr.data() if hdr is not None else b"\0\0\0\0"
        version, _ptr_enc, count_enc, table_enc = data[:4]
        if version != 1 or count_enc != 0x03 or table_enc != 0x3B:  # udata4, datarel|sdata4
            self._parse_all()  # no search table (static binaries): read every FDE
            return
        count = struct.unpack_from("<I", data, 8)[0]
        assert hdr is not None  # the version check above failed without one
        base = hdr["sh_addr"]
        table = struct.unpack_from(f"<{2 * count}i", data, 12)
        self._starts = [base + table[2 * i] for i in range(count)]
        self._fde_offsets = [base + table[2 * i + 1] - eh.address for i in range(count)]

    def _parse_all(self) -> None:
        from elftools.dwarf.callframe import FDE

        fdes = sorted((e.header["initial_location"], e.offset, e)
                      for e in self._cfi.get_entries() if isinstance(e, FDE))
        self._starts = [f[0] for f in fdes]
        self._fde_offsets = [f[1] for f in fdes]
        self._fdes = {f[1]: f[2] for f in fdes}

    def row(self, pc: int) -> dict[Any, Any] | None:
        """The CFA and register rules in force at link-time address pc."""
        i = bisect.bisect_right(self._starts, pc) - 1
        if i < 0 or self._cfi is None:
            return None
        table = self._decoded.get(i)
        if table is None:
            try:
                offset = self._fde_offsets[i]
                fde = self._fdes.get(offset) or self._cfi._parse_entry_at(offset)
                start = fde.header["initial_location"]
                if not start <= pc < start + fde.header["address_range"]:
                    return None
                table = fde.get_decoded().table
            except Exception:  # a malformed FDE: no CFI here
                return None
            self._decoded[i] = table
        best = None
        for row in table:
            if row["pc"] <= pc:
                best = row
            else:
                break
        return best


class Unwinder:
    def __init__(self, symbolizer: Symbolizer, read_u64: ReadU64) -> None:
        self.symbolizer = symbolizer
        self.read_u64 = read_u64
        self._cfi: dict[str, _Cfi] = {}

    def _cfi_for(self, obj: LoadedObject) -> _Cfi:
        cfi = self._cfi.get(obj.host_path)
        if cfi is None:
            cfi = _with_elf(obj.host_path, _Cfi, None)
            if cfi is None:
                cfi = _Cfi.__new__(_Cfi)
                cfi._starts, cfi._fde_offsets, cfi._cfi, cfi._decoded = [], [], None, {}
                cfi._fdes = {}
            self._cfi[obj.host_path] = cfi
        return cfi

    def backtrace(self, regs: dict[str, int], limit: int = MAX_FRAMES) -> list[Frame]:
        regs = dict(regs)
        frames = [Frame(regs["rip"], regs["rsp"], "fault")]
        for depth in range(limit - 1):
            caller = self._step(regs, depth > 0)
            if caller is None:
                break
            regs, how = caller
            pc = regs["rip"]
            if pc == 0 or self.symbolizer.find_object(pc) is None:
                break
            frames.append(Frame(pc, regs["rsp"], how))
        return frames

    def _step(self, regs: dict[str, int], is_caller: bool) -> tuple[dict[str, int], str] | None:
        pc = regs["rip"]
        obj = self.symbolizer.find_object(pc)
        if obj is not None:
            # A return address may be just past the end of a noreturn call's function.
            row = self._cfi_for(obj).row(pc - obj.bias - (1 if is_caller else 0))
            if row is not None:
                return self._apply(regs, row)
        return self._frame_pointer(regs)

    def _apply(self, regs: dict[str, int], row: dict[Any, Any]
               ) -> tuple[dict[str, int], str] | None:
        cfa_rule = row["cfa"]
        if cfa_rule.expr is not None or cfa_rule.reg is None or cfa_rule.reg >= len(DWARF_REGS):
            return None
        cfa = (regs[DWARF_REGS[cfa_rule.reg]] + cfa_rule.offset) & ((1 << 64) - 1)
        new = dict(regs)
        for regno, rule in row.items():
            if not isinstance(regno, int) or regno >= len(DWARF_REGS):
                continue
            if rule.type == "OFFSET":
                value = self.read_u64(cfa + rule.arg)
                if value is None:
                    return None
                new[DWARF_REGS[regno]] = value
            elif rule.type == "VAL_OFFSET":
                new[DWARF_REGS[regno]] = cfa + rule.arg
            elif rule.type == "REGISTER" and rule.arg < len(DWARF_REGS):
                new[DWARF_REGS[regno]] = regs[DWARF_REGS[rule.arg]]
            elif rule.type == "UNDEFINED" and regno == RA:
                return None  # the outermost frame (_start marks its RA undefined)
        if RA not in row:
            return None
        new["rsp"] = cfa
        if new["rip"] == regs["rip"] and cfa <= regs["rsp"]:
            return None  # no progress
        return new, "cfi"

    def _frame_pointer(self, regs: dict[str, int]) -> tuple[dict[str, int], str] | None:
        rbp = regs["rbp"]
        if rbp & 7 or rbp < regs["rsp"] or rbp - regs["rsp"] > 1 << 24:
            return None
        saved = self.read_u64(rbp)
        ret = self.read_u64(rbp + 8)
        if saved is None or ret is None:
            return None
        new = dict(regs)
        new.update(rip=ret, rsp=rbp + 16, rbp=saved)
        return new, "fp"


def called_name(read: Callable[[int, int], bytes | None], symbolizer: Symbolizer,
                return_address: int) -> str | None:
    """The symbol a caller called, read from its call instruction and PLT/GOT relocation:
    names a function in a stripped library (glibc's memset variants have no .dynsym name)
    by the name the caller used."""
    before = read(return_address - 6, 6)
    if before is None:
        return None
    got = None
    if before[1] == 0xE8:  # call rel32 -> a PLT entry that jumps through the GOT
        target = (return_address + int.from_bytes(before[2:], "little", signed=True)) & (
            (1 << 64) - 1)
        got = _plt_got_slot(read, target)
    elif before[0:2] == b"\xff\x15":  # call [rip+disp32] (-fno-plt)
        got = return_address + int.from_bytes(before[2:], "little", signed=True)
    if got is None:
        return None
    obj = symbolizer.find_object(got)
    if obj is None:
        return None
    return _with_elf(obj.host_path, lambda elf: _got_symbols(elf).get(got - obj.bias), None)


def _plt_got_slot(read: Callable[[int, int], bytes | None], plt: int) -> int | None:
    code = read(plt, 16)
    if code is None:
        return None
    for i in range(0, 12):
        # jmp [rip+disp32] is ff 25 (bnd jmp: f2 ff 25); the slot is relative to its end
        if code[i:i + 2] == b"\xff\x25":
            return plt + i + 6 + int.from_bytes(code[i + 2:i + 6], "little", signed=True)
    return None


def _got_symbols(elf: ELFFile) -> dict[int, str]:
    """GOT slot link address -> symbol name, from the dynamic relocations."""
    out: dict[int, str] = {}
    for name in (".rela.plt", ".rela.dyn"):
        section = elf.get_section_by_name(name)
        if section is None or not hasattr(section, "iter_relocations"):
            continue
        symtab = cast("SymbolTableSection", elf.get_section(section["sh_link"]))
        for rel in section.iter_relocations():
            index = rel["r_info_sym"]
            if index:
                out[rel["r_offset"]] = symtab.get_symbol(index).name
    return out
