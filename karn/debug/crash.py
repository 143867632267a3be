"""Crash reports: what a fatal guest fault was, where, and with which registers."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass

from karn.platform.vcpu import GuestFault

# x86 exception vector -> (Linux signal, what happened)
VECTOR_SIGNALS: dict[int, tuple[signal.Signals, str]] = {
    0: (signal.SIGFPE, "integer divide error"),
    1: (signal.SIGTRAP, "debug trap"),
    3: (signal.SIGTRAP, "breakpoint (int3)"),
    4: (signal.SIGSEGV, "overflow (into)"),
    5: (signal.SIGSEGV, "bound range exceeded"),
    6: (signal.SIGILL, "invalid opcode"),
    7: (signal.SIGFPE, "device not available"),
    10: (signal.SIGSEGV, "invalid TSS"),
    11: (signal.SIGBUS, "segment not present"),
    12: (signal.SIGBUS, "stack-segment fault"),
    13: (signal.SIGSEGV, "general protection fault"),
    14: (signal.SIGSEGV, "page fault"),
    16: (signal.SIGFPE, "x87 floating-point error"),
    17: (signal.SIGBUS, "alignment check"),
    19: (signal.SIGFPE, "SIMD floating-point error"),
}

PF_PRESENT, PF_WRITE, PF_USER, PF_FETCH = 1, 2, 4, 16

REGISTER_ORDER = "rax rbx rcx rdx rsi rdi rbp rsp r8 r9 r10 r11 r12 r13 r14 r15 rip rflags".split()

Symbolize = Callable[[int], str | None]


@dataclass(frozen=True)
class CrashReport:
    signal: signal.Signals
    cause: str
    fault: GuestFault
    address: int | None  # the faulting data address, when the CPU reports one
    access: str  # read / write / execute / ""

    @property
    def exit_status(self) -> int:
        return 128 + int(self.signal)


def classify(fault: GuestFault) -> CrashReport:
    sig, cause = VECTOR_SIGNALS.get(fault.vector, (signal.SIGSEGV, f"exception {fault.vector}"))
    address = None
    access = ""
    if fault.vector == 14:
        address = fault.cr2
        code = fault.error_code or 0
        access = "execute" if code & PF_FETCH else "write" if code & PF_WRITE else "read"
        cause = f"{access} of {'protected' if code & PF_PRESENT else 'unmapped'} memory"
    elif fault.vector == 13:
        cause = "general protection fault (non-canonical address or privileged instruction)"
    return CrashReport(sig, cause, fault, address, access)


def format_report(report: CrashReport, program: str, symbolize: Symbolize) -> str:
    fault = report.fault
    where = symbolize(fault.rip)
    lines = [f"karn: {program} crashed: {report.signal.name} ({report.cause})"]
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
