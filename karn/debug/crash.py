"""Crash reports: what a fatal guest fault was, where, and with which registers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from karn.abi.errno import SyscallError
from karn.abi.faults import PAGE_FAULT, GuestFault, fault_signal
from karn.abi.signals import SIGABRT, signal_name
from karn.hints import TYPE_CHECKING

if TYPE_CHECKING:
    from karn.debug.observe import SyscallRecord
    from karn.debug.symbols import Symbolizer
    from karn.kernel.guestmem import GuestMemory

REGISTER_ORDER = "rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 r12 r13 r14 r15 rip rflags".split()

Symbolize = Callable[[int], str | None]
ReadBytes = Callable[[int, int], bytes | None]


@dataclass(frozen=True)
class CrashReport:
    signal: int
    cause: str
    fault: GuestFault
    address: int | None  # the faulting data address, when the CPU reports one
    access: str  # read / write / execute / ""

    @property
    def exit_status(self) -> int:
        return 128 + self.signal


def classify(fault: GuestFault) -> CrashReport:
    sig, _code, si_addr, cause, access = fault_signal(fault)
    address = si_addr if fault.vector == PAGE_FAULT else None
    return CrashReport(sig, cause, fault, address, access)


def signal_report(sig: int, regs: dict[str, int], fs_base: int) -> CrashReport:
    """A core-dumping signal the program sent itself (abort(), raise()), reported at the
    call that sent it."""
    state = GuestFault(-1, None, regs["rip"], regs["rsp"], regs["rflags"], 0, regs, fs_base)
    cause = "abort() or raise() in the program" if sig == SIGABRT \
        else "sent by the program to itself"
    return CrashReport(sig, cause, state, None, "")


class CrashContext:
    """What a full report needs beyond the fault: guest memory, the mapped objects and,
    when recorded, the last syscalls."""

    def __init__(self, mem: GuestMemory, symbolizer: Symbolizer,
                 history: list[SyscallRecord] | None = None) -> None:
        self.mem = mem
        self.symbolizer = symbolizer
        self.history = history

    def read(self, addr: int, size: int) -> bytes | None:
        try:
            return self.mem.read(addr, size)
        except (SyscallError, ValueError, OverflowError):
            return None

    def read_u64(self, addr: int) -> int | None:
        data = self.read(addr, 8)
        return None if data is None else int.from_bytes(data, "little")


def format_report(report: CrashReport, program: str, symbolize: Symbolize,
                  context: CrashContext | None = None) -> str:
    text = _format_basic(report, program, symbolize)
    if context is None:
        return text
    sections = [text]
    for part in (_disassembly, _backtrace, _history):
        try:
            sections.extend(part(report, context))
        except Exception as err:  # a report section must never hide the report
            sections.append(f"  ({part.__name__.strip('_')} unavailable: {err})")
    return "\n".join(sections)


def _disassembly(report: CrashReport, ctx: CrashContext) -> list[str]:
    from karn.debug.disasm import around

    rip = report.fault.rip
    obj = ctx.symbolizer.find_object(rip)
    start = None
    if obj is not None:
        hit = obj.symbols().lookup(rip - obj.bias)
        if hit is not None:
            start = hit[1] + obj.bias
    return ["  instructions:", *("    " + line for line in around(ctx.read, rip, start))]


def frame_lines(frames: list, symbolizer: Symbolizer, read: ReadBytes | None = None) -> list[str]:
    from karn.debug.unwind import called_name

    lines = []
    for i, frame in enumerate(frames):
        # A caller's pc is a return address: name the call instruction's function and line.
        look = frame.pc if i == 0 else frame.pc - 1
        where = symbolizer.symbolize(look) or "??"
        if "+" in where and "(" not in where and read is not None and i + 1 < len(frames):
            # No symbol covers it (a stripped library): the name its caller called it by.
            called = called_name(read, symbolizer, frames[i + 1].pc)
            if called:
                where = f"{called} (called via PLT) in {where}"
        if i and "+" in where:
            name, _, rest = where.partition("+")
            off, _, obj = rest.partition(" ")
            where = f"{name}+{int(off, 16) + 1:#x}" + (f" {obj}" if obj else "")
        src = symbolizer.addr2line(look)
        at = f" at {src[0]}:{src[1]}" if src else ""
        lines.append(f"    #{i:<2} {frame.pc:#018x} in {where}{at}")
    return lines


def _backtrace(report: CrashReport, ctx: CrashContext) -> list[str]:
    from karn.debug.unwind import Unwinder

    frames = Unwinder(ctx.symbolizer, ctx.read_u64).backtrace(report.fault.regs)
    return ["  backtrace:", *frame_lines(frames, ctx.symbolizer, ctx.read)]


def _history(report: CrashReport, ctx: CrashContext) -> list[str]:
    if ctx.history is None:
        return ["  last syscalls: not recorded (run with --crash-history, --trace or --gdb)"]
    from karn.debug.decode import Decoder
    from karn.debug.tracer import syscall_name

    decoder = Decoder(ctx.mem)
    lines = [f"  last {len(ctx.history)} syscalls (oldest first, arguments read now):"]
    for rec in ctx.history:
        name = syscall_name(rec.nr)
        try:
            args = decoder.args(name, rec.args, rec.result)
        except Exception:
            args = ", ".join(f"{a:#x}" for a in rec.args)
        lines.append(f"    [{rec.tid}] {name}({args}) = {decoder.result(name, rec.result)}")
    return lines


def _format_basic(report: CrashReport, program: str, symbolize: Symbolize) -> str:
    fault = report.fault
    where = symbolize(fault.rip)
    lines = [f"karn: {program} crashed: {signal_name(report.signal)} ({report.cause})"]
    if report.address is not None:
        lines.append(f"  fault address: {report.address:#x} ({report.access})")
    lines.append(f"  at rip {fault.rip:#x}" + (f" in {where}" if where else ""))
    if fault.error_code is not None:
        lines.append(f"  error code: {fault.error_code:#x}")
    regs = fault.regs
    names = [n for n in REGISTER_ORDER if n in regs]
    for i in range(0, len(names), 4):
        lines.append("  " + "  ".join(f"{n:>6} {regs[n]:#018x}" for n in names[i : i + 4]))
    lines.append(f"  fs_base {fault.fs_base:#018x}")
    return "\n".join(lines)
