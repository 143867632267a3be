"""Linux signals: dispositions, masks, pending queues, and the x86-64 signal frame.

The frame is what Linux builds (arch/x86/kernel/signal_64.c): below the interrupted
stack's red zone (or on the alternate stack), the XSAVE state 64-byte aligned, then
struct rt_sigframe { pretcode; ucontext; siginfo }, with RSP+8 16-byte aligned at the
handler's first instruction, as after a call. Handlers that return go through their
SA_RESTORER trampoline to rt_sigreturn; handlers that longjmp simply never come back.
"""

from __future__ import annotations

import errno
import struct
from collections import deque

from karn.abi.errno import SyscallError
from karn.abi.signals import (
    NSIG,
    SIGABRT,
    SIGALRM,
    SIGBUS,
    SIGCHLD,
    SIGCONT,
    SIGFPE,
    SIGHUP,
    SIGILL,
    SIGINT,
    SIGIO,
    SIGKILL,
    SIGPIPE,
    SIGPROF,
    SIGPWR,
    SIGQUIT,
    SIGRTMIN,
    SIGSEGV,
    SIGSTKFLT,
    SIGSTOP,
    SIGSYS,
    SIGTERM,
    SIGTRAP,
    SIGTSTP,
    SIGTTIN,
    SIGTTOU,
    SIGURG,
    SIGUSR1,
    SIGUSR2,
    SIGVTALRM,
    SIGWINCH,
    SIGXCPU,
    SIGXFSZ,
)
from karn.hints import Protocol

SIG_DFL = 0
SIG_IGN = 1

SA_NOCLDSTOP = 0x1
SA_NOCLDWAIT = 0x2
SA_SIGINFO = 0x4
SA_UNSUPPORTED = 0x400
SA_EXPOSE_TAGBITS = 0x800
SA_RESTORER = 0x04000000
SA_ONSTACK = 0x08000000
SA_RESTART = 0x10000000
SA_NODEFER = 0x40000000
SA_RESETHAND = 0x80000000

SS_ONSTACK = 1
SS_DISABLE = 2
SS_AUTODISARM = 1 << 31
MINSIGSTKSZ = 2048

UNBLOCKABLE = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))
FULL_MASK = (1 << NSIG) - 1

_TERMINATE = {SIGHUP, SIGINT, SIGKILL, SIGPIPE, SIGALRM, SIGTERM, SIGUSR1, SIGUSR2, SIGIO,
              SIGPROF, SIGVTALRM, SIGSTKFLT, SIGPWR}
_CORE = {SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGXCPU, SIGXFSZ, SIGSYS}
_IGNORE = {SIGCHLD, SIGCONT, SIGURG, SIGWINCH}
_STOP = {SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU}  # job-control stops (jobcontrol.py)


def bit(sig: int) -> int:
    return 1 << (sig - 1)


def default_action(sig: int) -> str:
    """'terminate', 'core', 'stop' or 'ignore'."""
    if sig in _CORE:
        return "core"
    if sig in _STOP:
        return "stop"
    if sig in _IGNORE:
        return "ignore"
    return "terminate"  # _TERMINATE and every real-time signal


def check_signal(sig: int, allow_zero: bool = False) -> int:
    if not (0 if allow_zero else 1) <= sig <= NSIG:
        raise SyscallError(errno.EINVAL)
    return sig


class SigAction:
    __slots__ = ("handler", "flags", "restorer", "mask")

    def __init__(self, handler: int = SIG_DFL, flags: int = 0, restorer: int = 0,
                 mask: int = 0) -> None:
        self.handler = handler
        self.flags = flags
        self.restorer = restorer
        self.mask = mask

    KSIGACTION = struct.Struct("<QQQQ")  # handler, flags, restorer, mask (8-byte sigset)

    def pack(self) -> bytes:
        return self.KSIGACTION.pack(self.handler, self.flags, self.restorer, self.mask)

    @classmethod
    def unpack(cls, data: bytes) -> SigAction:
        handler, flags, restorer, mask = cls.KSIGACTION.unpack(data)
        return cls(handler, flags & 0xFFFFFFFF, restorer, mask & ~UNBLOCKABLE)

    def ignored(self, sig: int) -> bool:
        return self.handler == SIG_IGN or (
            self.handler == SIG_DFL and default_action(sig) == "ignore"
        )


