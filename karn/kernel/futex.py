"""futex(2): wait queues keyed by guest address, shared by all threads of the process.

A word in memory shared with other processes (MAP_SHARED, platform/memory.py) is a host
futex instead, whatever the private flag says: each process is its own monitor, and the
host kernel matches a wait in one with a wake in another by the shared page, with no
round trip through karn. A thread in a host wait is interrupted by its vCPU kick (a host
signal: EINTR); a kick landing just before the wait starts is seen at the next slice.

With the fast transport, some waiters never reach this table: a wait spins a while in its
stub in the guest, registered in its vCPU's slot, and a wake in another stub ends it
without the monitor (platform/fastcall/entry.S). Those GuestWaiters are woken here too,
after the queued ones; and a waiter queued here says so in its slot (blocking) before it
reads the word, so that an in-guest wake of that word is left to this table.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable

from karn import log
from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING, Protocol
from karn.kernel.blocking import Interrupted

if TYPE_CHECKING:
    from karn.kernel.process import Task

FUTEX_BITSET_MATCH_ANY = 0xFFFFFFFF
ROBUST_LIST_HEAD_SIZE = 24  # set_robust_list's only valid length
# The longest single host wait on a shared word: how late at worst a signal or an exit
# that raced with the start of the wait is noticed.
SHARED_WAIT_SLICE = 0.1


class SharedWords(Protocol):
    """Host futexes on the words of memory shared across processes (platform/memory.py);
    errors are SyscallError with the host's errno."""

    def shared_word(self, addr: int) -> bool: ...

    def has_shared_words(self) -> bool: ...

    def futex_wait(self, addr: int, expected: int, until: float, bitset: int) -> None: ...

    def futex_wake(self, addr: int, count: int, bitset: int) -> int: ...

    def futex_requeue(self, addr: int, count: int, addr2: int, requeue: int,
                      expected: int | None) -> int: ...

    def futex_wake_op(self, addr: int, count: int, addr2: int, count2: int, op: int) -> int: ...


class GuestWaiters(Protocol):
    """Futex waiters spinning in the guest (the fast transport, platform/fastcall)."""

    def wake(self, addr: int, count: int, bitset: int) -> int:
        """Wake up to count of those waiting on addr (bitsets matching); how many."""
        ...

    def blocking(self, cpu: object, addr: int) -> None:
        """The thread of vCPU cpu waits on addr in this table (0: no longer); the store
        is visible to the guest before the caller reads the word."""
        ...

    def woken(self, cpu: object) -> None:
        """The thread of vCPU cpu was woken here: on its way back to the guest."""
        ...

    def futex_attached(self, shared: Callable[[], bool]) -> None:
        """This table wakes them from now on; shared(): memory is shared with other
        processes (whose waiters only the host kernel sees)."""
        ...

    def robust_head(self, cpu: object) -> int | None:
        """The head of a set_robust_list answered in the guest for vCPU cpu's thread since
        the last look, or None."""
        ...


class _Waiter:
    __slots__ = ("task", "addr", "bitset", "woken")

    def __init__(self, task: Task, addr: int, bitset: int) -> None:
        self.task = task
        self.addr = addr  # the queue it is in (a requeue moves it)
        self.bitset = bitset
        self.woken = False


