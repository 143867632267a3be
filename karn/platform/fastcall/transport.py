"""The fast syscall transport of one VM: per-vCPU slots, the patcher, the server, and what
a vCPU must do when it is stopped inside karn's entry code (settle).

A patched site jumps to a stub that hands the call to the server through the vCPU's slot
and spins for the answer (entry.S); the server serves it through the vCPU's own exit
client, so tracing, counters and policy see it as on the exit path. Whatever the server
declines, withdraws or cannot finish without blocking leaves through the exit path.

Never worse than the exit path: a stub waits only while the server's lease says it is
polling (server.py). A slot whose call was withdrawn (not taken within the budget, or the
lease ran out: the server is short of a host core), or whose calls all went past the
server for QUIET_US, is backed off: its budget is 0 and it wakes no server, so its calls
go straight to the exit path (from a stub that costs less than a `syscall` instruction),
for `skip` calls; then a probe wakes the server and lends the slot a lease. Each failed
probe doubles `skip` (to MAX_SKIP); a run of served calls resets it.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable, Iterable
from types import ModuleType

from karn import log
from karn.abi.fastcall import (
    BLOCKED_WOKEN,
    DONE,
    DONE_WORK,
    FASTMAP_BITS,
    FUTEX,
    IDLE,
    IF_FLAG,
    LAHF_FLAGS,
    OF_FLAG,
    REDO,
    REQ,
    RT_SIGPROCMASK,
    SET_ROBUST_LIST,
    SLOT_ALIVE,
    SLOT_ARGS,
    SLOT_BLOCKED,
    SLOT_BUDGET,
    SLOT_FASTMAP,
    SLOT_FLAGS,
    SLOT_GCALLS,
    SLOT_INGUEST,
    SLOT_KICKED,
    SLOT_MCALLS,
    SLOT_NBOUND,
    SLOT_NR,
    SLOT_NSLOTS,
    SLOT_RCALLS,
    SLOT_RESULT,
    SLOT_RET,
    SLOT_RHEAD,
    SLOT_SIZE,
    SLOT_SLOT0,
    SLOT_SPIN,
    SLOT_SPIN_SHARED,
    SLOT_STATE,
    SLOT_USER_HI,
    SLOT_USER_LO,
    SLOT_WADDR,
    SLOT_WBITSET,
    SPINWAIT,
    SPUN,
    TAKEN,
    WAITS,
    WITHDRAWN,
    WOKEN,
)
from karn.hints import Any, NamedTuple, Protocol
from karn.platform.fastcall import stubs
from karn.platform.fastcall.patcher import STUBS_OFFSET, CodeSpace, Patcher, RunningCpu
from karn.platform.fastcall.server import Server
from karn.platform.fastcall.slotmask import SlotMask
from karn.platform.hostload import spare_core
from karn.platform.warmup import ExitCount

BUDGET_US = 50  # a stub waits this long for an untaken request: about one exit's cost
MAX_SKIP = 256  # calls a backed-off slot sends straight to the exit path between probes
RESET_AFTER = 64  # served calls since the last back-off that end a back-off streak
# A slot whose fast calls all went past the server this long (a few exits' time: a woken
# server gets a core within it unless the host is short of cores) is backed off.
QUIET_US = 300
# A sleeping server is woken for a slot whose thread makes a fast call within this much
# time back in the guest after its last exit-path call (a loop of calls); sparser ones
# would only take a core from the guest for the server's wake-up spin. Measured from the
# return to the guest, not from exit to exit: an exit's own cost (~40 µs, far more on a
# busy host) made every call of a busy server look sparse (nginx at load 9: 0 served). The
# server is woken at once (its wake-up takes longer than the exit), the probe's lease is
# lent as the vCPU goes back to the guest (returning()): it covers the guest's next call,
# not the exit's own time.
DENSE_US = 100
# An untimed private futex wait that would block spins this long in its stub, registered
# in its slot, before the exit path: a hand-over between two threads on host cores takes
# a few µs in the guest, and a partner on its way back from a wake in the monitor (an exit
# and a host wake-up, ~60 µs) is caught only by a spin that outlasts it. Measured in turns
# (bench/fastcall.py): 80 µs against 20, ping-pong 49-54 against 146-165 µs a round on a
# quiet host, 96-363 against 306-392 with two busy loops.
SPIN_US = 80
# A shared one (pthread_join's on a thread's tid, whose wake is the thread's end in the
# monitor, SLOT_SPIN_SHARED) spins SHARED_SPIN_US while the host seems to have a core to
# spare (platform/hostload.py), long enough for a short thread's whole life: the join
# then returns without an exit or a host wake-up of the joiner (thread create+join 323
# against 427 µs in turns at load 1.2, with the workers' watch of machine.py). Else a
# quarter of SPIN_US: the join's spin at 80 made create+join 714-851 against 307-511 µs
# with two busy loops (the joiner took the core the new thread needed).
SHARED_SPIN_US = 300
# Waits that do not spin after one spun in vain: few, so that two threads handing a futex
# back and forth both spin again soon after a slow spell (with a doubling back-off each
# mostly spun while the other blocked, and both stayed on the slow path).
SPIN_SKIP = 4
# mmap(MAP_SHARED) may make memory shared with other processes (whose futex waiters
# only the monitor can wake): in-guest futex calls are off from before the call (on the
# exit path) until the monitor sees the calling thread again with no memory shared. A fork
# shares nothing new (MAP_SHARED memory is host-shared from its mmap on), a move of a
# shared range (mremap) makes it no more shared, karn has no SysV shm.
MMAP, MAP_SHARED = 9, 0x01  # MAP_SHARED_VALIDATE (0x03) has the bit too
MASK64 = (1 << 64) - 1
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_CALL = struct.Struct("<7Q")  # nr and the six arguments
_monotonic = time.monotonic


class FastClient(Protocol):
    """The kernel's side of one vCPU (kernel/threads.py TaskLoop), as the server uses it."""

    def serve_fast(self, nr: int, a0: int, a1: int, a2: int, a3: int, a4: int,
                   a5: int) -> int | None:
        """Serve a call on the server thread; None: redo it on the exit path."""
        ...

    def work_due(self) -> bool:
        """Signals to deliver or an exit requested: the answer makes the vCPU exit."""
        ...

    def attach_waiters(self, waiters: FastTransport) -> None:
        """The process's futexes learn of the waiters spinning in the slots (waiters.wake,
        .blocking) and turn in-guest futex calls on (waiters.futex_attached); a loop whose
        calls must all reach the monitor (observed) declines."""
        ...

    def count_calls(self, nr: int, calls: int) -> None:
        """Calls answered in the guest (in-guest futex calls), for the syscall counts."""
        ...

    def attach_mask(self, mask: SlotMask) -> None:
        """The thread's signal mask lives in its slot from now on (the stub answers
        rt_sigprocmask); a loop whose calls must all reach the monitor declines."""
        ...

    def detach_mask(self) -> None:
        """The thread leaves the vCPU: its mask goes back to the kernel."""
        ...


