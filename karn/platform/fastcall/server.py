"""The fast transport's server thread: one per process, polling every vCPU's slot with the
GIL released (the C helper _fastpoll), serving what it takes through a callback.

Adaptive: it spins while requests come and sleeps after IDLE_US without one, in C, so a
wake from the exit path (wake()) needs no GIL hand-over. While it polls it renews a lease
in every slot (SLOT_ALIVE: a guest TSC LEASE_US ahead); a stub waits for it only while the
lease holds, so when the server sleeps (the lease is 0), is busy serving another slot, or
was put off its core by the host's scheduler, calls go straight to the exit path instead
of spinning for nothing. An idle or blocked guest costs no host core, and while it polls
with nothing to do it yields its core every YIELD_US to whatever else wants it there.
"""

from __future__ import annotations

import _thread
import ctypes
import struct
import threading
import time
from collections.abc import Callable
from types import ModuleType

from karn import log
from karn.abi.fastcall import SLOT_ALIVE, SLOT_SIZE

IDLE_US = 200  # spin this long without a request before sleeping, after serving one
# and this long once woken or back on a core: its callers went to the exit path
# meanwhile (a wake comes from one), and the next call comes after the rest of that exit
# (~50-150 µs of Python on a busy host). With 50 a server that got a core at once had
# gone back to sleep by then: the probe waited in vain on the lease lent to it, and its
# slot backed off, up to 256 calls at a time (redis under redis-benchmark: 45-70k of
# ~160k calls went past the server, against 13-23k with 300; docs/benchmarks.md). It
# costs a futex ping-pong ~10 µs a round on a quiet host (the spin takes a core from the
# two threads; 150 cost as much and did less for redis).
COLD_US = 300
# A lease covers a serve's usual few µs (the next call comes soon after an answer) and
# bounds what a stub spends waiting for a server that stopped polling.
LEASE_US = 20
# Idle this long, the poller yields its host core (_fastpoll.c lend_core), keeping its
# leases: a client on the same host (redis-benchmark, wrk) woken by the last answer runs
# at once instead of taking the guest's core or a slice of the server's later. A yield
# that kept it off longer than YIELD_LONG_US met a busy loop: yields stop for
# YIELD_PAUSE_US, twice as long when another comes soon after (to 64 times). Measured in
# turns (docs/benchmarks.md, session 19): redis-benchmark 25-60% more requests/s, nginx
# ~5%; beside two busy loops a getpid loop took 58 µs a call against 10 with no pause,
# 32 against 12 with a 2 ms one, 7.5 against 11.7 with this; with 300 µs for "long",
# redis lost most of its gain.
YIELD_US = 5
YIELD_LONG_US = 1500
YIELD_PAUSE_US = 10_000
ASLEEP, AWAKE, STOPPED = 0, 1, 2  # the bell (_fastpoll.c struct control)
HELPER_ABI = 3  # _fastpoll.c's: poll() yields


def load_helper() -> ModuleType | None:
    """The C helper, or None (built by `pip install`, optional; needs a C compiler; a
    build of an older source, whose ABI differs, counts as none)."""
    try:
        helper = __import__("karn.platform.fastcall._fastpoll", fromlist=("ABI",))
    except ImportError:
        return None
    return helper if getattr(helper, "ABI", None) == HELPER_ABI else None


class Server:
    def __init__(self, helper: ModuleType, raw: memoryview, slots_addr: int, host_base: int,
                 serve: Callable[[int], None], tsc_khz: int, guest_offset: int) -> None:
        """guest_offset: the guest's TSC minus the host's (0 under PVM)."""
        self._poll = helper.poll
        self._wake = helper.wake
        self._idle_ticks = tsc_khz * IDLE_US // 1000
        self._cold_ticks = tsc_khz * COLD_US // 1000
        self._lease_ticks = tsc_khz * LEASE_US // 1000
        self._yield_ticks = tsc_khz * YIELD_US // 1000
        self._long_ticks = tsc_khz * YIELD_LONG_US // 1000
        self._pause_ticks = tsc_khz * YIELD_PAUSE_US // 1000
        self._guest_offset = guest_offset % (1 << 64)
        # a lease given at host TSC t runs to guest TSC t + lease_ahead (mod 2^64)
        self.lease_ahead = (guest_offset + self._lease_ticks) % (1 << 64)
        self._raw = raw
        self._slots = slots_addr  # guest address of slot 0
        self._host_slots = host_base + slots_addr  # the same, as a host address
        # bell, slots in use (asleep until the first wake starts the thread); the
        # poller's yield state (two u64)
        self._control = (ctypes.c_uint32 * 6)(ASLEEP, 0)
        self._control_addr = ctypes.addressof(self._control)
        self._serve = serve
        self._started = False
        self._start_lock = threading.Lock()
        # The thread's CPU clock, taken by the thread itself: a clock id names the kernel
        # thread and fails once it ends, where a pthread_t of an ended thread is unsafe.
        self._clock: int | None = None
        self._cpu_ns = 0

    @property
    def asleep(self) -> bool:
        return self._control[0] == ASLEEP

    def set_count(self, count: int) -> None:
        """Slots in use (vCPUs created): the poller reads it every round."""
        self._control[1] = count


    def cpu_ns(self) -> int:
        """The host CPU time of the server's thread (polling included): 0 before it starts,
        its last reading once it ended."""
        if self._clock is not None:
            try:
                self._cpu_ns = time.clock_gettime_ns(self._clock)
            except OSError:  # the thread ended (a stopped server): its clock with it
                pass
        return self._cpu_ns

    def wake(self) -> None:
        """From the exit path: the guest's next calls may wait for the server (once it
        polls and its lease says so). The first wake starts the thread: a process whose
        fast calls never come close together (a short-lived child of a shell) makes no
        thread, and no first poll takes a core from its vCPU."""
        if not self._started:
            with self._start_lock:
                if not self._started:
                    self._control[0] = AWAKE
                    # Not threading.Thread: its start() waits until the thread runs
                    # (1-2.5 ms on a busy host), here on the guest's exit path.
                    _thread.start_new_thread(self._run, ())
                    self._started = True
                    return
        self._wake(self._control_addr)

    def _run(self) -> None:
        self._clock = time.pthread_getcpuclockid(threading.get_ident())
        start = 0
        poll, serve = self._poll, self._serve
        try:
            while True:
                taken = poll(self._host_slots, SLOT_SIZE, self._control_addr, start,
                             self._idle_ticks, self._cold_ticks, SLOT_ALIVE,
                             self._guest_offset, self._lease_ticks, self._yield_ticks,
                             self._long_ticks, self._pause_ticks)
                start = taken + 1
                serve(taken)
        except BaseException as err:  # a monitor bug: stubs fall back to the exit path
            self._control[0] = STOPPED
            pack, raw = struct.pack_into, self._raw
            for i in range(self._control[1]):
                pack("<Q", raw, self._slots + i * SLOT_SIZE + SLOT_ALIVE, 0)
            log.error("fast-syscall server stopped (%s: %s); every call now exits",
                      type(err).__name__, err)
