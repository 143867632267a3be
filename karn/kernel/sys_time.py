"""Time syscalls: clocks, sleeps. Clock reads the vDSO serves (platform/vdso) do not get here."""

from __future__ import annotations

import errno
import os
import struct
import time

from karn.abi.errno import SyscallError
from karn.abi.registers import s32, s64
from karn.kernel.cputime import (
    CpuTimes,
    cpu_clock_ns,
    cpu_clock_target,
    is_cpu_clock,
    process_times,
    thread_times,
)
from karn.kernel.process import Task

TIMESPEC = struct.Struct("<qq")
NSEC = 1_000_000_000
TIMER_ABSTIME = 1
CLK_TCK = 100  # AT_CLKTCK

CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
CLOCK_PROCESS_CPUTIME_ID = 2
CLOCK_THREAD_CPUTIME_ID = 3
CLOCK_MONOTONIC_RAW = 4
CLOCK_REALTIME_COARSE = 5
CLOCK_MONOTONIC_COARSE = 6
CLOCK_BOOTTIME = 7
CLOCK_REALTIME_ALARM = 8
CLOCK_BOOTTIME_ALARM = 9
CLOCK_TAI = 11

# Guest clock id -> host clock id, for the clocks the host keeps for the guest; CPU-time
# clocks are the guest's own (cputime.py).
_HOST_CLOCKS = {
    CLOCK_REALTIME: time.CLOCK_REALTIME,
    CLOCK_MONOTONIC: time.CLOCK_MONOTONIC,
    CLOCK_MONOTONIC_RAW: getattr(time, "CLOCK_MONOTONIC_RAW", time.CLOCK_MONOTONIC),
    CLOCK_REALTIME_COARSE: CLOCK_REALTIME_COARSE,
    CLOCK_MONOTONIC_COARSE: CLOCK_MONOTONIC_COARSE,
    CLOCK_BOOTTIME: getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC),
    CLOCK_REALTIME_ALARM: time.CLOCK_REALTIME,
    CLOCK_BOOTTIME_ALARM: getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC),
    CLOCK_TAI: getattr(time, "CLOCK_TAI", time.CLOCK_REALTIME),
}


def host_clock(clock_id: int) -> int:
    host = _HOST_CLOCKS.get(s32(clock_id))
    if host is None:
        raise SyscallError(errno.EINVAL)
    return host


def read_timespec(task: Task, addr: int) -> int:
    """A guest struct timespec as nanoseconds, validated as Linux does."""
    sec, nsec = TIMESPEC.unpack(task.mem.read(addr, TIMESPEC.size))
    if sec < 0 or not 0 <= nsec < NSEC:
        raise SyscallError(errno.EINVAL)
    return sec * NSEC + nsec


def write_timespec(task: Task, addr: int, ns: int) -> None:
    task.mem.write(addr, TIMESPEC.pack(*divmod(ns, NSEC)))


def clock_now_ns(task: Task, clock_id: int) -> int:
    """The value of any clock the guest may name: the host's, or a CPU-time clock."""
    clock_id = s32(clock_id)
    if is_cpu_clock(clock_id):
        return cpu_clock_ns(task, clock_id)
    return time.clock_gettime_ns(host_clock(clock_id))


def sys_clock_gettime(task: Task, clock_id: int, tp: int) -> int:
    write_timespec(task, tp, clock_now_ns(task, clock_id))
    return 0


def sys_clock_getres(task: Task, clock_id: int, tp: int) -> int:
    if is_cpu_clock(s32(clock_id)):
        cpu_clock_target(task, s32(clock_id))  # EINVAL for a bad id
        res = 1  # as Linux: CPU clocks count nanoseconds
    else:
        res = round(time.clock_getres(host_clock(clock_id)) * NSEC)
    if tp:
        write_timespec(task, tp, res)
    return 0


def sys_clock_settime(task: Task, clock_id: int, tp: int) -> int:
    """Linux's order of checks: the clock, the pointer, the value, then the permission
    (setting the host's clock: refused, as without CAP_SYS_TIME; a CPU clock never)."""
    clock = s32(clock_id)
    if clock < 0:  # a CPU clock by id: validated, then never set
        cpu_clock_target(task, clock)
        task.mem.read(tp, TIMESPEC.size)
        raise SyscallError(errno.EPERM)
    if clock != CLOCK_REALTIME:
        raise SyscallError(errno.EINVAL)  # unknown, or a clock without clock_set
    read_timespec(task, tp)
    raise SyscallError(errno.EPERM)