class SlotCpu(RunningCpu, Protocol):
    index: int
    regs: Any  # the registers at an exit (kvm_regs)

    def snapshot_regs(self) -> dict[str, int]: ...

    def set_context(self, regs: dict[str, int]) -> None: ...


class Counts(NamedTuple):
    """How a process's calls travelled, per transport (karn inspect)."""

    fast: int  # answered by the server in shared memory
    redone: int  # taken by the server, then redone on the exit path (they would block)
    withdrawn: int  # published, not taken in time: the stub took the exit path
    skipped: int  # fast calls a stub sent straight to the exit path (server asleep, off
    #               its core or busy, or the slot backed off)
    exit: int  # every other call: unpatched sites, calls the server never takes
    in_guest: int  # calls the stubs answered themselves: futex (wakes, woken spinning
    #                waits), set_robust_list, rt_sigprocmask


class _Slot:
    __slots__ = ("addr", "host", "gcalls_at", "lock", "client", "cpu", "fast", "redone",
                 "withdrawn", "skipped", "exit", "in_guest", "skip", "skip_left",
                 "fast_at_back_off", "fast_seen", "quiet_since", "returned_at", "wake_due",
                 "spin_left", "sharing", "robust_counted", "robust_taken", "mask_counted", "mask",
                 "unpatched")

    def __init__(self, addr: int, host: int, mask: SlotMask) -> None:
        self.addr = addr
        self.host = host  # its host address
        self.mask = mask
        self.gcalls_at = addr + SLOT_GCALLS
        self.lock = threading.Lock()  # the server's answer vs. settle on the vCPU thread
        self.client: FastClient | None = None
        self.cpu: SlotCpu | None = None
        # Counters: fast written by the server thread only, the others by the vCPU's
        # thread only (no lost updates).
        self.fast = self.redone = self.withdrawn = self.skipped = self.exit = 0
        self.unpatched = 0  # of the exits, calls by a real `syscall` (an unpatched site)
        self.in_guest = 0  # the stub's own count (SLOT_GCALLS) as far as passed on
        # Back-off, the vCPU's thread only.
        self.skip = 0  # calls to send straight to the exit path after a back-off
        self.skip_left = 0  # of those, still to come (0: not backed off)
        self.fast_at_back_off = 0
        self.fast_seen = 0  # self.fast when the current quiet spell began
        self.quiet_since = 0.0  # monotonic seconds; 0: no quiet spell
        self.returned_at = 0.0  # when its thread last went back to the guest from an exit
        self.wake_due = False  # wake the server as it goes back (returning())
        self.spin_left = 0  # futex waits not to spin (SPIN_SKIP), the vCPU's thread only
        self.sharing = False  # its last call may have made memory shared (MAP_SHARED)
        # SLOT_RCALLS as far as counted (_pass_counts) and as far as its head was taken
        # (robust_head)
        self.robust_counted = self.robust_taken = 0
        self.mask_counted = 0  # SLOT_MCALLS as far as counted


