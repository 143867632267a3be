"""The register file gdb sees (target description) and its encoding in `g`/`p` packets.

Order: the x86-64 core (GPRs, rip, eflags, segments, x87), SSE, the Linux orig_rax and
the fs_base/gs_base pair, as gdbserver lays them out. x87 and SSE values come from the
vCPU's XSAVE image (legacy region).
"""

from __future__ import annotations

import struct

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
SEGMENTS = ("cs", "ss", "ds", "es", "fs", "gs")
X87_CONTROL = ("fctrl", "fstat", "ftag", "fiseg", "fioff", "foseg", "fooff", "fop")

# (name, bits, type, group) in `g` order
REGISTERS: list[tuple[str, int, str]] = [
    *((n, 64, "int64") for n in GPRS[:6]),
    ("rbp", 64, "data_ptr"), ("rsp", 64, "data_ptr"),
    *((n, 64, "int64") for n in GPRS[8:]),
    ("rip", 64, "code_ptr"), ("eflags", 32, "i386_eflags"),
    *((n, 32, "int32") for n in SEGMENTS),
    *((f"st{i}", 80, "i387_ext") for i in range(8)),
    *((n, 32, "int") for n in X87_CONTROL),
    *((f"xmm{i}", 128, "vec128") for i in range(16)),
    ("mxcsr", 32, "i386_mxcsr"),
    ("orig_rax", 64, "int"),
    ("fs_base", 64, "int"), ("gs_base", 64, "int"),
]
INDEX = {name: i for i, (name, _, _) in enumerate(REGISTERS)}
SELECTORS = {"cs": 0x33, "ss": 0x2B, "ds": 0, "es": 0, "fs": 0, "gs": 0}  # as Linux shows


def _features() -> str:
    def reg(name: str, bits: int, typ: str) -> str:
        return f'<reg name="{name}" bitsize="{bits}" type="{typ}"/>'

    core = "".join(reg(*r) for r in REGISTERS[:40])
    sse = "".join(reg(*r) for r in REGISTERS[40:57])
    return (
        '<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd">'
        "<target><architecture>i386:x86-64</architecture><osabi>GNU/Linux</osabi>"
        '<feature name="org.gnu.gdb.i386.core">'
        '<flags id="i386_eflags" size="4">'
        '<field name="CF" start="0" end="0"/><field name="" start="1" end="1"/>'
        '<field name="PF" start="2" end="2"/><field name="AF" start="4" end="4"/>'
        '<field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/>'
        '<field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/>'
        '<field name="DF" start="10" end="10"/><field name="OF" start="11" end="11"/>'
        '<field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/>'
        '<field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/>'
        '<field name="VIF" start="19" end="19"/><field name="VIP" start="20" end="20"/>'
        '<field name="ID" start="21" end="21"/></flags>'
        f"{core}</feature>"
        '<feature name="org.gnu.gdb.i386.sse">'
        '<vector id="v8bf16" type="bfloat16" count="8"/>'
        '<vector id="v4f" type="ieee_single" count="4"/>'
        '<vector id="v2d" type="ieee_double" count="2"/>'
        '<vector id="v16i8" type="int8" count="16"/>'
        '<vector id="v8i16" type="int16" count="8"/>'
        '<vector id="v4i32" type="int32" count="4"/>'
        '<vector id="v2i64" type="int64" count="2"/>'
        '<union id="vec128"><field name="v8_bfloat16" type="v8bf16"/>'
        '<field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/>'
        '<field name="v16_int8" type="v16i8"/><field name="v8_int16" type="v8i16"/>'
        '<field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/>'
        '<field name="uint128" type="uint128"/></union>'
        '<flags id="i386_mxcsr" size="4">'
        '<field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/>'
        '<field name="ZE" start="2" end="2"/><field name="OE" start="3" end="3"/>'
        '<field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/>'
        '<field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/>'
        '<field name="DM" start="8" end="8"/><field name="ZM" start="9" end="9"/>'
        '<field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/>'
        '<field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/>'
        f"</flags>{sse}</feature>"
        f'<feature name="org.gnu.gdb.i386.linux">{reg("orig_rax", 64, "int")}</feature>'
        '<feature name="org.gnu.gdb.i386.segments">'
        f'{reg("fs_base", 64, "int")}{reg("gs_base", 64, "int")}</feature>'
        "</target>"
    )


TARGET_XML = _features()


def encode(ctx: dict[str, int], fs_base: int, gs_base: int, fpu: bytes) -> bytes:
    """All registers, little-endian, in REGISTERS order."""
    out = bytearray()
    for name in GPRS:
        out += struct.pack("<Q", ctx[name] & (1 << 64) - 1)
    out += struct.pack("<QI", ctx["rip"], ctx["rflags"] & 0xFFFFFFFF)
    for name in SEGMENTS:
        out += struct.pack("<I", SELECTORS[name])
    fpu = fpu.ljust(512, b"\0")
    for i in range(8):
        out += fpu[32 + 16 * i: 32 + 16 * i + 10]
    fcw, fsw, ftw_abridged, fop, fip, fdp, mxcsr = struct.unpack_from("<HHBxHQQI", fpu, 0)
    ftag = 0
    for i in range(8):  # abridged (1 bit valid) -> full tag word (00 valid, 11 empty)
        ftag |= (0 if ftw_abridged >> i & 1 else 3) << (2 * i)
    out += struct.pack("<8I", fcw, fsw, ftag, 0, fip & 0xFFFFFFFF, 0, fdp & 0xFFFFFFFF, fop)
    out += fpu[160:160 + 256]
    out += struct.pack("<I", mxcsr)
    out += struct.pack("<Q", ctx.get("orig_rax", (1 << 64) - 1))
    out += struct.pack("<QQ", fs_base, gs_base)
    return bytes(out)


def offsets() -> list[tuple[int, int]]:
    """(byte offset, byte size) of each register in the `g` packet."""
    out, at = [], 0
    for _, bits, _ in REGISTERS:
        out.append((at, bits // 8))
        at += bits // 8
    return out


OFFSETS = offsets()
