"""Whether the host seems to have a core to spare: the test behind karn's short spins
(a waiting thread that spins instead of sleeping saves a host sleep and wake-up, ~50-100
µs here, but takes a core that another thread may need)."""

from __future__ import annotations

import ctypes
import os
import resource
import struct
import time
from collections.abc import Callable

LOAD_EVERY = 0.1  # seconds between looks at the load average
SYSINFO_SIZE = 112  # struct sysinfo on x86-64; the load averages follow a long at 0
LOADS = struct.Struct("<Q")


class SpareCore:
    """The host's 1-minute load average (sysinfo(2): allowed in the monitor's sandbox,
    unlike /proc/loadavg) under `per_core` times its cores, looked at every LOAD_EVERY
    seconds; and with `preemptions`, this process's threads preempted (involuntary
    context switches, getrusage) fewer times a second than that since the last look. The
    load average lags a minute and counts karn's own threads; preemptions say at once
    that another process wants the cores karn's threads run on (measured with a thread
    create+join loop: 17-129 a second on a quiet host, ~3,000 beside one busy loop).
    Unknown (sysinfo failed): yes."""

    def __init__(self, per_core: float, preemptions: float | None = None) -> None:
        self.when = -LOAD_EVERY
        self.spare = True
        self.limit = per_core * len(os.sched_getaffinity(0))
        self.buffer = ctypes.create_string_buffer(SYSINFO_SIZE)
        self.sysinfo: Callable[[ctypes.Array[ctypes.c_char]], int] | None = None
        self.preemptions = preemptions
        self.preempted: int | None = None  # at the last look; None: none yet
        self.clock = time.monotonic
        self.count_preempted = _preempted

    def __call__(self) -> bool:
        now = self.clock()
        if now - self.when < LOAD_EVERY:
            return self.spare
        last, self.when = self.when, now
        if self.sysinfo is None:
            self.sysinfo = ctypes.CDLL(None).sysinfo
        if self.sysinfo(self.buffer) == 0:
            load = LOADS.unpack_from(self.buffer.raw, 8)[0] / (1 << 16)  # SI_LOAD_SHIFT
            self.spare = load < self.limit
        if self.preemptions is not None:
            preempted = self.count_preempted()
            if self.preempted is None:  # no until an interval is measured: the one before
                self.spare = False  # the first look is the monitor's start-up alone
            elif (preempted - self.preempted) / (now - last) >= self.preemptions:
                self.spare = False
            self.preempted = preempted
        return self.spare


def _preempted() -> int:
    """This process's threads' involuntary context switches so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


# For the spins of a guest's threads waiting on each other (a joiner spinning in its stub,
# a vCPU's host thread watching for its next guest thread): the load under 0.75 per core
# (1.5 on two cores), and karn's threads preempted fewer than 1,000 times a second: both
# threads of the hand-over need a core of their own. With one busy loop beside a thread
# create+join loop, the join's long spin made a cycle 623 against 362 µs (the load
# average said 1.3: spare); on a quiet host 317 against 465.
spare_core = SpareCore(per_core=0.75, preemptions=1000)
