"""Timer syscalls: alarm, setitimer/getitimer, and POSIX timers (timer_create ...)."""

from __future__ import annotations

import errno
import struct
import time
from collections.abc import Callable

from karn.abi.errno import SyscallError
from karn.abi.registers import s32
from karn.abi.signals import SI_KERNEL, SI_TIMER, SIGALRM, SIGPROF, SIGVTALRM
from karn.kernel.cputime import CPUCLOCK_PROF, CPUCLOCK_VIRT, cpu_clock_reader, is_cpu_clock
from karn.kernel.cputimers import CpuTimer, CpuTimerService
from karn.kernel.process import Process, Task
from karn.kernel.signals import SigInfo, check_signal
from karn.kernel.sys_time import (
    CLOCK_BOOTTIME,
    CLOCK_MONOTONIC,
    CLOCK_REALTIME,
    CLOCK_TAI,
    NSEC,
    TIMER_ABSTIME,
)
from karn.kernel.timers import ITIMERSPEC, ITIMERVAL, Timer

ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF = 0, 1, 2
SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD, SIGEV_THREAD_ID = 0, 1, 2, 4
SIGEVENT = struct.Struct("<QiiI")  # sigev_value, sigev_signo, sigev_notify, sigev_tid
MAX_TIMERS = 1024


def cpu_timer_service(proc: Process) -> CpuTimerService:
    if proc.cpu_timers is None:
        proc.cpu_timers = CpuTimerService(lambda: len(proc.tasks))
    return proc.cpu_timers


# ITIMER_VIRTUAL counts the process's user time, ITIMER_PROF all of its CPU time
_CPU_ITIMERS = {ITIMER_VIRTUAL: (CPUCLOCK_VIRT, SIGVTALRM), ITIMER_PROF: (CPUCLOCK_PROF, SIGPROF)}


def _cpu_itimer(task: Task, which: int) -> CpuTimer:
    proc = task.process
    timer = proc.cpu_itimers.get(which)
    if timer is None:
        kind, sig = _CPU_ITIMERS[which]

        def fire(_timer: CpuTimer) -> None:
            proc.signal_process(SigInfo.from_sender(sig, SI_KERNEL, 0))

        timer = CpuTimer(fire, cpu_clock_reader(task, ~0 << 3 | kind))  # this process's
        proc.cpu_itimers[which] = timer
    return timer


def _itimer_real(proc: Process) -> Timer:
    if proc.itimer_real is None:
        def fire(_timer: Timer) -> None:
            proc.signal_process(SigInfo.from_sender(SIGALRM, SI_KERNEL, 0))

        proc.itimer_real = Timer(fire)
    return proc.itimer_real


def _itimer(task: Task, which: int) -> Timer | CpuTimer:
    which = s32(which)
    if which == ITIMER_REAL:
        return _itimer_real(task.process)
    if which in _CPU_ITIMERS:
        return _cpu_itimer(task, which)
    raise SyscallError(errno.EINVAL)


def _split(seconds: float, unit: int) -> tuple[int, int]:
    """(whole seconds, units); a time above 0 never reads as 0 (that means disarmed)."""
    whole = int(seconds)
    part = int(round((seconds - whole) * unit))
    return (whole, part) if whole or part or seconds <= 0 else (0, 1)


def sys_alarm(task: Task, seconds: int) -> int:
    proc = task.process
    timer = _itimer_real(proc)
    left = timer.remaining()
    seconds &= 0xFFFFFFFF
    proc.timer_service.arm(timer, time.monotonic() + seconds if seconds else None, 0.0)
    return int(left + 0.999999) if left else 0  # rounded up, as Linux


def sys_getitimer(task: Task, which: int, value: int) -> int:
    timer = _itimer(task, which)
    task.mem.write(value, ITIMERVAL.pack(*_split(timer.interval, 1_000_000),
                                         *_split(timer.remaining(), 1_000_000)))
    return 0


def sys_setitimer(task: Task, which: int, new: int, old: int) -> int:
    timer = _itimer(task, which)
    if old:
        sys_getitimer(task, which, old)
    if new:
        isec, iusec, vsec, vusec = ITIMERVAL.unpack(task.mem.read(new, ITIMERVAL.size))
        if min(isec, vsec) < 0 or not (0 <= iusec < 1_000_000 and 0 <= vusec < 1_000_000):
            raise SyscallError(errno.EINVAL)
        _arm(task.process, timer, vsec + vusec / 1e6, isec + iusec / 1e6, absolute=False)
    return 0


def _arm(proc: Process, timer: Timer | CpuTimer, value: float, interval: float,
         absolute: bool, clock: int = CLOCK_MONOTONIC) -> None:
    """Arm (value > 0) or disarm a timer: value is relative, or a time on its clock."""
    if isinstance(timer, CpuTimer):
        deadline = (value if absolute else timer.now() + value) if value else None
        cpu_timer_service(proc).arm(timer, deadline, interval)
        return
    if not value:
        mono_deadline = None
    elif absolute:
        now = time.clock_gettime(clock if clock != CLOCK_BOOTTIME else CLOCK_MONOTONIC)
        mono_deadline = time.monotonic() + (value - now)
    else:
        mono_deadline = time.monotonic() + value
    proc.timer_service.arm(timer, mono_deadline, interval)