class FutexTable:
    def __init__(self, words: SharedWords | None = None) -> None:
        self._lock = threading.Lock()
        self._queues: dict[int, list[_Waiter]] = {}
        self._words = words
        self._guest: GuestWaiters | None = None

    def attach(self, guest: GuestWaiters) -> None:
        """Waiters in the guest (each vCPU's thread attaches its transport's, the same)."""
        if self._guest is not guest:
            self._guest = guest
            guest.futex_attached(self._any_shared)

    def robust_list(self, task: Task) -> None:
        """Bring task.robust_list up to date with a set_robust_list the fast transport
        answered in the guest (the thread is stopped in the monitor, or ended): before
        the robust list is read or set in the monitor."""
        guest, cpu = self._guest, task.cpu
        if guest is not None and cpu is not None:
            head = guest.robust_head(cpu)
            if head is not None:
                task.robust_list, task.robust_list_len = head, ROBUST_LIST_HEAD_SIZE

    def _any_shared(self) -> bool:
        return self._words is not None and self._words.has_shared_words()

    def _shared(self, addr: int) -> bool:
        return self._words is not None and self._words.shared_word(addr)

    def wait(self, task: Task, addr: int, expected: int, deadline: float | None,
             bitset: int = FUTEX_BITSET_MATCH_ANY) -> int:
        if addr & 3:
            raise SyscallError(errno.EINVAL)
        if self._shared(addr):
            return self._wait_shared(task, addr, expected, deadline, bitset)
        waiter = _Waiter(task, addr, bitset)
        guest = self._guest
        with self._lock:
            # The value check and the enqueue are atomic with respect to wake(): a waker
            # changes the value first and then calls wake() under this lock. A waker in
            # the guest changes it, then reads the slots: published before the check.
            if guest is not None:
                guest.blocking(task.vcpu, addr)
            if task.mem.read_u32(addr) != expected & 0xFFFFFFFF:
                if guest is not None:
                    guest.blocking(task.vcpu, 0)
                raise SyscallError(errno.EAGAIN)
            self._queues.setdefault(addr, []).append(waiter)
        try:
            while not waiter.woken:
                if task.signal_pending():
                    raise Interrupted
                if deadline is not None and time.monotonic() >= deadline:
                    raise SyscallError(errno.ETIMEDOUT)
                task.waker.wait(deadline)
            return 0
        finally:
            if not waiter.woken:
                with self._lock:
                    queue = self._queues.get(waiter.addr)
                    if queue and waiter in queue:
                        queue.remove(waiter)
                        if not queue:
                            del self._queues[waiter.addr]
                    if guest is not None:
                        guest.blocking(task.vcpu, 0)
            elif guest is not None:
                guest.blocking(task.vcpu, 0)  # back (woken(): on its way)

    def _wait_shared(self, task: Task, addr: int, expected: int, deadline: float | None,
                     bitset: int) -> int:
        words = self._words
        assert words is not None
        first = True
        while True:
            if task.signal_pending():
                raise Interrupted
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise SyscallError(errno.ETIMEDOUT)
            until = now + SHARED_WAIT_SLICE
            if deadline is not None:
                until = min(until, deadline)
            try:
                words.futex_wait(addr, expected, until, bitset)
                return 0
            except SyscallError as err:
                if err.errno == errno.EAGAIN:
                    if first:
                        raise
                    return 0  # changed while we slept between slices: as a wake
                if err.errno not in (errno.ETIMEDOUT, errno.EINTR):
                    raise
            first = False

    def _wake_locked(self, addr: int, count: int, bitset: int) -> int:
        """Wake up to count waiters of addr: the queued ones first (they waited longer),
        then those spinning in the guest."""
        queue = self._queues.get(addr)
        woken = 0
        if queue:
            kept = []
            guest = self._guest
            for waiter in queue:
                if woken < count and waiter.bitset & bitset:
                    waiter.woken = True
                    if guest is not None:
                        guest.woken(waiter.task.vcpu)
                    waiter.task.waker.wake()
                    woken += 1
                else:
                    kept.append(waiter)
            if kept:
                self._queues[addr] = kept
            else:
                del self._queues[addr]
        if woken < count and self._guest is not None:
            woken += self._guest.wake(addr, count - woken, bitset)
        return woken

    def wake(self, addr: int, count: int, bitset: int = FUTEX_BITSET_MATCH_ANY) -> int:
        if addr & 3:
            raise SyscallError(errno.EINVAL)
        if bitset == 0:
            raise SyscallError(errno.EINVAL)
        if self._shared(addr):
            assert self._words is not None
            return self._words.futex_wake(addr, count, bitset)
        with self._lock:
            return self._wake_locked(addr, count, bitset)

    def requeue(self, task: Task, addr: int, count: int, addr2: int, requeue: int,
                expected: int | None) -> int:
        if addr & 3 or addr2 & 3:
            raise SyscallError(errno.EINVAL)
        if self._shared(addr) or self._shared(addr2):
            return self._shared_pair(addr, addr2).futex_requeue(addr, count, addr2, requeue,
                                                                expected)
        with self._lock:
            if expected is not None and task.mem.read_u32(addr) != expected & 0xFFFFFFFF:
                raise SyscallError(errno.EAGAIN)
            woken = self._wake_locked(addr, count, FUTEX_BITSET_MATCH_ANY)
            moved = 0
            queue = self._queues.get(addr, [])
            guest = self._guest
            while queue and moved < requeue:
                waiter = queue.pop(0)
                waiter.addr = addr2
                if guest is not None:
                    guest.blocking(waiter.task.vcpu, addr2)
                self._queues.setdefault(addr2, []).append(waiter)
                moved += 1
            if not queue:
                self._queues.pop(addr, None)
            if moved < requeue and guest is not None:
                # a waiter spinning in the guest cannot move: it returns (a spurious
                # wake-up, futex(2)) and waits again where its caller decides
                moved += guest.wake(addr, requeue - moved, FUTEX_BITSET_MATCH_ANY)
            return woken + moved

    def wake_op(self, task: Task, addr: int, count: int, addr2: int, count2: int,
                op: int) -> int:
        """FUTEX_WAKE_OP: *addr2 = f(*addr2); wake addr; and addr2 if the old value matched."""
        if addr & 3 or addr2 & 3:
            raise SyscallError(errno.EINVAL)
        if self._shared(addr) or self._shared(addr2):
            return self._shared_pair(addr, addr2).futex_wake_op(addr, count, addr2, count2, op)
        with self._lock:
            old = task.mem.read_u32(addr2)
            task.mem.write_u32(addr2, _apply_op(op, old))
            woken = self._wake_locked(addr, count, FUTEX_BITSET_MATCH_ANY)
            if _compare(op, old):
                woken += self._wake_locked(addr2, count2, FUTEX_BITSET_MATCH_ANY)
            return woken

    def _shared_pair(self, addr: int, addr2: int) -> SharedWords:
        """The host futexes, for an operation on two words both shared: a private and a
        shared word in one call would need both queues at once."""
        if self._words is None or not (self._shared(addr) and self._shared(addr2)):
            log.warning("futex: requeue/wake_op between shared and private memory")
            raise SyscallError(errno.EINVAL)
        return self._words