class FastTransport:
    def __init__(self, helper: ModuleType, raw: memoryview, host_base: int, slots_addr: int,
                 code: CodeSpace, user_start: int, user_end: int, fastmap: Iterable[int],
                 tsc_khz: int, guest_tsc_offset: int, inherited: Patcher | None = None) -> None:
        """inherited: a forked process's parent's patcher (forked())."""
        self._monitor_pid = os.getpid()
        self._helper = helper
        self._code = code
        self._raw = raw
        self._cas = helper.cas32
        self.host_tsc = helper.tsc
        self._tsc_khz = tsc_khz
        self.guest_tsc_offset = guest_tsc_offset
        self._host_base = host_base
        self._slots_addr = slots_addr
        self._slots: list[_Slot] = []
        self._exits_before = 0  # exits before the transport was made (warmed)
        self._fastmap = bytearray(FASTMAP_BITS // 8)
        for nr in fastmap:
            if 0 <= nr < FASTMAP_BITS:
                self._fastmap[nr // 8] |= 1 << (nr % 8)
        self._fast_nrs = frozenset(nr for nr in range(FASTMAP_BITS)  # the map, for a
                                   if self._fastmap[nr >> 3] >> (nr & 7) & 1)  # test per exit
        self._budget = max(1, tsc_khz * BUDGET_US // 1000)
        self._starting = 0  # threads launched, not bound yet (starting())
        self._spin = max(1, tsc_khz * SPIN_US // 1000)
        self._spins_allowed = True  # allow_spins
        self._spin_shared = (max(1, tsc_khz * SHARED_SPIN_US // 1000),
                             max(1, tsc_khz * SPIN_US // 4000))  # spare core, or not
        self._user = (user_start, user_end)
        self._lock = threading.Lock()
        self._publish = helper.publish64
        self._answer = helper.answer
        # In-guest futex calls: on once the process's futexes know the slots' waiters
        # (futex_attached) while no memory is shared with other processes.
        self._shared: Callable[[], bool] | None = None
        self._in_guest = False
        self.patcher = inherited.forked(self._running) if inherited is not None else \
            Patcher(raw, host_base, code, user_start, user_end, self._running)
        self.server = Server(helper, raw, slots_addr, host_base, self._serve, tsc_khz,
                             guest_tsc_offset)

    def forked(self, guest_tsc_offset: int) -> FastTransport:
        """In a forked monitor: the transport of the child's VM (its TSC offset given)
        over the same memory. The parent's patched sites and arenas are in the child's
        copy and stay; its slots, leases, back-offs, counters and server do not carry over
        (the slots are written afresh as the child's vCPUs come, the server starts at
        the first wake). The fork was made on the exit path (clone and fork are no fast
        calls), so the child's one thread starts outside karn's entry code."""
        lo, hi = self._user
        return FastTransport(self._helper, self._raw, self._host_base, self._slots_addr,
                             self._code, lo, hi, self.fast_calls(), self._tsc_khz,
                             guest_tsc_offset, inherited=self.patcher)

    def fast_calls(self) -> list[int]:
        return [nr for nr in range(FASTMAP_BITS) if self.fast_call(nr)]

    @property
    def active(self) -> bool:
        return self.patcher.enabled

    def _running(self) -> list[SlotCpu]:
        return [s.cpu for s in self._slots if s.cpu is not None and s.client is not None]

    # -- vCPUs ---------------------------------------------------------------------------

    def slot_address(self, index: int) -> int:
        """The GS base of vCPU `index`: its slot, set up on first use."""
        with self._lock:
            while len(self._slots) <= index:
                addr = self._slots_addr + len(self._slots) * SLOT_SIZE
                self._raw[addr : addr + SLOT_SIZE] = bytes(SLOT_SIZE)
                _U64.pack_into(self._raw, addr + SLOT_BUDGET, self._budget)
                _U64.pack_into(self._raw, addr + SLOT_USER_LO, self._user[0])
                _U64.pack_into(self._raw, addr + SLOT_USER_HI, self._user[1])
                self._raw[addr + SLOT_FASTMAP : addr + SLOT_FASTMAP + len(self._fastmap)] = \
                    self._fastmap
                _U64.pack_into(self._raw, addr + SLOT_SLOT0, self._slots_addr)
                self._slots.append(_Slot(addr, self._host_base + addr,
                                         SlotMask(self._raw, addr, self._host_base,
                                                  self._publish)))
                self._set_in_guest(self._slots[-1], self._in_guest)
                for slot in self._slots:  # what in-guest wakes scan
                    _U32.pack_into(self._raw, slot.addr + SLOT_NSLOTS, len(self._slots))
                self.server.set_count(len(self._slots))
            return self._slots[index].addr

    def bind(self, cpu: SlotCpu, client: FastClient, launched: bool = True) -> None:
        """cpu runs guest code for client from now on (Vcpu.run; not `launched`: a vCPU
        already running when the transport was made, Vcpu.join_fast)."""
        slot = self._slots[cpu.index]
        with self.patcher_lock():  # a patch in progress sees this vCPU or finishes first
            slot.cpu, slot.client = cpu, client
        with self._lock:
            if launched:
                self._starting = max(0, self._starting - 1)
            self._set_in_guest(slot, self._in_guest)  # (the shared spin for the load now)
        # a robust-list head the vCPU's last thread set in the guest is not this one's
        slot.robust_taken = _U64.unpack_from(self._raw, slot.addr + SLOT_RCALLS)[0]
        slot.returned_at = time.monotonic()  # its thread starts in the guest: a call soon
        # after is a dense one (a new thread's first calls)
        self._count_bound()
        client.attach_waiters(self)
        client.attach_mask(slot.mask)

    def unbind(self, cpu: SlotCpu) -> None:
        if os.getpid() != self._monitor_pid:  # a forked monitor unwinding the forking
            return  # thread of its parent's: these counts and locks are the parent's
        slot = self._slots[cpu.index]
        client = slot.client
        if client is not None:
            self._pass_counts(slot, client)
            client.detach_mask()
        with slot.lock:
            slot.client = None
        self._count_bound()
        if not any(s.client is not None for s in self._slots):
            counts = self.counts()
            robust = sum(s.robust_counted for s in self._slots)
            masks = sum(s.mask_counted for s in self._slots)
            log.info("fast syscalls: %d sites patched, %d calls served in shared memory, "
                     "%d redone on the exit path, %d withdrawn, %d skipped, %d other exits "
                     "(%d by a `syscall` instruction), %d futex calls answered in the guest, "
                     "%d set_robust_list, %d rt_sigprocmask", len(self.patcher.patched),
                     counts.fast, counts.redone, counts.withdrawn, counts.skipped, counts.exit,
                     sum(s.unpatched for s in self._slots) + self._exits_before,
                     counts.in_guest - robust - masks, robust, masks)

    def warmed(self, counted: int, count: ExitCount) -> None:
        """Made once the process was warm (platform/warmup.py): the exits this process
        made before (counted among the other exits), and the program's count towards
        WARM_EXITS with the sites that exited (the patcher's from now on)."""
        self._exits_before = counted
        self.patcher.warmed(count)

    def counts(self) -> Counts:
        slots = list(self._slots)
        counts = Counts(*(sum(getattr(s, field) for s in slots) for field in Counts._fields))
        return counts._replace(exit=counts.exit + self._exits_before)

    def patcher_lock(self) -> threading.RLock:
        return self.patcher._lock

    def fast_call(self, nr: int) -> bool:
        return 0 <= nr < FASTMAP_BITS and bool(self._fastmap[nr // 8] >> (nr % 8) & 1)

    def exit_path_call(self, index: int, nr: int, real: bool, site: int) -> None:
        """vCPU `index` makes call nr through the exit path, by a real `syscall` at site
        (real) or from a stub: count it, and back its slot off when the server did not serve it
        (the stub withdrew it, or QUIET_US passed since the slot's last served call
        while its calls were sent past an absent server); else wake the server if it
        sleeps and the call came DENSE_US or less after the slot's last return to the
        guest (its lease lent at the return: returning()). A futex wait the stub saw would
        block (WAITS) is an ordinary exit."""
        slot = self._slots[index]
        slot.wake_due = False
        if self._shared is not None:  # (inlined tests: this runs at every exit)
            if nr == MMAP or slot.sharing or not self._in_guest:
                self._watch_sharing(slot, nr)
            if _U64.unpack_from(self._raw, slot.gcalls_at)[0] != slot.in_guest:
                client = slot.client
                if client is not None:
                    self._pass_counts(slot, client)
        slot.unpatched += real
        if nr not in self._fast_nrs:
            slot.exit += 1
            return
        if real:
            slot.exit += 1  # an unpatched site: its next call may reach the server
            patched = self.patcher.known.get(site)
            if patched is False or (patched is None and not self.patcher.will_patch(site)):
                return  # unless it cannot be patched (no window) or will not be at this
                # exit (its next is one too): waking the server only takes a core from
                # this vCPU
            if not slot.skip_left:
                self._wake_if_dense(slot, _monotonic())
            return
        # from a stub (a fast call at a patched site)
        raw = self._raw
        state_at = slot.addr + SLOT_STATE
        state = _U32.unpack_from(raw, state_at)[0]
        if state != IDLE:
            _U32.pack_into(raw, state_at, IDLE)  # no request is pending now
        if state == REDO:
            slot.redone += 1  # here, not by the server: a kick may turn it into a
            return  # real syscall (settle), counted as such
        if state == WITHDRAWN:
            slot.withdrawn += 1
            self._back_off(slot)
            return
        if state in (WAITS, SPUN):  # a futex wait that blocks: the server was not
            slot.exit += 1  # asked (and is not woken: measured, waking it for the
            self._spun(slot, state == SPUN)  # wake to come slowed a hand-over on a
            return  # host short of cores)
        slot.skipped += 1
        if slot.skip_left:
            slot.skip_left -= 1
            if slot.skip_left:
                return
            self._set_budget(slot, self._budget)  # the next calls probe
            slot.quiet_since = 0.0
            self._wake_if_dense(slot, _monotonic())
        elif self._quiet_too_long(slot, now := _monotonic()):
            self._back_off(slot)
        else:
            self._wake_if_dense(slot, now)

    def _wake_if_dense(self, slot: _Slot, now: float) -> None:
        """The slot's call came DENSE_US or less after its last return to the guest: wake a
        sleeping server now (its wake-up takes longer than the exit: a head start), and
        lend the slot a lease as it goes back (returning())."""
        if now - slot.returned_at < DENSE_US / 1e6 and self.server.asleep:
            self.server.wake()
            slot.wake_due = True

    def returning(self, index: int) -> None:
        """vCPU `index` goes back to the guest after a call served on its exit path: the
        guest's time to its next call starts now; after a wake exit_path_call made, the
        probe's lease is lent now (it covers the next call, not the exit's own time)."""
        slot = self._slots[index]
        if slot.wake_due:
            slot.wake_due = False
            self._lend(slot)
        slot.returned_at = _monotonic()

    # -- futex waiters in the slots (kernel/futex.py GuestWaiters) -----------------------

    def futex_attached(self, shared: Callable[[], bool]) -> None:
        """The process's futex table wakes the slots' spinning waiters from now on (its
        wakes call wake()) and hears of its blocked ones (blocking()): in-guest futex calls
        may start, while shared() (memory shared with other processes) is False."""
        with self._lock:
            self._shared = shared
        self._update_in_guest()

    def wake(self, addr: int, count: int, bitset: int) -> int:
        """Wake up to count futex waiters spinning on addr in their stubs (bitsets
        matching); how many. From the monitor's futex wakes, after its queued waiters."""
        woken = 0
        raw, host, cas = self._raw, self._host_base, self._cas
        for slot in list(self._slots):
            if woken >= count:
                break
            at = slot.addr
            if self._waits_on(at, addr, bitset) and \
                    _U32.unpack_from(raw, at + SLOT_STATE)[0] == SPINWAIT and \
                    cas(host + at + SLOT_STATE, SPINWAIT, WOKEN) and \
                    self._waits_on(at, addr, bitset):  # not a later wait of the slot's
                woken += 1  # (that one returns a spurious 0, uncounted)
        return woken

    def _waits_on(self, at: int, addr: int, bitset: int) -> bool:
        raw = self._raw
        return _U64.unpack_from(raw, at + SLOT_WADDR)[0] == addr and \
            bool(_U32.unpack_from(raw, at + SLOT_WBITSET)[0] & bitset)

    def blocking(self, cpu: object, addr: int) -> None:
        """cpu's thread waits on the futex word addr in the monitor (0: no longer): an
        in-guest wake of addr leaves it to the monitor. A full barrier follows the store
        (the caller reads the word next)."""
        index = getattr(cpu, "index", None)
        if index is not None and 0 <= index < len(self._slots):
            self._publish(self._host_base + self._slots[index].addr + SLOT_BLOCKED, addr)

    def woken(self, cpu: object) -> None:
        """cpu's thread, waiting in the monitor, was woken: on its way back to the guest
        (a waiter in a stub may spin for its wake to come)."""
        self.blocking(cpu, BLOCKED_WOKEN)

    def starting(self, change: int = 1) -> None:
        """A guest thread was given a vCPU and will bind it soon (change -1: it will not
        after all): counted as running from now on, so that its creator's join may spin
        for its end before the thread's host thread is even scheduled."""
        with self._lock:
            self._starting = max(0, self._starting + change)
        self._count_bound()

    def _count_bound(self) -> None:
        """The threads running on the slots' vCPUs (or about to), in every slot: a stub
        spins for a futex wake only while some other thread is not waiting in the
        monitor."""
        with self._lock:
            bound = sum(1 for s in self._slots if s.client is not None) + self._starting
            for slot in self._slots:
                _U32.pack_into(self._raw, slot.addr + SLOT_NBOUND, bound)

    def _watch_sharing(self, slot: _Slot, nr: int) -> None:
        """Before call nr of the slot's thread (its previous call is over): in-guest wakes
        stop before a call that may share memory with another process, until the monitor
        sees the thread again and no memory is shared."""
        cpu = slot.cpu
        was = slot.sharing
        slot.sharing = nr == MMAP and cpu is not None and bool(cpu.regs.r10 & MAP_SHARED)
        if was or slot.sharing or not self._in_guest:
            self._update_in_guest()

    def _update_in_guest(self) -> None:
        with self._lock:
            shared = self._shared
            on = shared is not None and not shared() and \
                not any(s.sharing for s in self._slots)
            if on == self._in_guest:
                return
            self._in_guest = on
            for slot in self._slots:
                self._set_in_guest(slot, on)

    def allow_spins(self, on: bool) -> None:
        """Futex waits spin in their stubs (SLOT_SPIN, SLOT_SPIN_SHARED) only while on:
        off while the process's threads outnumber its CPU slots (kernel/cpugate.py), as a
        waiter spinning for a partner holds the slot the partner needs to run (thread
        create+join under the default --cpus 1: ~1 ms, the join's spin in vain each time)."""
        with self._lock:
            self._spins_allowed = on
            for slot in self._slots:
                self._set_in_guest(slot, self._in_guest)

    def _set_in_guest(self, slot: _Slot, on: bool) -> None:
        spin = on and not slot.spin_left and self._spins_allowed
        _U32.pack_into(self._raw, slot.addr + SLOT_INGUEST, int(on))
        _U64.pack_into(self._raw, slot.addr + SLOT_SPIN, self._spin if spin else 0)
        _U64.pack_into(self._raw, slot.addr + SLOT_SPIN_SHARED,
                       self._spin_shared[0 if spare_core() else 1] if spin else 0)

    def _spun(self, slot: _Slot, in_vain: bool) -> None:
        """A futex wait blocks (it spun in vain, or did not spin): after a spin in vain
        the slot's next SPIN_SKIP waits do not spin; they count down here."""
        if in_vain:
            slot.spin_left = SPIN_SKIP
        elif slot.spin_left:
            slot.spin_left -= 1
        else:
            return
        self._set_in_guest(slot, self._in_guest)

    def _pass_counts(self, slot: _Slot, client: FastClient) -> None:
        """Pass the calls the slot's stub answered in the guest on to the kernel's counts
        (on the vCPU's own thread, or once it left the guest)."""
        answered = _U64.unpack_from(self._raw, slot.addr + SLOT_GCALLS)[0]
        if answered != slot.in_guest:
            robust = _U64.unpack_from(self._raw, slot.addr + SLOT_RCALLS)[0]
            heads = (robust - slot.robust_counted) & MASK64
            if heads:
                client.count_calls(SET_ROBUST_LIST, heads)
                slot.robust_counted = robust
            masked = _U64.unpack_from(self._raw, slot.addr + SLOT_MCALLS)[0]
            masks = (masked - slot.mask_counted) & MASK64
            if masks:
                client.count_calls(RT_SIGPROCMASK, masks)
                slot.mask_counted = masked
            futex = ((answered - slot.in_guest) & MASK64) - heads - masks
            if futex > 0:  # (a kick between the stub's two counts puts the thread back
                client.count_calls(FUTEX, futex)  # at its site: one futex too many)
            slot.in_guest = answered

    def robust_head(self, cpu: object) -> int | None:
        """The head the last set_robust_list answered in cpu's slot gave, if one was made
        there since the last look (None: none), for the slot's thread, stopped in the
        monitor or ended; the monitor's own set_robust_list looks first, so the newest
        call wins."""
        index = getattr(cpu, "index", None)
        if index is None or not 0 <= index < len(self._slots):
            return None
        slot = self._slots[index]
        calls = _U64.unpack_from(self._raw, slot.addr + SLOT_RCALLS)[0]
        if calls == slot.robust_taken:
            return None
        slot.robust_taken = calls
        return _U64.unpack_from(self._raw, slot.addr + SLOT_RHEAD)[0]

    def _lend(self, slot: _Slot) -> None:
        """After a wake of the server: give the slot a lease of the budget's length in its
        name: the next call waits that long for the server to get a core and take it
        (served: the fast path is back; withdrawn: the slot backs off further)."""
        now = (self.host_tsc() + self.guest_tsc_offset) & MASK64
        _U64.pack_into(self._raw, slot.addr + SLOT_ALIVE, now + self._budget)

    @staticmethod
    def _quiet_too_long(slot: _Slot, now: float) -> bool:
        """The slot's calls went past the server for more than QUIET_US since it last
        served one (or since this quiet spell began); now: time.monotonic()."""
        if slot.fast != slot.fast_seen or not slot.quiet_since:
            slot.fast_seen, slot.quiet_since = slot.fast, now
            return False
        return now - slot.quiet_since > QUIET_US / 1e6

    def _back_off(self, slot: _Slot) -> None:
        """Send the slot's next `skip` calls straight to the exit path: 1, doubling with
        every failed probe to MAX_SKIP, back to 1 after RESET_AFTER served calls."""
        if slot.fast - slot.fast_at_back_off >= RESET_AFTER:
            slot.skip = 0
        slot.skip = min(MAX_SKIP, max(1, slot.skip * 2))
        slot.skip_left = slot.skip
        slot.fast_at_back_off = slot.fast
        self._set_budget(slot, 0)

    def _set_budget(self, slot: _Slot, ticks: int) -> None:
        _U64.pack_into(self._raw, slot.addr + SLOT_BUDGET, ticks)

    def slot_nr(self, index: int) -> int:
        return _U64.unpack_from(self._raw, self._slots[index].addr + SLOT_NR)[0]

    # -- the server side -----------------------------------------------------------------

    def _serve(self, index: int) -> None:
        slot = self._slots[index]
        call = _CALL.unpack_from(self._raw, slot.addr + SLOT_NR)
        nr = call[0]
        client = slot.client
        result = None
        if slot.sharing:  # its last call is over
            slot.sharing = False
            self._update_in_guest()
        if client is not None and nr in self._fast_nrs:  # not the slot's map: guest data
            result = client.serve_fast(*call)
            if nr == MMAP and call[4] & MAP_SHARED and self._shared is not None:
                self._update_in_guest()  # before the answer: memory shared now stops them
        with slot.lock:  # (settle: a kick for work after work_due() waits for the answer)
            if result is None:
                state, result = REDO, 0
            else:
                state = DONE_WORK if client is not None and client.work_due() else DONE
                slot.fast += 1
            # the lease renewed too: the server goes straight back to polling, while a
            # serve longer than the lease (an open, a send) had let it run out, and the
            # caller's next call went past it
            self._answer(slot.host, SLOT_STATE, SLOT_ALIVE, SLOT_RESULT,
                         self.server.lease_ahead, result, state)

    # -- a vCPU stopped inside the entry code ---------------------------------------------

    def in_entry(self, rip: int) -> bool:
        arena = self.patcher.arena_of(rip)
        return arena is not None and rip - arena.start < len(stubs.ENTRY)

    def settle(self, cpu: SlotCpu) -> int:
        """cpu was kicked out of guest mode. If it stopped in karn's code, put it where a
        signal may be delivered: before the call (back at the site, the call not made:
        a handler returns to the `syscall` instruction) or after it (answered: the
        result loaded as the stub would). Returns the call's number in the second case,
        -1 otherwise. A call the server is serving is left alone: its answer will say
        that work is due."""
        rip = cpu.regs.rip
        arena = self.patcher.arena_of(rip)
        if arena is None:  # (the common kick: every register read only past this test)
            return -1
        regs = cpu.snapshot_regs()
        offset = rip - arena.start
        if offset >= len(stubs.ENTRY):  # a per-site stub: nothing done yet
            stub = offset - (offset - STUBS_OFFSET) % stubs.SITE_STUB_STRIDE
            site = arena.sites.get(arena.start + stub)
            if site is not None:
                regs["rip"] = site.resume_at(offset - stub)  # the window replays the rest
                cpu.set_context(regs)
            return -1
        slot = self._slots[cpu.index]
        addr = slot.addr
        raw = self._raw
        if stubs.WAKE_SCAN <= offset < stubs.WAKE_END:  # an in-guest wake: it may have
            _U32.pack_into(raw, addr + SLOT_KICKED, 1)  # woken some already; it finishes
            return -1  # and leaves through WORK_PORT
        if stubs.WAKE_END <= offset < stubs.WAKE_TAIL:
            return self._answered(cpu, regs, addr)
        if stubs.MASK_MADE <= offset < stubs.MASK_END:  # an in-guest rt_sigprocmask,
            if offset < stubs.MASK_MCOUNTED:  # made: counted as the stub would
                self._bump(addr + SLOT_MCALLS)
            if offset < stubs.MASK_COUNTED:
                self._bump(addr + SLOT_GCALLS)
            return self._answered(cpu, regs, addr)
        with slot.lock:
            state = _U32.unpack_from(raw, addr + SLOT_STATE)[0]
            if stubs.PUBLISHED <= offset < stubs.SLOW:  # spinning: the state says
                if state == TAKEN:
                    return -1
                if state == REQ and not self._cas(self._host_base + addr, REQ, IDLE):
                    return -1  # the server took it just now
                if state == SPINWAIT and \
                        self._cas(self._host_base + addr, SPINWAIT, IDLE):
                    state = IDLE  # no longer a waiter: back at the site, the call not made
                elif state in (SPINWAIT, WOKEN):  # a wake ended it: the wait returns 0
                    if offset < stubs.WOKEN_COUNTED:
                        self._bump(addr + SLOT_GCALLS)
                    _U64.pack_into(raw, addr + SLOT_RESULT, 0)
                    return self._answered(cpu, regs, addr)
                if state in (DONE, DONE_WORK):
                    return self._answered(cpu, regs, addr)
            elif offset >= stubs.DONE_WORK:
                return self._answered(cpu, regs, addr)
            self._at_site(cpu, regs, addr, offset)
            return -1

    def _bump(self, at: int) -> None:
        """A slot counter the stub would have incremented had it not been kicked."""
        _U64.pack_into(self._raw, at, (_U64.unpack_from(self._raw, at)[0] + 1) & MASK64)

    def _flags(self, addr: int) -> tuple[int, int]:
        """(lahf byte, OF) the stub saved."""
        value = struct.unpack_from("<H", self._raw, addr + SLOT_FLAGS)[0]
        return value >> 8, value & 1

    def _with_flags(self, regs: dict[str, int], addr: int) -> None:
        lahf, of = self._flags(addr)
        regs["rflags"] = (regs["rflags"] & ~(LAHF_FLAGS | OF_FLAG)) | (lahf & LAHF_FLAGS) \
            | (OF_FLAG if of else 0)

    def _at_site(self, cpu: SlotCpu, regs: dict[str, int], addr: int, offset: int) -> None:
        raw = self._raw
        if offset > 0:
            regs["rax"] = _U64.unpack_from(raw, addr + SLOT_NR)[0]
        if offset >= stubs.SAVED:
            regs["rdx"] = _U64.unpack_from(raw, addr + SLOT_ARGS + 16)[0]
            regs["rcx"] = _U64.unpack_from(raw, addr + SLOT_RET)[0]  # futex code uses rcx
            self._with_flags(regs, addr)
        regs["rip"] = self.patcher.restart_at((regs["rcx"] - 2) & MASK64)
        _U32.pack_into(raw, addr + SLOT_STATE, IDLE)
        cpu.set_context(regs)

    def _answered(self, cpu: SlotCpu, regs: dict[str, int], addr: int) -> int:
        raw = self._raw
        ret = _U64.unpack_from(raw, addr + SLOT_RET)[0]
        lahf, of = self._flags(addr)
        regs.update(
            rax=_U64.unpack_from(raw, addr + SLOT_RESULT)[0], rcx=ret, rip=ret,
            rdx=_U64.unpack_from(raw, addr + SLOT_ARGS + 16)[0],
            r11=(lahf & 0xFF) | (OF_FLAG if of else 0) | IF_FLAG,
        )
        self._with_flags(regs, addr)
        _U32.pack_into(raw, addr + SLOT_STATE, IDLE)
        cpu.set_context(regs)
        return _U64.unpack_from(raw, addr + SLOT_NR)[0]
