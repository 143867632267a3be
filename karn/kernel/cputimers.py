"""Timers on CPU-time clocks (ITIMER_VIRTUAL, ITIMER_PROF, timer_create on a CPU clock).

No host timer follows the guest's CPU time, so one host thread per process samples the
clocks of the armed timers (cputime.py) and fires those due, sleeping until the soonest
could be: a CPU clock advances at most as fast as real time times the guest's running
threads. Expiries are therefore late by up to a sampling period (TICK), about as coarse
as Linux's, which checks CPU timers at its scheduler tick.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from karn.kernel.timers import time_left

NSEC = 1_000_000_000
TICK = 0.004  # Linux checks CPU timers each tick (4 ms at HZ=250)
MAX_SLEEP = 0.05


class CpuTimer:
    """One timer on a CPU clock: `clock` reads it (ns), `fire` queues the signal. As
    timers.Timer: seconds for deadline and interval, an overrun count."""

    __slots__ = ("fire", "clock", "deadline", "interval", "overrun")

    def __init__(self, fire: Callable[[CpuTimer], None], clock: Callable[[], int]) -> None:
        self.fire = fire
        self.clock = clock
        self.deadline: float | None = None  # seconds on its own clock
        self.interval = 0.0
        self.overrun = 0

    def now(self) -> float:
        return self.clock() / NSEC

    def remaining(self) -> float:
        if self.deadline is None:
            return 0.0
        return time_left(self.deadline - self.now(), self.interval)


class CpuTimerService:
    def __init__(self, threads: Callable[[], int]) -> None:
        self._threads = threads  # how many guest threads may be running
        self._cond = threading.Condition()
        self._armed: set[CpuTimer] = set()
        self._thread: threading.Thread | None = None

    def arm(self, timer: CpuTimer, deadline: float | None, interval: float) -> None:
        """deadline: seconds on the timer's clock, None to disarm."""
        with self._cond:
            timer.deadline = deadline
            timer.interval = interval
            timer.overrun = 0
            if deadline is None:
                self._armed.discard(timer)
                return
            self._armed.add(timer)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="karn-cputimers",
                                                daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            due: list[CpuTimer] = []
            with self._cond:
                while not self._armed:
                    self._cond.wait()
                soonest = MAX_SLEEP
                for timer in list(self._armed):
                    deadline = timer.deadline
                    if deadline is None:
                        continue
                    now = timer.now()
                    if now >= deadline:
                        due.append(timer)
                        if timer.interval > 0:
                            missed = int((now - deadline) // timer.interval)
                            timer.overrun = missed
                            timer.deadline = deadline + (missed + 1) * timer.interval
                        else:
                            timer.deadline = None
                            self._armed.discard(timer)
                        continue
                    wait = (deadline - now) / max(self._threads(), 1)
                    soonest = min(soonest, max(wait, TICK))
                if not due:
                    self._cond.wait(soonest)
            for timer in due:
                timer.fire(timer)