class SigInfo:
    """A queued signal with its struct siginfo (128 bytes)."""

    __slots__ = ("signo", "code", "data")

    def __init__(self, signo: int, code: int, fields: bytes = b"") -> None:
        self.signo = signo
        self.code = code
        self.data = struct.pack("<iii4x", signo, 0, code) + fields.ljust(112, b"\0")

    @classmethod
    def from_sender(cls, signo: int, code: int, pid: int, uid: int = 0) -> SigInfo:
        return cls(signo, code, struct.pack("<iI", pid, uid))

    @classmethod
    def fault(cls, signo: int, code: int, addr: int) -> SigInfo:
        return cls(signo, code, struct.pack("<Q", addr))


class PendingSignals:
    """A pending set: standard signals queue once, real-time signals queue every instance."""

    __slots__ = ("mask", "queue")

    def __init__(self) -> None:
        self.mask = 0
        self.queue: deque[SigInfo] = deque()

    def add(self, info: SigInfo) -> None:
        if info.signo < SIGRTMIN and self.mask & bit(info.signo):
            return
        self.mask |= bit(info.signo)
        self.queue.append(info)

    def take(self, allowed: int) -> SigInfo | None:
        """The lowest-numbered pending signal in `allowed`, synchronous faults first."""
        ready = self.mask & allowed
        if not ready:
            return None
        sig = (ready & -ready).bit_length()
        for i, info in enumerate(self.queue):
            if info.signo == sig:
                del self.queue[i]
                if not any(q.signo == sig for q in self.queue):
                    self.mask &= ~bit(sig)
                return info
        self.mask &= ~bit(sig)
        return None

    def discard(self, sig: int) -> None:
        self.queue = deque(q for q in self.queue if q.signo != sig)
        self.mask &= ~bit(sig)


class MaskCell(Protocol):
    """A thread's signal mask kept outside the kernel while the thread runs: in its vCPU's
    fast-transport slot, where the in-guest stub answers rt_sigprocmask
    (platform/fastcall/slotmask.py). post() has a full barrier after it: a signal posted,
    then the mask read, against a stub's mask stored, then the pending set read."""

    def get(self) -> int: ...

    def set(self, mask: int) -> None: ...

    def post(self, bits: int) -> None: ...

    def set_pending(self, bits: int) -> None: ...

    def enable(self, on: bool) -> None: ...


class AltStack:
    __slots__ = ("sp", "flags", "size")

    STACK_T = struct.Struct("<Qi4xQ")

    def __init__(self) -> None:
        self.sp = 0
        self.flags = SS_DISABLE
        self.size = 0

    def contains(self, rsp: int) -> bool:
        return not self.flags & SS_DISABLE and self.sp < rsp <= self.sp + self.size

    def pack(self, rsp: int) -> bytes:
        flags = self.flags & ~SS_AUTODISARM
        if self.contains(rsp):
            flags |= SS_ONSTACK
        return self.STACK_T.pack(self.sp, flags, self.size)


# -- the frame ---------------------------------------------------------------------------

SIGCONTEXT_REGS = ("r8 r9 r10 r11 r12 r13 r14 r15 rdi rsi rbp rbx rdx rax rcx rsp rip "
                   "rflags").split()
_SIGCONTEXT = struct.Struct("<18Q4HQQQQQ64x")  # ..., cs gs fs ss, err trapno oldmask cr2 fp
_UC_HEAD = struct.Struct("<QQ")  # uc_flags, uc_link
UC_FP_XSTATE = 0x1
UC_SIGCONTEXT_SS = 0x2
UC_STRICT_RESTORE_SS = 0x4
UC_OFFSET = 8
UC_STACK_OFFSET = UC_OFFSET + 16
MCONTEXT_OFFSET = UC_STACK_OFFSET + 24
SIGMASK_OFFSET = MCONTEXT_OFFSET + _SIGCONTEXT.size
SIGINFO_OFFSET = SIGMASK_OFFSET + 8
FRAME_SIZE = SIGINFO_OFFSET + 128
RED_ZONE = 128
FP_XSTATE_MAGIC1 = 0x46505853
FP_XSTATE_MAGIC2 = 0x46505845
SW_BYTES_OFFSET = 464  # fpx_sw_bytes in the FXSAVE area's software-reserved bytes
USER_CS, USER_SS = 0x23, 0x1B
# RFLAGS bits a handler's sigreturn may change (Linux FIX_EFLAGS).
FIX_EFLAGS = 0x40DD5
RFLAGS_CLEAR_ON_ENTRY = 0x100 | 0x400 | 0x10000  # TF, DF, RF