def sys_gettimeofday(task: Task, tv: int, tz: int) -> int:
    if tv:
        sec, ns = divmod(time.time_ns(), NSEC)
        task.mem.write(tv, struct.pack("<qq", sec, ns // 1000))
    if tz:
        task.mem.write(tz, bytes(8))  # UTC, no DST
    return 0


def sys_time(task: Task, tloc: int) -> int:
    now = time.time_ns() // NSEC
    if tloc:
        task.mem.write_u64(tloc, now)
    return now


def _sleep_until(task: Task, clock: int, deadline_ns: int, rem: int = 0) -> None:
    """Sleep on guest clock `clock` until deadline_ns; a signal ends it with EINTR (and the
    time left in rem, for relative sleeps), as a handler will run. A CPU-time clock
    advances no faster than real time: waiting the time left is never too long."""
    while True:
        remaining = deadline_ns - clock_now_ns(task, clock)
        if remaining <= 0:
            return
        if task.signal_pending():
            if rem:
                write_timespec(task, rem, remaining)
            raise SyscallError(errno.EINTR)
        task.waker.wait(time.monotonic() + remaining / NSEC)


def sys_nanosleep(task: Task, req: int, rem: int) -> int:
    duration = read_timespec(task, req)
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    _sleep_until(task, CLOCK_MONOTONIC, now + duration, rem)
    return 0


def sys_clock_nanosleep(task: Task, clock_id: int, flags: int, req: int, rem: int) -> int:
    clock = s32(clock_id)
    if is_cpu_clock(clock):
        target, _ = cpu_clock_target(task, clock)
        if target is task:
            raise SyscallError(errno.EINVAL)  # the caller's own CPU clock cannot advance
    else:
        host_clock(clock)
    value = read_timespec(task, req)
    if s32(flags) & TIMER_ABSTIME:
        _sleep_until(task, clock, value)
    else:
        _sleep_until(task, clock, clock_now_ns(task, clock) + value, rem)
    return 0


def sys_times(task: Task, buf: int) -> int:
    if buf:
        t = process_times(task.process)
        ticks = (t.user_ns, t.system_ns, 0, 0)
        task.mem.write(buf, struct.pack("<4q", *(v * CLK_TCK // NSEC for v in ticks)))
    return s64(int(os.times().elapsed * CLK_TCK))


RUSAGE_SELF, RUSAGE_CHILDREN, RUSAGE_THREAD = 0, -1, 1
_RUSAGE = struct.Struct("<4q14q")  # ru_utime, ru_stime (timevals), then 14 longs


def _peak_resident(task: Task) -> int:
    """The most guest memory seen resident so far, sampled now (bytes)."""
    proc = task.process
    sample = getattr(proc.mm.memory, "resident_bytes", None)
    if sample is not None:
        proc.peak_resident = max(proc.peak_resident, sample())
    return proc.peak_resident


def sys_getrusage(task: Task, who: int, usage: int) -> int:
    who = s32(who)
    if who == RUSAGE_SELF:
        times = process_times(task.process)
    elif who == RUSAGE_THREAD:
        times = thread_times(task)
    elif who == RUSAGE_CHILDREN:
        times = CpuTimes(0, 0)  # no child processes
    else:
        raise SyscallError(errno.EINVAL)
    maxrss_kib = 0 if who == RUSAGE_CHILDREN else _peak_resident(task) >> 10
    user_s, user_ns = divmod(times.user_ns, NSEC)
    sys_s, sys_ns = divmod(times.system_ns, NSEC)
    longs = [maxrss_kib] + [0] * 13  # ru_maxrss first; the others are not counted
    task.mem.write(usage, _RUSAGE.pack(user_s, user_ns // 1000, sys_s, sys_ns // 1000, *longs))
    return 0


HANDLERS = {
    "clock_gettime": sys_clock_gettime,
    "clock_getres": sys_clock_getres,
    "clock_settime": sys_clock_settime,
    "getrusage": sys_getrusage,
    "gettimeofday": sys_gettimeofday,
    "time": sys_time,
    "nanosleep": sys_nanosleep,
    "clock_nanosleep": sys_clock_nanosleep,
    "times": sys_times,
}

NOTES = {
    "times": "As getrusage(RUSAGE_SELF); children's are 0.",
    "clock_gettime": "CPU-time clocks count the host threads running the guest's threads: "
    "the guest's own time and the monitor's serving its syscalls (the process's also the "
    "monitor's other threads, from the guest's start).",
    "getrusage": "CPU times as the CPU-time clocks; ru_maxrss is the most guest memory seen "
    "resident at a getrusage call; the other counters are 0 (no children: RUSAGE_CHILDREN "
    "is all 0).",
    "clock_settime": "CLOCK_REALTIME is the host's clock: EPERM, as without CAP_SYS_TIME "
    "(as Linux: EPERM for CPU clocks by id, EINVAL for the others).",
}
