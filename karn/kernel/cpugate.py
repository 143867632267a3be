"""The --cpus gate: at most N guest vCPUs execute at once; waiters preempt long holders."""

from __future__ import annotations

import threading
import time


class CpuGate:
    """At most `slots` vCPUs inside KVM_RUN at once (--cpus); waiters preempt holders."""

    TIMESLICE = 0.01

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._cond = threading.Condition()
        self._holders: dict[int, tuple[object, float]] = {}
        self._waiting = 0

    def enter(self, cpu: object) -> None:
        with self._cond:
            while len(self._holders) >= self.slots:
                self._waiting += 1
                try:
                    if not self._cond.wait(self.TIMESLICE):
                        self._preempt_one()
                finally:
                    self._waiting -= 1
            self._holders[id(cpu)] = (cpu, time.monotonic())

    def leave(self, cpu: object) -> None:
        with self._cond:
            self._holders.pop(id(cpu), None)
            if self._waiting:
                self._cond.notify()

    def _preempt_one(self) -> None:
        now = time.monotonic()
        for cpu, since in self._holders.values():
            if now - since >= self.TIMESLICE:
                cpu.kick()  # type: ignore[attr-defined]
                return
