"""The instructions around a faulting RIP, disassembled with capstone (imported lazily)."""

from __future__ import annotations

from collections.abc import Callable

BEFORE = 4  # instructions shown before the faulting one
AFTER = 2
WINDOW = 256  # bytes decoded from a function start to find the instructions before RIP

ReadBytes = Callable[[int, int], bytes | None]


def around(read: ReadBytes, rip: int, func_start: int | None) -> list[str]:
    """Lines "   0xaddr: mnemonic operands", the one at rip marked "=>"."""
    from capstone import CS_ARCH_X86, CS_MODE_64, Cs

    cs = Cs(CS_ARCH_X86, CS_MODE_64)
    start = rip
    if func_start is not None and 0 <= rip - func_start <= WINDOW:
        start = func_start
    elif rip >= 64:
        start = rip  # no anchor: decoding backwards is guesswork, start at rip
    code = read(start, rip - start + 16 * (AFTER + 1))
    if code is None:
        code = read(rip, 16 * (AFTER + 1))
        start = rip
    if code is None:
        return [f"   {rip:#x}: <unreadable>"]
    insns = list(cs.disasm(code, start))
    if not any(i.address == rip for i in insns) and start != rip:
        insns = list(cs.disasm(code[rip - start:], rip))
    at = next((k for k, i in enumerate(insns) if i.address == rip), None)
    if at is None:
        return [f"=> {rip:#x}: (bytes {code[rip - start:rip - start + 8].hex(' ')})"]
    lines = []
    for insn in insns[max(0, at - BEFORE): at + AFTER + 1]:
        mark = "=>" if insn.address == rip else "  "
        lines.append(f"{mark} {insn.address:#x}: {insn.mnemonic} {insn.op_str}".rstrip())
    return lines