class PosixTimer:
    __slots__ = ("id", "timer", "clock", "signo", "value", "notify", "target_tid")

    def __init__(self, proc: Process, timer_id: int, clock: int, signo: int, value: int,
                 notify: int, target_tid: int, cpu_clock: Callable[[], int] | None) -> None:
        self.id = timer_id
        self.clock = clock
        self.signo = signo
        self.value = value
        self.notify = notify
        self.target_tid = target_tid

        def fire(timer: Timer | CpuTimer) -> None:
            if self.notify == SIGEV_NONE:
                return
            info = SigInfo(self.signo, SI_TIMER,
                           struct.pack("<iiQ", self.id, timer.overrun, self.value))
            target = proc.tasks.get(self.target_tid) if self.notify == SIGEV_THREAD_ID else None
            if target is not None:
                proc.signal_thread(target, info)
            else:
                proc.signal_process(info)

        self.timer = Timer(fire) if cpu_clock is None else CpuTimer(fire, cpu_clock)


def sys_timer_create(task: Task, clock_id: int, sevp: int, timerid: int) -> int:
    proc = task.process
    clock = s32(clock_id)
    cpu_clock = cpu_clock_reader(task, clock) if is_cpu_clock(clock) else None
    if cpu_clock is None and clock not in (CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME,
                                           CLOCK_TAI):
        raise SyscallError(errno.EINVAL)
    timer_id = proc.next_timer_id
    if sevp:
        value, signo, notify, tid = SIGEVENT.unpack(task.mem.read(sevp, SIGEVENT.size))
    else:
        value, signo, notify, tid = timer_id, SIGALRM, SIGEV_SIGNAL, 0
    if notify not in (SIGEV_SIGNAL, SIGEV_NONE, SIGEV_THREAD_ID):
        raise SyscallError(errno.EINVAL)  # SIGEV_THREAD is done by libc with THREAD_ID
    if notify != SIGEV_NONE:
        check_signal(signo)
    if notify == SIGEV_THREAD_ID and tid not in proc.tasks:
        raise SyscallError(errno.EINVAL)
    if len(proc.posix_timers) >= MAX_TIMERS:
        raise SyscallError(errno.EAGAIN)
    task.mem.write_u32(timerid, timer_id)
    proc.next_timer_id += 1
    proc.posix_timers[timer_id] = PosixTimer(proc, timer_id, clock, signo, value, notify, tid,
                                             cpu_clock)
    return 0


def _posix_timer(task: Task, timer_id: int) -> PosixTimer:
    timer = task.process.posix_timers.get(s32(timer_id))
    if timer is None:
        raise SyscallError(errno.EINVAL)
    return timer


def _write_itimerspec(task: Task, addr: int, timer: Timer | CpuTimer) -> None:
    task.mem.write(addr, ITIMERSPEC.pack(*_split(timer.interval, NSEC),
                                         *_split(timer.remaining(), NSEC)))


def sys_timer_settime(task: Task, timer_id: int, flags: int, new: int, old: int) -> int:
    pt = _posix_timer(task, timer_id)
    isec, insec, vsec, vnsec = ITIMERSPEC.unpack(task.mem.read(new, ITIMERSPEC.size))
    if min(isec, vsec) < 0 or not (0 <= insec < NSEC and 0 <= vnsec < NSEC):
        raise SyscallError(errno.EINVAL)
    if old:
        _write_itimerspec(task, old, pt.timer)
    _arm(task.process, pt.timer, vsec + vnsec / NSEC, isec + insec / NSEC,
         bool(s32(flags) & TIMER_ABSTIME), pt.clock)
    return 0


def sys_timer_gettime(task: Task, timer_id: int, value: int) -> int:
    _write_itimerspec(task, value, _posix_timer(task, timer_id).timer)
    return 0


def sys_timer_getoverrun(task: Task, timer_id: int) -> int:
    return _posix_timer(task, timer_id).timer.overrun


def sys_timer_delete(task: Task, timer_id: int) -> int:
    delete_posix_timer(task.process, _posix_timer(task, timer_id))
    return 0


def delete_posix_timer(proc: Process, pt: PosixTimer) -> None:
    """Disarm and forget a POSIX timer (timer_delete; execve deletes them all)."""
    _arm(proc, pt.timer, 0.0, 0.0, absolute=False)
    del proc.posix_timers[pt.id]


HANDLERS = {
    "alarm": sys_alarm,
    "getitimer": sys_getitimer,
    "setitimer": sys_setitimer,
    "timer_create": sys_timer_create,
    "timer_settime": sys_timer_settime,
    "timer_gettime": sys_timer_gettime,
    "timer_getoverrun": sys_timer_getoverrun,
    "timer_delete": sys_timer_delete,
}

_CPU_NOTE = ("CPU-time timers (ITIMER_VIRTUAL, ITIMER_PROF, CPU clocks) are sampled: "
             "they fire up to a few ms late, as Linux's at its tick")
NOTES = {
    "setitimer": _CPU_NOTE + "; ITIMER_VIRTUAL counts user time (the guest's and the "
    "monitor's own while serving it).",
    "getitimer": _CPU_NOTE + ".",
    "timer_create": "Wall, monotonic and CPU-time clocks; " + _CPU_NOTE + ". Absolute "
    "CLOCK_REALTIME expiries do not follow later clock changes.",
}
