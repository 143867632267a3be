"""Signal syscalls: dispositions, masks, waiting, sending, alternate stacks, sigreturn."""

from __future__ import annotations

import errno
import struct
import time

from karn.abi.errno import SyscallError
from karn.abi.registers import s32
from karn.abi.signals import SI_QUEUE, SI_TKILL, SI_USER, SIGKILL, SIGRTMIN, SIGSTOP
from karn.kernel.blocking import Interrupted
from karn.kernel.limits import RLIMIT_SIGPENDING
from karn.kernel.process import Task
from karn.kernel.signals import (
    MINSIGSTKSZ,
    SS_AUTODISARM,
    SS_DISABLE,
    SS_ONSTACK,
    UNBLOCKABLE,
    AltStack,
    SigAction,
    SigInfo,
    bit,
    check_signal,
)
from karn.kernel.sys_time import read_timespec

SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
SIGSET_SIZE = 8


def _sigset_size(size: int) -> None:
    if size != SIGSET_SIZE:
        raise SyscallError(errno.EINVAL)


def sys_rt_sigaction(task: Task, sig: int, act: int, oact: int, sigsetsize: int) -> int:
    _sigset_size(sigsetsize)
    sig = check_signal(s32(sig))
    proc = task.process
    new = SigAction.unpack(task.mem.read(act, SigAction.KSIGACTION.size)) if act else None
    if new is not None and sig in (SIGKILL, SIGSTOP):
        raise SyscallError(errno.EINVAL)
    with proc.signal_lock:
        old = proc.actions[sig]
        if oact:
            task.mem.write(oact, old.pack())
        if new is not None:
            proc.actions[sig] = new
            if new.ignored(sig):  # POSIX: setting SIG_IGN discards what is pending
                proc.pending.discard(sig)
                for t in proc.tasks.values():
                    t.pending.discard(sig)
    return 0


def sys_rt_sigprocmask(task: Task, how: int, nset: int, oset: int, sigsetsize: int) -> int:
    _sigset_size(sigsetsize)
    old = task.blocked
    if nset:
        (mask,) = struct.unpack("<Q", task.mem.read(nset, 8))
        how = s32(how)
        if how == SIG_BLOCK:
            new = old | mask
        elif how == SIG_UNBLOCK:
            new = old & ~mask
        elif how == SIG_SETMASK:
            new = mask
        else:
            raise SyscallError(errno.EINVAL)
        task.set_blocked(new)
    if oset:
        task.mem.write(oset, struct.pack("<Q", old))
    return 0


def sys_rt_sigpending(task: Task, uset: int, sigsetsize: int) -> int:
    if sigsetsize > SIGSET_SIZE:
        raise SyscallError(errno.EINVAL)
    pending = (task.pending.mask | task.process.pending.mask) & task.blocked
    task.mem.write(uset, pending.to_bytes(8, "little")[:sigsetsize])
    return 0


def sys_rt_sigsuspend(task: Task, mask: int, sigsetsize: int) -> int:
    _sigset_size(sigsetsize)
    (new,) = struct.unpack("<Q", task.mem.read(mask, 8))
    task.saved_mask = task.blocked
    task.set_blocked(new)
    while not task.signal_pending():
        task.waker.wait(None)
    raise SyscallError(errno.EINTR)  # the old mask returns after the handler runs


def sys_pause(task: Task) -> int:
    while not task.signal_pending():
        task.waker.wait(None)
    raise SyscallError(errno.EINTR)


def sys_rt_sigtimedwait(task: Task, uthese: int, uinfo: int, uts: int, sigsetsize: int) -> int:
    _sigset_size(sigsetsize)
    (wanted,) = struct.unpack("<Q", task.mem.read(uthese, 8))
    wanted &= ~UNBLOCKABLE
    deadline = time.monotonic() + read_timespec(task, uts) / 1e9 if uts else None
    while True:
        info = task.take_signal(wanted)
        if info is not None:
            if uinfo:
                task.mem.write(uinfo, info.data)
            return info.signo
        if task.signal_pending():
            raise Interrupted
        if deadline is not None and time.monotonic() >= deadline:
            raise SyscallError(errno.EAGAIN)
        task.waker.wait(deadline)


def sys_sigaltstack(task: Task, uss: int, uoss: int) -> int:
    alt = task.altstack
    rsp = task.vcpu.get_context()["rsp"]
    if uoss:
        task.mem.write(uoss, alt.pack(rsp))
    if uss:
        sp, flags, size = AltStack.STACK_T.unpack(task.mem.read(uss, AltStack.STACK_T.size))
        if alt.contains(rsp):
            raise SyscallError(errno.EPERM)
        mode = flags & ~SS_AUTODISARM
        if mode not in (0, SS_ONSTACK, SS_DISABLE):
            raise SyscallError(errno.EINVAL)
        if mode == SS_DISABLE:
            alt.sp, alt.size, alt.flags = 0, 0, SS_DISABLE
        else:
            if size < MINSIGSTKSZ:
                raise SyscallError(errno.ENOMEM)
            alt.sp, alt.size, alt.flags = sp, size, flags & SS_AUTODISARM
    return 0


