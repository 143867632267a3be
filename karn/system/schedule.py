"""Schedules: how the host CPU is shared between partitions (docs/systems.md).

Each partition is one `karn run` monitor process; its vCPU threads are host threads, so
scheduling acts on that process:

* fair: the host's default (CFS), nothing to do.
* priority: every thread of the partition's process gets a real-time priority (threads
  created later inherit it), so a higher-priority partition keeps its CPU until it
  blocks or yields: the SCHED_FIFO rule. The policy is SCHED_RR, which differs from
  SCHED_FIFO only among threads of equal priority: those of one partition take turns
  (a time slice), so a spinning vCPU cannot starve its own monitor's other threads, e.g.
  the one that handles SIGTERM. The supervisor runs one level above every partition, so
  channels keep flowing. Needs root or CAP_SYS_NICE.
* cyclic: an ARINC 653 major frame divided into windows; a thread of the supervisor
  (SCHED_FIFO when allowed, for low jitter) sends SIGCONT to the partition whose window
  begins and SIGSTOP to the others, so a partition runs only inside its windows. When
  allowed, partitions also get nice -20: inside its window a partition takes ~99% of its
  CPU against an ordinary task (weight 88761 against 1024) rather than sharing it
  evenly with whatever else the host runs there. (A real-time policy would do better
  against other load but hits the host's RT throttling: 50 ms of every second, always
  at the same place in a frame that divides one second, i.e. in the same window.)

CPU pinning (cpu_affinity) applies under every schedule.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

from karn.errors import UsageError
from karn.system.description import Schedule

JITTER_KEEP = 10_000  # recent window-start latencies kept for status/benchmarks
WINDOW_NICE = -20  # cyclic: inside its windows a partition takes nearly all of its CPU
CAP_SYS_NICE = 23


def threads_of(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def set_affinity(pid: int, cpus: list[int]) -> None:
    for tid in threads_of(pid):
        try:
            os.sched_setaffinity(tid, cpus)
        except OSError:
            pass  # the thread ended meanwhile


def set_realtime(pid: int, priority: int) -> None:
    """SCHED_RR at priority for every thread of pid (later threads inherit it)."""
    for tid in threads_of(pid):
        try:
            os.sched_setscheduler(tid, os.SCHED_RR, os.sched_param(priority))
        except ProcessLookupError:
            pass


def set_nice(pid: int, nice: int) -> None:
    """The nice value of every thread of pid (per thread on Linux; later ones inherit),
    and of its autogroup: with sched_autogroup, nice counts only inside a session's group
    and each partition is a session of its own."""
    for tid in threads_of(pid):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:
            pass
    try:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:
        pass  # no autogroup: the threads' nice value is what counts


def raise_self(priority: int) -> None:
    """The calling thread to SCHED_FIFO priority; a clear error without the right."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        raise UsageError("the priority schedule needs root or CAP_SYS_NICE "
                         "(sched_setscheduler SCHED_FIFO: permission denied)") from None


def may_use_fifo() -> bool:
    """May this process use real-time policies? (asked without changing anything)"""
    try:
        with open("/proc/self/status") as f:
            caps = next(line for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caps.split()[1], 16) >> CAP_SYS_NICE & 1)


def try_raise_self(priority: int) -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        return False
    return True


class CyclicScheduler(threading.Thread):
    """Runs the major frame: at each window boundary, stop the partition that leaves and
    continue the one that enters. `pid_of(name)` gives a partition's current pid."""

    def __init__(self, schedule: Schedule, pid_of: Callable[[str], int | None],
                 cpus: set[int], log: Callable[[str], None]) -> None:
        super().__init__(name="karn-cyclic", daemon=True)
        self.frame = schedule.major_frame_ms / 1000
        self.events = self._events(schedule)
        self.partitions = sorted({w.partition for w in schedule.windows})
        self.pid_of = pid_of
        self.cpus = cpus  # the CPUs partitions are pinned to
        self.log = log
        self.stopping = threading.Event()
        self.lateness_us: list[float] = []
        self.frames = 0
        self.realtime = False

    @staticmethod
    def _events(schedule: Schedule) -> list[tuple[float, str | None]]:
        """(offset in s, partition to run or None for idle) at each boundary of a frame."""
        events: list[tuple[float, str | None]] = []
        windows = schedule.windows
        for i, w in enumerate(windows):
            events.append((w.start_ms / 1000, w.partition))
            end = w.start_ms + w.duration_ms
            following = windows[i + 1].start_ms if i + 1 < len(windows) else (
                schedule.major_frame_ms + windows[0].start_ms)
            if end < following - 1e-9 and end < schedule.major_frame_ms - 1e-9:
                events.append((end / 1000, None))
        if windows[0].start_ms > 0:
            events.insert(0, (0.0, None))
        return events

    def _signal(self, name: str, sig: int) -> None:
        pid = self.pid_of(name)
        if pid is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def run(self) -> None:
        self.realtime = try_raise_self(os.sched_get_priority_max(os.SCHED_FIFO))
        if not self.realtime:
            self.log("cyclic schedule without root or CAP_SYS_NICE: window switches and "
                     "partitions run at normal priority, other host load can take their time")
        others = set(range(os.cpu_count() or 1)) - self.cpus
        if others:
            os.sched_setaffinity(0, others)  # never preempt a partition to switch windows
        for part in self.partitions:
            self._signal(part, signal.SIGSTOP)
        running: str | None = None
        start = time.monotonic()
        while not self.stopping.is_set():
            base = start + self.frames * self.frame
            for offset, name in self.events:
                planned = base + offset
                delay = planned - time.monotonic()
                if delay > 0 and self.stopping.wait(delay):
                    return
                self.lateness_us.append((time.monotonic() - planned) * 1e6)
                if running is not None and running != name:
                    self._signal(running, signal.SIGSTOP)
                if name is not None:
                    self._signal(name, signal.SIGCONT)
                running = name
            self.frames += 1
            if len(self.lateness_us) > JITTER_KEEP:
                del self.lateness_us[: len(self.lateness_us) - JITTER_KEEP]

    def stop(self) -> None:
        """End the frame loop and let every partition run (so it can be stopped)."""
        self.stopping.set()
        if self.is_alive():
            self.join(timeout=2)
        for name in self.partitions:
            self._signal(name, signal.SIGCONT)

    def stats(self) -> dict:
        late = sorted(self.lateness_us)
        if not late:
            return {"frames": self.frames, "realtime": self.realtime}
        pick = lambda q: round(late[min(len(late) - 1, int(q * len(late)))], 1)  # noqa: E731
        return {"frames": self.frames, "realtime": self.realtime, "boundaries": len(late),
                "lateness_us": {"p50": pick(0.5), "p99": pick(0.99), "max": round(late[-1], 1)}}
