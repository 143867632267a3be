"""CPU exceptions raised by guest code, and the one table of what Linux makes of them.

Linux (arch/x86/kernel/traps.c, arch/x86/mm/fault.c) turns an exception at CPL3 into a
signal with a si_code and si_addr. The kernel delivers that signal, the gdb stub reports
it, and a crash report names it with a human cause: all three read it from here.
"""

from __future__ import annotations

from karn.abi.signals import (
    BUS_ADRALN,
    BUS_ADRERR,
    FPE_INTDIV,
    ILL_ILLOPN,
    SEGV_ACCERR,
    SEGV_MAPERR,
    SI_KERNEL,
    SIGBUS,
    SIGFPE,
    SIGILL,
    SIGSEGV,
    SIGTRAP,
    TRAP_BRKPT,
)
from karn.hints import NamedTuple

DEBUG, BREAKPOINT, PAGE_FAULT = 1, 3, 14  # the vectors other code asks about by name
# Not a CPU exception the guest takes (#MC never reaches it): KVM_RUN failed with EFAULT,
# the host pages behind a guest address are gone (platform/vcpu.py).
HOST_MEMORY_FAULT = 18
PF_PRESENT, PF_WRITE, PF_FETCH = 1, 2, 16  # page-fault error code bits


class GuestFault(NamedTuple):
    """A CPU exception raised by guest code, with the state at the faulting instruction."""

    vector: int
    error_code: int | None
    rip: int
    rsp: int
    rflags: int
    cr2: int
    regs: dict[str, int]
    fs_base: int


class FaultKind(NamedTuple):
    signal: int
    si_code: int
    cause: str


# x86 exception vector -> what Linux raises for it. The x87/SIMD errors get si_code 0:
# Linux derives an FPE_FLT* code from the FPU status word, which karn does not read.
FAULT_KINDS: dict[int, FaultKind] = {
    0: FaultKind(SIGFPE, FPE_INTDIV, "integer divide error"),
    DEBUG: FaultKind(SIGTRAP, TRAP_BRKPT, "debug trap"),
    BREAKPOINT: FaultKind(SIGTRAP, SI_KERNEL, "breakpoint (int3)"),
    4: FaultKind(SIGSEGV, SI_KERNEL, "overflow (into)"),
    5: FaultKind(SIGSEGV, SI_KERNEL, "bound range exceeded"),
    6: FaultKind(SIGILL, ILL_ILLOPN, "invalid opcode"),
    7: FaultKind(SIGFPE, 0, "device not available"),
    10: FaultKind(SIGSEGV, SI_KERNEL, "invalid TSS"),
    11: FaultKind(SIGBUS, SI_KERNEL, "segment not present"),
    12: FaultKind(SIGBUS, SI_KERNEL, "stack-segment fault"),
    13: FaultKind(SIGSEGV, SI_KERNEL,
                  "general protection fault (non-canonical address or privileged instruction)"),
    PAGE_FAULT: FaultKind(SIGSEGV, SEGV_MAPERR, "page fault"),
    16: FaultKind(SIGFPE, 0, "x87 floating-point error"),
    17: FaultKind(SIGBUS, BUS_ADRALN, "alignment check"),
    HOST_MEMORY_FAULT: FaultKind(SIGBUS, BUS_ADRERR,
                                 "access to a shared file's page past its end"),
    19: FaultKind(SIGFPE, 0, "SIMD floating-point error"),
}


class FaultSignal(NamedTuple):
    """One fault as Linux reports it: the siginfo fields and a description."""

    signal: int
    si_code: int
    si_addr: int  # the data address of a page fault, the instruction for SIGILL/SIGFPE
    cause: str
    access: str  # a page fault's "read" / "write" / "execute"; "" for other faults


def fault_signal(fault: GuestFault) -> FaultSignal:
    sig, code, cause = FAULT_KINDS.get(
        fault.vector, FaultKind(SIGSEGV, SI_KERNEL, f"exception {fault.vector}"))
    addr = fault.rip if sig in (SIGILL, SIGFPE) else 0
    access = ""
    if fault.vector == PAGE_FAULT:
        err = fault.error_code or 0
        addr = fault.cr2
        access = "execute" if err & PF_FETCH else "write" if err & PF_WRITE else "read"
        present = bool(err & PF_PRESENT)
        code = SEGV_ACCERR if present else SEGV_MAPERR
        cause = f"{access} of {'protected' if present else 'unmapped'} memory"
    return FaultSignal(sig, code, addr, cause, access)