def _send(task: Task, target: Task | None, info: SigInfo) -> None:
    """Send to a thread, or the process when target is None. Each real-time signal queues
    a siginfo, up to RLIMIT_SIGPENDING queued in all: past it Linux fails sigqueue and
    tgkill with EAGAIN, and kill() only marks the signal pending (its info lost)."""
    proc = task.process
    sig = info.signo
    if proc.namespace_init and sig in (SIGKILL, SIGSTOP):
        return  # sent from inside its PID namespace: Linux drops it for the init
    with proc.signal_lock:
        if sig >= SIGRTMIN:
            queued = len(proc.pending.queue) + sum(
                len(t.pending.queue) for t in proc.tasks.values()
            )
            if queued >= proc.rlimits[RLIMIT_SIGPENDING][0]:
                if info.code != SI_USER:
                    raise SyscallError(errno.EAGAIN)
                if (proc.pending if target is None else target.pending).mask & bit(sig):
                    return  # pending already: this instance is lost
        if target is None:
            proc.signal_process(info)
        else:
            proc.signal_thread(target, info)


def _send_to_thread(task: Task, tgid: int | None, tid: int, sig: int, code: int) -> int:
    proc = task.process
    if tid <= 0 or (tgid is not None and tgid <= 0):
        raise SyscallError(errno.EINVAL)
    target = proc.tasks.get(tid) if tgid in (None, proc.pid) else None
    if target is None:
        if proc.link is None or tgid in (None, proc.pid):  # tkill: own threads only
            raise SyscallError(errno.ESRCH)
        proc.link.call("tgkill", tgid, tid, sig, code)  # another process's thread
        return 0
    if sig:
        _send(task, target, SigInfo.from_sender(sig, code, proc.pid))
    return 0


def sys_kill(task: Task, pid: int, sig: int) -> int:
    pid, sig = s32(pid), check_signal(s32(sig), allow_zero=True)
    proc = task.process
    if proc.link is not None and pid != proc.pid:
        # other processes: the table sends to them; the caller's own share is sent here
        if not proc.link.call("kill", pid, sig):
            return 0
    elif pid == -1 or pid not in (0, proc.pid, -proc.pid):
        # alone: -1 is every process but the caller (and init), never group 1
        raise SyscallError(errno.ESRCH)
    if sig:
        _send(task, None, SigInfo.from_sender(sig, SI_USER, proc.pid))
    return 0


def sys_tgkill(task: Task, tgid: int, tid: int, sig: int) -> int:
    sig = check_signal(s32(sig), allow_zero=True)
    return _send_to_thread(task, s32(tgid), s32(tid), sig, SI_TKILL)


def sys_tkill(task: Task, tid: int, sig: int) -> int:
    sig = check_signal(s32(sig), allow_zero=True)
    return _send_to_thread(task, None, s32(tid), sig, SI_TKILL)


def sys_rt_sigqueueinfo(task: Task, pid: int, sig: int, uinfo: int) -> int:
    sig = check_signal(s32(sig), allow_zero=True)
    proc = task.process
    if s32(pid) != proc.pid:
        raise SyscallError(errno.ESRCH)
    data = task.mem.read(uinfo, 128)
    (code,) = struct.unpack_from("<i", data, 8)
    if code >= 0 or code == SI_TKILL:
        raise SyscallError(errno.EPERM)  # only SI_QUEUE-like codes may be forged, as Linux
    if sig:
        _send(task, None, SigInfo(sig, code, data[16:]))
    return 0


def sys_rt_sigreturn(task: Task) -> int:
    return task.sigreturn()


HANDLERS = {
    "rt_sigaction": sys_rt_sigaction,
    "rt_sigprocmask": sys_rt_sigprocmask,
    "rt_sigpending": sys_rt_sigpending,
    "rt_sigsuspend": sys_rt_sigsuspend,
    "rt_sigtimedwait": sys_rt_sigtimedwait,
    "rt_sigqueueinfo": sys_rt_sigqueueinfo,
    "rt_sigreturn": sys_rt_sigreturn,
    "sigaltstack": sys_sigaltstack,
    "pause": sys_pause,
    "kill": sys_kill,
    "tgkill": sys_tgkill,
    "tkill": sys_tkill,
}

NOTES = {
    "kill": "To any guest process, group (kill(-pgid), kill(0)) or all (-1).",
}

_ = (SI_QUEUE, bit)
