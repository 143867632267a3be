"""The --cpus gate: at most N guest vCPUs execute at once; waiters preempt long holders.

While the process has no more threads than slots the gate is open and costs one
attribute check per VM entry (measured: the locked path adds ~8 us to every syscall).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class CpuGate:
    TIMESLICE = 0.01

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.gated = False  # only while threads > slots
        self._threads = 0
        self._cond = threading.Condition()
        self._holders: dict[int, tuple[object, float]] = {}
        # Waiters take free slots in arrival order: a preempted thread that comes straight
        # back queues behind the others instead of taking its slot again (starvation).
        self._queue: deque[object] = deque()

    def thread_started(self, kick_all: Callable[[], None]) -> None:
        with self._cond:
            self._threads += 1
            if self._threads > self.slots and not self.gated:
                self.gated = True
                # Threads already in guest mode hold no slot: make them come and take one.
                kick_all()

    def thread_exited(self) -> None:
        with self._cond:
            self._threads -= 1
            if self._threads <= self.slots and self.gated:
                self.gated = False
                self._holders.clear()
                self._cond.notify_all()

    def enter(self, cpu: object) -> None:
        if not self.gated:
            return
        with self._cond:
            queue = self._queue
            queue.append(cpu)
            try:
                while self.gated and (len(self._holders) >= self.slots or queue[0] is not cpu):
                    if not self._cond.wait(self.TIMESLICE):
                        self._preempt_one()
            finally:
                queue.remove(cpu)
            if self.gated:
                self._holders[id(cpu)] = (cpu, time.monotonic())
                if queue:
                    self._cond.notify_all()  # the next in line may take another free slot

    def leave(self, cpu: object) -> None:
        if not self.gated:
            return
        with self._cond:
            self._holders.pop(id(cpu), None)
            if self._queue:
                self._cond.notify_all()  # only the first in line takes the slot

    def _preempt_one(self) -> None:
        """Kick the holder that has run longest, if it has had a full time slice."""
        now = time.monotonic()
        oldest = min(self._holders.values(), key=lambda h: h[1], default=None)
        if oldest is not None and now - oldest[1] >= self.TIMESLICE:
            oldest[0].kick()  # type: ignore[attr-defined]