def _sign_extend12(value: int) -> int:
    return value - 0x1000 if value & 0x800 else value


def _apply_op(encoded: int, old: int) -> int:
    op = (encoded >> 28) & 7
    oparg = _sign_extend12((encoded >> 12) & 0xFFF)
    if (encoded >> 28) & 8:  # FUTEX_OP_OPARG_SHIFT
        if not 0 <= oparg < 32:
            raise SyscallError(errno.EINVAL)
        oparg = 1 << oparg
    oparg &= 0xFFFFFFFF
    if op == 0:
        return oparg
    if op == 1:
        return (old + oparg) & 0xFFFFFFFF
    if op == 2:
        return old | oparg
    if op == 3:
        return old & ~oparg & 0xFFFFFFFF
    if op == 4:
        return old ^ oparg
    raise SyscallError(errno.ENOSYS)


def _compare(encoded: int, old: int) -> bool:
    cmp = (encoded >> 24) & 0xF
    cmparg = _sign_extend12(encoded & 0xFFF)
    signed_old = old - (1 << 32) if old & 0x80000000 else old
    checks = {
        0: signed_old == cmparg,
        1: signed_old != cmparg,
        2: signed_old < cmparg,
        3: signed_old <= cmparg,
        4: signed_old > cmparg,
        5: signed_old >= cmparg,
    }
    if cmp not in checks:
        raise SyscallError(errno.ENOSYS)
    return checks[cmp]
