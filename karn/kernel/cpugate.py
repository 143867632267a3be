"""The --cpus gate: at most N guest vCPUs execute at once, time-sliced.

While the process has no more threads than slots the gate is open: entering costs one
attribute check, there is no tick and nobody is kicked. Once gated, a vCPU takes a slot
before KVM_RUN (enter) and frees it after (leave); a thread serving a syscall holds none.

Who gets a freed slot: leave() hands it straight to the head of the queue. There are two
queues, served in order: threads coming back from a syscall (they blocked or were woken:
interactive work, Linux's wake-up preemption in spirit), then threads that were preempted,
yielded or are new. A tick thread, started when the gate first closes and asleep on a
condition while nobody waits (a thread start each time it closed made a pthread_create +
join cycle under --cpus 1 a host thread start dearer), kicks the holder that has run
longest once it has had its time slice (a shorter one when a woken thread waits).
A waiter the kernel interrupts (exit, a signal to deliver) returns at once: the kick that
interrupted it makes its KVM_RUN return before any guest code runs.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from karn.hints import Protocol


class Kickable(Protocol):
    def kick(self) -> None: ...


class _Holder:
    __slots__ = ("cpu", "since", "kicked")

    def __init__(self, cpu: Kickable, since: float) -> None:
        self.cpu = cpu
        self.since = since
        self.kicked = False


class _Waiter:
    __slots__ = ("cpu", "woken", "released", "cond")

    def __init__(self, cpu: Kickable, woken: bool, lock: threading.RLock) -> None:
        self.cpu = cpu
        self.woken = woken  # which queue it is in
        self.released = False
        self.cond = threading.Condition(lock)  # notified for this waiter only


class CpuGate:
    # A holder's time slice when others wait: below CPython's 5 ms GIL switch interval.
    TIMESLICE = 0.004
    # How long a holder runs before a thread woken by a syscall result preempts it.
    WAKEUP_SLICE = 0.001

    def __init__(self, slots: int, on_change: Callable[[bool], None] | None = None) -> None:
        self.slots = slots
        self.gated = False  # only while threads > slots
        # told each time the gate closes (True) or opens, under the lock: calls in order
        self._on_change = on_change
        self._threads = 0
        # Re-entrant: karn's own signal handler (SIGTERM forwarded to the guest) runs on the
        # main thread and may interrupt a task while that thread is inside thread_started.
        self._lock = threading.RLock()
        self._holders: dict[int, _Holder] = {}
        self._woken: deque[_Waiter] = deque()
        self._others: deque[_Waiter] = deque()
        self._waiting: dict[int, _Waiter] = {}
        self._demoted: set[int] = set()  # kicked or yielded: queue behind woken threads
        self._interrupts: set[int] = set()  # interrupted while not yet waiting
        self._tick = threading.Condition(self._lock)
        self._ticker: threading.Thread | None = None
        self.kicks = 0  # preemptions, for `karn inspect` and tests
        self.handoffs = 0

    # -- threads come and go ------------------------------------------------------------

    def thread_started(self, cpu: Kickable, kick_others: Callable[[Kickable], None]) -> None:
        """A new thread on `cpu` (maybe a recycled one): it queues behind woken threads.
        kick_others(cpu) kicks the vCPUs that may be in guest mode if the gate closes."""
        key = id(cpu)
        with self._lock:
            self._threads += 1
            self._interrupts.discard(key)
            self._demoted.add(key)
            if self._threads > self.slots and not self.gated:
                self.gated = True
                if self._on_change is not None:
                    self._on_change(True)
                if self._ticker is None:
                    self._ticker = threading.Thread(target=self._run_tick, name="cpugate-tick",
                                                    daemon=True)
                    self._ticker.start()
                # Threads already in guest mode hold no slot: make them come and take one.
                kick_others(cpu)

    def thread_exited(self) -> None:
        with self._lock:
            self._threads -= 1
            if self._threads <= self.slots and self.gated:
                self.gated = False
                if self._on_change is not None:
                    self._on_change(False)
                self._holders.clear()
                self._demoted.clear()
                self._interrupts.clear()
                for queue in (self._woken, self._others):
                    while queue:
                        self._release(queue.popleft())
                self._tick.notify()

    # -- the vCPU loop's side -----------------------------------------------------------

    def enter(self, cpu: Kickable) -> None:
        """Before KVM_RUN: wait for a slot (or for the kernel to interrupt the wait)."""
        if not self.gated:
            return
        key = id(cpu)
        with self._lock:
            if not self.gated or key in self._holders:
                return
            demoted = key in self._demoted
            self._demoted.discard(key)
            if key in self._interrupts:
                self._interrupts.discard(key)
                self._hold(cpu)  # over the count for a moment: its KVM_RUN exits at once
                return
            if len(self._holders) < self.slots and not self._woken and not self._others:
                self._hold(cpu)
                return
            waiter = _Waiter(cpu, not demoted, self._lock)
            queue = self._others if demoted else self._woken
            if not queue and (not demoted or not self._woken):
                self._tick.notify()  # the first waiter of its kind: a nearer deadline
            queue.append(waiter)
            self._waiting[key] = waiter
            try:
                while not waiter.released:
                    waiter.cond.wait()
            finally:
                del self._waiting[key]
                if not waiter.released:  # only if the wait itself raised
                    (self._woken if waiter.woken else self._others).remove(waiter)

    def leave(self, cpu: Kickable) -> None:
        """After KVM_RUN: free the slot and hand it to the first in line."""
        if not self.gated:
            return
        with self._lock:
            key = id(cpu)
            self._interrupts.discard(key)  # out of guest mode: the loop sees the work now
            holder = self._holders.pop(key, None)
            if holder is None:
                return
            if len(self._holders) < self.slots:
                queue = self._woken or self._others
                if queue:
                    waiter = queue.popleft()
                    self._hold(waiter.cpu)
                    self._release(waiter)
                    self.handoffs += 1
            if holder.kicked:
                self._tick.notify()  # the tick waits for its kicks to land

    # -- the kernel's side --------------------------------------------------------------

    def interrupt(self, cpu: Kickable) -> None:
        """The task was kicked to act (exit, a signal): stop waiting for a slot."""
        if not self.gated:
            return
        key = id(cpu)
        with self._lock:
            waiter = self._waiting.get(key)
            if waiter is None:
                self._interrupts.add(key)  # the next enter() does not wait
                return
            if waiter.released:
                return
            (self._woken if waiter.woken else self._others).remove(waiter)
            self._hold(cpu)
            self._release(waiter)

    def yield_slot(self, cpu: Kickable) -> None:
        """sched_yield: come back behind every thread that waits now."""
        if self.gated:
            with self._lock:
                self._demoted.add(id(cpu))

    def snapshot(self) -> dict[str, object]:
        """The gate as `karn inspect` shows it."""
        now = time.monotonic()
        with self._lock:
            return {
                "slots": self.slots,
                "gated": self.gated,
                "running_ms": sorted(round((now - h.since) * 1e3, 1)
                                     for h in self._holders.values()),
                "waiting": len(self._woken) + len(self._others),
                "kicks": self.kicks,
                "handoffs": self.handoffs,
            }

    # -- inside the lock ----------------------------------------------------------------

    def _hold(self, cpu: Kickable) -> None:
        self._holders[id(cpu)] = _Holder(cpu, time.monotonic())

    def _release(self, waiter: _Waiter) -> None:
        waiter.released = True
        waiter.cond.notify()

    def _run_tick(self) -> None:
        """Preempt while someone waits; sleep on the condition (no timer) otherwise."""
        with self._lock:
            while True:
                waiting = len(self._woken) + len(self._others)
                if not waiting or not self.gated:
                    self._tick.wait()
                    continue
                running = [h for h in self._holders.values() if not h.kicked]
                kicked = len(self._holders) - len(running)
                if not running or kicked >= waiting:
                    self._tick.wait(self.TIMESLICE)  # a kicked holder is on its way out
                    continue
                oldest = min(running, key=lambda h: h.since)
                due = oldest.since + (self.WAKEUP_SLICE if self._woken else self.TIMESLICE)
                delay = due - time.monotonic()
                if delay > 0:
                    self._tick.wait(delay)
                    continue
                oldest.kicked = True
                self._demoted.add(id(oldest.cpu))
                self.kicks += 1
                oldest.cpu.kick()
