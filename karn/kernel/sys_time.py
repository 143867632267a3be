"""Time syscalls: clocks, sleeps. Clock reads the vDSO serves (platform/vdso) do not get here."""

from __future__ import annotations

import errno
import os
import struct
import time

from karn.abi.errno import SyscallError
from karn.abi.registers import s32, s64
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

# Guest clock id -> host clock id. CPU-time clocks read the monitor's own CPU time, which
# includes the time spent serving the guest's syscalls (documented in docs/syscalls.md).
_HOST_CLOCKS = {
    CLOCK_REALTIME: time.CLOCK_REALTIME,
    CLOCK_MONOTONIC: time.CLOCK_MONOTONIC,
    CLOCK_PROCESS_CPUTIME_ID: time.CLOCK_PROCESS_CPUTIME_ID,
    CLOCK_THREAD_CPUTIME_ID: time.CLOCK_THREAD_CPUTIME_ID,
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


def sys_clock_gettime(task: Task, clock_id: int, tp: int) -> int:
    write_timespec(task, tp, time.clock_gettime_ns(host_clock(clock_id)))
    return 0


def sys_clock_getres(task: Task, clock_id: int, tp: int) -> int:
    res = time.clock_getres(host_clock(clock_id))
    if tp:
        write_timespec(task, tp, round(res * NSEC))
    return 0


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
    """Sleep on `clock` until deadline_ns; a signal ends it with EINTR (and the time left
    in rem, for relative sleeps), as a handler will run."""
    while True:
        remaining = deadline_ns - time.clock_gettime_ns(clock)
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
    _sleep_until(task, time.CLOCK_MONOTONIC, now + duration, rem)
    return 0


def sys_clock_nanosleep(task: Task, clock_id: int, flags: int, req: int, rem: int) -> int:
    if s32(clock_id) in (CLOCK_THREAD_CPUTIME_ID,):
        raise SyscallError(errno.EINVAL)
    clock = host_clock(clock_id)
    value = read_timespec(task, req)
    if s32(flags) & TIMER_ABSTIME:
        _sleep_until(task, clock, value)
    else:
        _sleep_until(task, clock, time.clock_gettime_ns(clock) + value, rem)
    return 0


def sys_times(task: Task, buf: int) -> int:
    t = os.times()
    if buf:
        ticks = (t.user, t.system, 0.0, 0.0)
        task.mem.write(buf, struct.pack("<4q", *(int(v * CLK_TCK) for v in ticks)))
    return s64(int(t.elapsed * CLK_TCK))


HANDLERS = {
    "clock_gettime": sys_clock_gettime,
    "clock_getres": sys_clock_getres,
    "gettimeofday": sys_gettimeofday,
    "time": sys_time,
    "nanosleep": sys_nanosleep,
    "clock_nanosleep": sys_clock_nanosleep,
    "times": sys_times,
}

NOTES = {
    "times": "User and system times are the monitor's (which include serving the guest's "
    "syscalls); children's are 0.",
    "clock_gettime": "CPU-time clocks count the monitor's CPU time, which includes serving "
    "the guest's syscalls.",
}
