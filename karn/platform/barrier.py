"""A barrier over vCPUs: each one running guest code leaves guest mode once. A VM exit
serialises the vCPU's instruction fetches and orders its memory accesses, which is what a
patch of code another vCPU may be running (fastcall/patcher.py) and membarrier(2) need."""

from __future__ import annotations

import time
from collections.abc import Iterable

from karn.hints import Protocol


class GuestRunner(Protocol):
    """A vCPU as leave_guest_once sees it."""

    in_guest: bool
    exits: int

    def kick(self) -> None: ...


# Seconds a vCPU gets to leave guest mode once. One that has not by then is not running
# on a host core (a running one takes the kick within µs): it was preempted, which took
# it out of guest mode on that core, and it fetches afresh when it runs again.
LEAVE_TIMEOUT = 1.0


def leave_guest_once(cpus: Iterable[GuestRunner]) -> None:
    """Every one of cpus in guest mode leaves it once (kicked); one whose exit does not
    come within LEAVE_TIMEOUT (its host thread starved) is given up on."""
    waiting = []
    for cpu in cpus:
        if cpu.in_guest:
            waiting.append((cpu, cpu.exits))
            cpu.kick()
    deadline = time.monotonic() + LEAVE_TIMEOUT
    while waiting and time.monotonic() < deadline:
        waiting = [(cpu, n) for cpu, n in waiting if cpu.in_guest and cpu.exits == n]
        if waiting:
            time.sleep(0.0001)
