"""Dead padding near a syscall site, for the short sites' `jmp rel8` (docs/design/
fast-syscalls.md, section 3.5).

Found by decoding forward from the `syscall` instruction's end, an instruction boundary,
with a small length decoder that knows the instructions compilers put in syscall wrappers
and refuses anything else. A pad is a run of nops (or int3) that starts right after an
unconditional `ret`/`jmp` (no fall-through reaches it) and ends exactly at a 16-byte
boundary (the assembler's `.p2align 4` before the next label), and that no branch decoded
on the way targets. Decoding goes on past a pad only where a branch decoded before targets
the pad's end (a known boundary). What remains assumed: no branch from elsewhere lands
inside alignment padding, which compilers never emit.
"""

from __future__ import annotations

from karn.hints import NamedTuple

LEGACY = frozenset((0x66, 0x2E, 0x3E, 0x26, 0x36, 0x64, 0x65, 0xF2, 0xF3))
ALIGN = 16
JMP_REL32_SIZE = 5

NEXT, BRANCH, END = 0, 1, 2  # falls through; falls through or jumps; never falls through


def _span(*ranges: tuple[int, int]) -> frozenset[int]:
    return frozenset(b for lo, hi in ranges for b in range(lo, hi + 1))


# One-byte opcodes by what follows them (64-bit mode).
MODRM = _span((0x00, 0x03), (0x08, 0x0B), (0x10, 0x13), (0x18, 0x1B), (0x20, 0x23),
              (0x28, 0x2B), (0x30, 0x33), (0x38, 0x3B), (0x63, 0x63), (0x84, 0x8B),
              (0x8D, 0x8D), (0xD1, 0xD1), (0xD3, 0xD3), (0xFE, 0xFE))
MODRM_IMM8 = frozenset((0x6B, 0x80, 0x83, 0xC0, 0xC1, 0xC6))
MODRM_IMMZ = frozenset((0x69, 0x81, 0xC7))  # imm16 with 66, else imm32
IMM8 = frozenset((0x04, 0x0C, 0x14, 0x1C, 0x24, 0x2C, 0x34, 0x3C, 0x6A, 0xA8)) \
    | _span((0xB0, 0xB7))
IMMZ = frozenset((0x05, 0x0D, 0x15, 0x1D, 0x25, 0x2D, 0x35, 0x3D, 0x68, 0xA9))
PLAIN = _span((0x50, 0x5F)) | frozenset((0x90, 0x98, 0x99, 0xC9, 0xCC))
# Two-byte (0f xx) opcodes with a ModRM byte and nothing after it: nop, cmovcc, setcc,
# imul, movzx/movsx, and the SSE moves of copies.
MODRM_0F = _span((0x40, 0x4F), (0x90, 0x9F)) | frozenset(
    (0x1F, 0xAF, 0xB6, 0xB7, 0xBE, 0xBF, 0x10, 0x11, 0x28, 0x29, 0x6F, 0x7F, 0xD6, 0xEF))


class Insn(NamedTuple):
    length: int
    kind: int  # NEXT, BRANCH or END
    target: int | None  # a direct branch's target, relative to the instruction's start
    nop: bool  # a nop or int3: padding material


def _modrm_length(code: bytes, at: int) -> int | None:
    """Bytes of ModRM, SIB and displacement at code[at]."""
    if at >= len(code):
        return None
    modrm = code[at]
    mod, rm = modrm >> 6, modrm & 7
    if mod == 3:
        return 1
    n = 1
    if rm == 4:
        if at + 1 >= len(code):
            return None
        n += 1
        if mod == 0 and code[at + 1] & 7 == 5:
            n += 4
    elif mod == 0 and rm == 5:
        n += 4  # RIP-relative
    return n + (1 if mod == 1 else 4 if mod == 2 else 0)


def decode(code: bytes, at: int) -> Insn | None:
    """The instruction at code[at], or None for one this decoder does not know."""
    i = at
    opsize16 = False
    while i < len(code) and code[i] in LEGACY:
        opsize16 |= code[i] == 0x66
        i += 1
    rex = 0
    if i < len(code) and 0x40 <= code[i] <= 0x4F:
        rex = code[i]
        i += 1
    if i >= len(code):
        return None
    op = code[i]
    i += 1
    immz = 2 if opsize16 else 4
    kind, target, extra, nop = NEXT, None, 0, False
    if op in PLAIN:
        nop = op == 0xCC or (op == 0x90 and not rex and i - at <= 2)
    elif op in IMM8:
        extra = 1
    elif op in IMMZ:
        extra = immz
    elif 0xB8 <= op <= 0xBF:
        extra = 8 if rex & 8 else immz
    elif 0x70 <= op <= 0x7F or op in (0xEB, 0xE8, 0xE9):
        extra = 1 if op < 0x80 or op == 0xEB else 4
        if i + extra > len(code):
            return None
        target = i + extra - at + int.from_bytes(code[i:i + extra], "little", signed=True)
        kind = NEXT if op == 0xE8 else END if op in (0xEB, 0xE9) else BRANCH
        if op == 0xE8:
            target = None
    elif op == 0xC3:
        kind = END
    elif op == 0xC2:
        kind, extra = END, 2
    elif op in MODRM or op in MODRM_IMM8 or op in MODRM_IMMZ or op in (0xF6, 0xF7, 0xFF):
        m = _modrm_length(code, i)
        if m is None:
            return None
        reg = (code[i] >> 3) & 7
        extra = m + (1 if op in MODRM_IMM8 or (op == 0xF6 and reg < 2) else 0) \
            + (immz if op in MODRM_IMMZ or (op == 0xF7 and reg < 2) else 0)
        if op == 0xFF and reg in (4, 5):
            kind = END  # jmp *...
        elif op == 0xFF and reg == 7:
            return None
    elif op == 0x0F:
        if i >= len(code):
            return None
        op2 = code[i]
        i += 1
        if op2 == 0x05:
            pass  # syscall
        elif 0x80 <= op2 <= 0x8F:
            extra, kind = 4, BRANCH
            if i + 4 > len(code):
                return None
            target = i + 4 - at + int.from_bytes(code[i:i + 4], "little", signed=True)
        elif op2 in MODRM_0F:
            m = _modrm_length(code, i)
            if m is None:
                return None
            extra = m
            nop = op2 == 0x1F and not rex and (code[i] >> 3) & 7 == 0
        else:
            return None
    else:
        return None
    length = i + extra - at
    if at + length > len(code):
        return None
    return Insn(length, kind, target, nop)


def find_pad(code: bytes, base: int, reach: int) -> int | None:
    """code = guest bytes from address `base` (an instruction boundary: the end of a
    site's `syscall`) on. The address of the first dead pad of at least 5 bytes that
    starts within `reach` bytes of base, or None."""
    targets: set[int] = set()  # branch targets, offsets in code
    pads: list[tuple[int, int]] = []
    at = 0
    while at < min(len(code), reach):
        insn = decode(code, at)
        if insn is None:
            break
        if insn.target is not None:
            targets.add(at + insn.target)
        at += insn.length
        if insn.kind != END:
            continue
        end = at
        while (base + end) % ALIGN and end < len(code):
            pad = decode(code, end)
            if pad is None or not pad.nop:
                break
            end += pad.length
        if not (base + end) % ALIGN and end - at >= JMP_REL32_SIZE and at <= reach:
            pads.append((at, end))
        if end not in targets:
            break  # the next instruction boundary is unknown
        at = end
    for start, end in pads:
        if not any(start <= t < end for t in targets):
            return base + start
    return None
