"""The guest's CPU time: what getrusage, times and the CPU-time clocks report.

A guest thread runs on its own host thread (the vCPU's), and the host counts the time that
thread spends in guest mode as its user time, beside the time the monitor spends serving
the thread's syscalls there: a thread's host CPU time since the guest thread began on it
(the host thread may have run earlier guest threads: platform/machine.py keeps it for the
vCPU's next one) is the guest thread's CPU time, the monitor's work for it standing in for
Linux's kernel time. The process's CPU time is the
monitor's since the guest process was made (Process.cpu_base), so that the monitor's own
start (Python, the image) is not counted.
"""

from __future__ import annotations

import errno
import resource
import threading
import time
from collections.abc import Callable

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from karn.kernel.process import Process, Task

NSEC = 1_000_000_000
CLOCK_PROCESS_CPUTIME_ID = 2
CLOCK_THREAD_CPUTIME_ID = 3
# Dynamic CPU-clock ids (clock_getcpuclockid, pthread_getcpuclockid): ~pid << 3 | flags
CPUCLOCK_PROF, CPUCLOCK_VIRT, CPUCLOCK_SCHED = 0, 1, 2
CPUCLOCK_PERTHREAD = 4
CPUCLOCK_WHICH = 3


class CpuTimes(NamedTuple):
    user_ns: int
    system_ns: int

    @property
    def total_ns(self) -> int:
        return self.user_ns + self.system_ns

    def since(self, base: CpuTimes) -> CpuTimes:
        return CpuTimes(max(self.user_ns - base.user_ns, 0),
                        max(self.system_ns - base.system_ns, 0))


def _from_rusage(usage: resource.struct_rusage) -> CpuTimes:
    return CpuTimes(round(usage.ru_utime * NSEC), round(usage.ru_stime * NSEC))


def monitor_times() -> CpuTimes:
    """The whole monitor's CPU time (the base the process's is counted from)."""
    return _from_rusage(resource.getrusage(resource.RUSAGE_SELF))


class CpuFloor:
    """A process's CPU time as last reported, which it never reports less of. The
    platform's overhead (the fast transport's server thread) is taken off the monitor's
    time, read just after it, while that thread may be running (serving these very
    calls): the overhead can grow between the two reads by more than the monitor's time
    grew since the last report, and the difference go back (a CPU-time clock read in a
    loop went back hundreds of times in 3,000 reads)."""

    __slots__ = ("_lock", "clock_ns", "times")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clock_ns = 0
        self.times = CpuTimes(0, 0)

    def clock(self, ns: int) -> int:
        with self._lock:
            self.clock_ns = max(self.clock_ns, ns)
            return self.clock_ns

    def rusage(self, times: CpuTimes) -> CpuTimes:
        with self._lock:
            last = self.times
            self.times = CpuTimes(max(last.user_ns, times.user_ns),
                                  max(last.system_ns, times.system_ns))
            return self.times


def process_times(proc: Process) -> CpuTimes:
    """The monitor's CPU time since the guest process began, less the platform's overhead
    (taken from user time first: the server's polling is user time)."""
    times = monitor_times().since(proc.cpu_base)
    overhead = _overhead_ns(proc)
    from_user = min(overhead, times.user_ns)
    return proc.cpu_floor.rusage(CpuTimes(times.user_ns - from_user,
                                          max(times.system_ns - (overhead - from_user), 0)))


def process_clock_ns(proc: Process) -> int:
    """The process's CPU time to the nanosecond (CLOCK_PROCESS_CPUTIME_ID's precision,
    not rusage's microseconds)."""
    return proc.cpu_floor.clock(max(time.clock_gettime_ns(time.CLOCK_PROCESS_CPUTIME_ID)
                                    - proc.cpu_base.total_ns - _overhead_ns(proc), 0))


def _overhead_ns(proc: Process) -> int:
    return proc.machine.overhead_cpu_ns() if proc.machine is not None else 0


def thread_times(task: Task) -> CpuTimes:
    """A guest thread's user and system time. Only the calling thread's own host thread
    can be split in two; another thread's total is reported as user time."""
    if task.host_thread == threading.get_ident():
        return _from_rusage(resource.getrusage(resource.RUSAGE_THREAD)).since(task.cpu_base)
    return CpuTimes(_thread_clock_ns(task), 0)


def thread_start_times() -> CpuTimes:
    """The calling host thread's CPU time now: a guest thread starting on it counts from
    here (Task.cpu_base)."""
    return _from_rusage(resource.getrusage(resource.RUSAGE_THREAD))


def _thread_clock_ns(task: Task) -> int:
    if not task.host_thread:
        return 0  # not started yet, or ended
    try:
        ns = time.clock_gettime_ns(time.pthread_getcpuclockid(task.host_thread))
    except OSError:
        return 0  # its host thread just ended
    return max(ns - task.cpu_base.total_ns, 0)


def _clock_value(times: CpuTimes, which: int) -> int:
    return times.user_ns if which == CPUCLOCK_VIRT else times.total_ns


def is_cpu_clock(clock_id: int) -> bool:
    return clock_id in (CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID) or clock_id < 0


def cpu_clock_target(task: Task, clock_id: int) -> tuple[Task | None, int]:
    """(the thread, or None for the whole process, and PROF/VIRT/SCHED) a CPU clock id
    names; EINVAL for a malformed id or one naming no thread or process of the guest."""
    if clock_id == CLOCK_PROCESS_CPUTIME_ID:
        return None, CPUCLOCK_SCHED
    if clock_id == CLOCK_THREAD_CPUTIME_ID:
        return task, CPUCLOCK_SCHED
    which = clock_id & CPUCLOCK_WHICH
    pid = ~(clock_id >> 3)
    if clock_id >= 0 or which == CPUCLOCK_WHICH:
        raise SyscallError(errno.EINVAL)
    proc = task.process
    if clock_id & CPUCLOCK_PERTHREAD:
        target = task if pid == 0 else proc.tasks.get(pid)
        if target is None:
            raise SyscallError(errno.EINVAL)
        return target, which
    if pid not in (0, proc.pid):
        raise SyscallError(errno.EINVAL)
    return None, which


def cpu_clock_reader(task: Task, clock_id: int) -> Callable[[], int]:
    """A CPU clock as a function any host thread may call (the CPU timers' sampler)."""
    target, which = cpu_clock_target(task, clock_id)
    proc = task.process
    if target is None:
        if which == CPUCLOCK_SCHED:
            return lambda: process_clock_ns(proc)
        return lambda: _clock_value(process_times(proc), which)
    return lambda: _thread_clock_ns(target)  # a thread's user time is not split apart


def cpu_clock_ns(task: Task, clock_id: int) -> int:
    """The value of a CPU-time clock (clock_gettime)."""
    target, which = cpu_clock_target(task, clock_id)
    if target is None:
        if which == CPUCLOCK_SCHED:
            return process_clock_ns(task.process)
        return _clock_value(process_times(task.process), which)
    if which == CPUCLOCK_SCHED:
        if target is task and task.host_thread == threading.get_ident():
            return max(time.clock_gettime_ns(time.CLOCK_THREAD_CPUTIME_ID)
                       - task.cpu_base.total_ns, 0)
        return _thread_clock_ns(target)
    return _clock_value(thread_times(target), which)