class FrameError(Exception):
    """The guest's stack cannot take the frame: the kernel kills it with SIGSEGV."""


def build_frame(mem, regs: dict[str, int], fpu: bytes, xcr0: int, info: SigInfo,
                action: SigAction, blocked: int, altstack: AltStack,
                fault: tuple[int, int, int] = (0, 0, 0)) -> dict[str, int]:
    """Write the frame for `info`; returns the registers that enter the handler.

    fault: (error code, trap number, cr2) of a synchronous fault, else zeros.
    """
    rsp = regs["rsp"]
    if action.flags & SA_ONSTACK and not altstack.flags & SS_DISABLE \
            and not altstack.contains(rsp):
        sp = altstack.sp + altstack.size
    else:
        sp = rsp - RED_ZONE
    fp_size = len(fpu) + 4
    fpstate = (sp - fp_size) & ~63
    frame = ((fpstate - FRAME_SIZE) & ~15) - 8
    try:
        fp = bytearray(fpu)
        struct.pack_into("<IIQI", fp, SW_BYTES_OFFSET, FP_XSTATE_MAGIC1, fp_size, xcr0, len(fpu))
        mem.write(fpstate, bytes(fp) + struct.pack("<I", FP_XSTATE_MAGIC2))
        err, trapno, cr2 = fault
        sigcontext = _SIGCONTEXT.pack(
            *(regs[name] for name in SIGCONTEXT_REGS), USER_CS, 0, 0, USER_SS,
            err, trapno, blocked, cr2, fpstate,
        )
        mem.write(frame, struct.pack("<Q", action.restorer))
        mem.write(frame + UC_OFFSET,
                  _UC_HEAD.pack(UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS, 0)
                  + altstack.pack(rsp) + sigcontext + struct.pack("<Q", blocked))
        mem.write(frame + SIGINFO_OFFSET, info.data)
    except SyscallError as err_:
        raise FrameError from err_
    entry = dict(regs)
    entry.update(
        rip=action.handler, rsp=frame, rdi=info.signo, rsi=frame + SIGINFO_OFFSET,
        rdx=frame + UC_OFFSET, rax=0, rflags=regs["rflags"] & ~RFLAGS_CLEAR_ON_ENTRY,
    )
    return entry


class Restored:
    __slots__ = ("regs", "fpu", "blocked", "stack")

    def __init__(self, regs: dict[str, int], fpu: bytes | None, blocked: int,
                 stack: tuple[int, int, int]) -> None:
        self.regs = regs
        self.fpu = fpu
        self.blocked = blocked
        self.stack = stack


def read_frame(mem, rsp: int, current: dict[str, int], fpu_size: int) -> Restored:
    """rt_sigreturn: the state saved by build_frame, found from the restorer's RSP."""
    frame = rsp - 8
    uc = mem.read(frame + UC_OFFSET, SIGINFO_OFFSET - UC_OFFSET)
    ss_sp, ss_flags, ss_size = AltStack.STACK_T.unpack_from(uc, UC_STACK_OFFSET - UC_OFFSET)
    values = _SIGCONTEXT.unpack_from(uc, MCONTEXT_OFFSET - UC_OFFSET)
    regs = dict(current)
    regs.update(zip(SIGCONTEXT_REGS, values[:18], strict=True))
    regs["rflags"] = (current["rflags"] & ~FIX_EFLAGS) | (regs["rflags"] & FIX_EFLAGS) | 0x2
    fpstate = values[-1]
    fpu = mem.read(fpstate, fpu_size) if fpstate else None
    (blocked,) = struct.unpack_from("<Q", uc, SIGMASK_OFFSET - UC_OFFSET)
    return Restored(regs, fpu, blocked & ~UNBLOCKABLE, (ss_sp, ss_flags, ss_size))
