"""Interval timers (alarm, setitimer, timer_create): one host thread per process fires
them by queueing signals, as the kernel's hrtimers would."""

from __future__ import annotations

import itertools
import struct
import threading
import time
from collections.abc import Callable

from karn.hints import TYPE_CHECKING
from karn.kernel.blocking import MAX_HOST_WAIT

if TYPE_CHECKING:
    import heapq


class Timer:
    """One armed-or-not timer; `fire` queues its signal (set by whoever creates it)."""

    __slots__ = ("fire", "deadline", "interval", "generation", "overrun")

    def __init__(self, fire: Callable[[Timer], None]) -> None:
        self.fire = fire
        self.deadline: float | None = None  # monotonic seconds
        self.interval = 0.0
        self.generation = 0
        self.overrun = 0

    def remaining(self) -> float:
        if self.deadline is None:
            return 0.0
        return time_left(self.deadline - time.monotonic(), self.interval)


def time_left(left: float, interval: float) -> float:
    """What getitimer/timer_gettime report for a timer `left` seconds from its deadline:
    a periodic timer past it that its service thread has not re-armed yet reports the
    time to its next expiry, never 0 (0 would read as disarmed)."""
    if left <= 0 and interval > 0:
        left %= interval
        return left or interval
    return max(left, 0.0)


class TimerService:
    """The timers of a process, on a thread of their own started at the first arming,
    which imports the heap's C module then (~0.3 ms that a run without timers saves;
    heapq.py would add another ~0.3)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, int, Timer]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, timer: Timer, deadline: float | None, interval: float) -> None:
        with self._cond:
            timer.generation += 1
            timer.deadline = deadline
            timer.interval = interval
            timer.overrun = 0
            if deadline is not None:
                if self._thread is None:
                    global heapq
                    import _heapq as heapq
                    self._thread = threading.Thread(target=self._run, name="karn-timers",
                                                    daemon=True)
                    self._thread.start()
                heapq.heappush(self._heap, (deadline, next(self._order), timer.generation, timer))
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    while self._heap and self._heap[0][2] != self._heap[0][3].generation:
                        heapq.heappop(self._heap)  # disarmed or re-armed since
                    if self._heap and self._heap[0][0] <= now:
                        break
                    self._cond.wait(min(self._heap[0][0] - now, MAX_HOST_WAIT)
                                    if self._heap else None)
                deadline, _, _, timer = heapq.heappop(self._heap)
                if timer.interval > 0:
                    missed = int((now - deadline) // timer.interval)
                    timer.overrun = missed
                    timer.deadline = deadline + (missed + 1) * timer.interval
                    heapq.heappush(self._heap, (timer.deadline, next(self._order),
                                                timer.generation, timer))
                else:
                    timer.deadline = None
            timer.fire(timer)


ITIMERVAL = struct.Struct("<qqqq")  # it_interval {sec, usec}, it_value {sec, usec}
ITIMERSPEC = struct.Struct("<qqqq")  # it_interval {sec, nsec}, it_value {sec, nsec}
