"""The guest address space as the kernel books it: VMAs, brk, and the memory cap.

The page tables never change after start (DESIGN.md: PVM would not see edits), so a VMA
here is bookkeeping: it decides where new mappings go, what /proc/self/maps shows, what
counts against --memory, and which host pages to give back. One invariant keeps it
simple: memory outside every VMA reads as zero (unmapping discards the host pages), so a
new anonymous mapping needs no clearing.
"""

from __future__ import annotations

import _bisect as bisect  # the C module: bisect.py adds ~0.3 ms to every run
import errno
import threading
from collections.abc import Iterable

from karn import log
from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING, NamedTuple, Protocol
from karn.kernel.futex import SharedWords

if TYPE_CHECKING:
    from karn.kernel.fs.file import OpenFile

PAGE = 0x1000
PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2
PROT_EXEC = 4


def page_up(value: int) -> int:
    return (value + PAGE - 1) & ~(PAGE - 1)


def page_down(value: int) -> int:
    return value & ~(PAGE - 1)


class GuestRam(SharedWords, Protocol):
    """Guest RAM as the address space manages it (platform/memory.py)."""

    def cover(self, start: int, end: int) -> None:
        """The guest may touch the range from now on (ENOMEM if the platform cannot)."""
        ...

    def discard(self, addr: int, size: int) -> None:
        """The range leaves the address space: it reads zeros, private, afterwards."""
        ...

    def drop_pages(self, addr: int, size: int) -> None:
        """madvise(MADV_DONTNEED): private pages read zeros, shared ones keep their data."""
        ...

    def share_anonymous(self, addr: int, size: int) -> None:
        """Zeroed memory that stays shared with the processes forked from this one."""
        ...

    def share_file(self, addr: int, size: int, fd: int, offset: int, writable: bool) -> None:
        """The host file's own pages at the range (see platform/memory.py)."""
        ...

    def map_file_private(self, addr: int, size: int, fd: int, offset: int) -> None:
        """A private, copy-on-write mapping of the host file at the range."""
        ...

    def populate(self, addr: int, size: int) -> None:
        """Host pages for the private range now, before the guest touches it."""
        ...

    def is_shared(self, start: int, end: int) -> bool: ...

    def maps_file(self, start: int, end: int) -> bool:
        """Whether any of the range is a shared mapping of a host file's own pages."""
        ...


class CodeWatcher(Protocol):
    """Told before a range's contents go (munmap, MAP_FIXED over it, brk shrinking): the
    fast-syscall patcher (platform/fastcall) forgets the sites and arenas inside."""

    def forget(self, start: int, end: int) -> None: ...

    def new_program(self) -> None:
        """execve: a program starts afresh (its start-up is not worth patching either)."""
        ...


# Under PVM the guest's first touch of a page costs ~15 times the monitor's populating it
# (platform/memory.py populate), so new private writable memory gets its host pages at
# once where the guest is about to use them: a mapping of up to PREFAULT_BYTES whole
# (CPython's 1 MiB object arenas, malloc's large blocks), the first PREFAULT_BIG_BYTES of
# a larger one (Go's 64 MiB heap arenas, touched a little at a time), a stack's top
# STACK_PREFAULT_BYTES (it grows down; glibc's 8 MiB thread stacks), a heap's growth and
# a program's data and bss up to PREFAULT_BYTES (copied from the program file now, not at
# the first write: a later change to the file is not seen, which Linux leaves open). An
# untouched populated page costs host memory and ~1.5 µs; a touched one saves ~25 µs
# (measured: docs/benchmarks.md).
PREFAULT_BYTES = 1 << 20
PREFAULT_BIG_BYTES = 64 << 10
STACK_PREFAULT_BYTES = 32 << 10  # not charged to --memory (MAP_STACK): kept small
KARN_VMA = "[karn]"  # karn's own code in the guest (fast-syscall stub arenas)
BRK_ROOM = 256 << 20  # arenas stay this far above the heap's start: room for it to grow


class Vma:
    __slots__ = ("start", "end", "prot", "offset", "name", "charged", "shared", "no_write")

    def __init__(self, start: int, end: int, prot: int, offset: int = 0, name: str = "",
                 charged: bool = True, shared: bool = False, no_write: bool = False) -> None:
        self.start = start
        self.end = end
        self.prot = prot
        self.offset = offset
        self.name = name  # file path, "[heap]", "[stack]" or "" for anonymous
        # Counted against the memory limit when accessible; MAP_NORESERVE and MAP_STACK
        # mappings are not (the resident-memory watchdog bounds them: LimitWatch in policy.py).
        self.charged = charged
        self.shared = shared  # MAP_SHARED: "s" in /proc/PID/maps
        # a MAP_SHARED file not open for writing: PROT_WRITE is EACCES (Linux's
        # VM_MAYWRITE clear), at mprotect as at mmap
        self.no_write = no_write

    def sliced(self, start: int, end: int) -> Vma:
        offset = self.offset + (start - self.start) if self.name.startswith("/") else 0
        return Vma(start, end, self.prot, offset, self.name, self.charged, self.shared,
                   self.no_write)

    def cost(self, lo: int, hi: int, prot: int | None = None) -> int:
        """Bytes of [lo, hi) charged to the limit, with its protection or `prot`."""
        prot = self.prot if prot is None else prot
        return hi - lo if self.charged and prot != PROT_NONE else 0


class Region(NamedTuple):
    """Where things go, fixed by the platform's layout."""

    user_start: int
    user_end: int
    mmap_top: int  # mappings without a hint are placed top-down below this
    limit: int  # bytes of accessible (not PROT_NONE) memory the guest may hold


class MemoryAccount:
    """Guest memory held against the limit (--memory): accessible mappings plus tmpfs file
    data, i.e. the host memory a guest can make its monitor hold."""

    __slots__ = ("limit", "used", "_lock", "_told")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()  # mmap in one thread, a tmpfs write in another
        self._told = False

    def charge(self, delta: int) -> bool:
        """Take (delta > 0) or give back bytes; False when taking would pass the limit."""
        with self._lock:
            if delta > 0 and self.used + delta > self.limit:
                self._tell(delta)
                return False
            self.used += delta
            return True

    def _tell(self, delta: int) -> None:
        """Say once why the guest's allocations fail: the limit counts memory mapped, not
        only memory touched, so a program that maps large buffers it barely uses (xz's
        encoder, thread arenas) meets it sooner than a container's limit."""
        if self._told:
            return
        self._told = True
        mib = 1 << 20
        log.warning("guest memory limit reached: %.1f MiB more refused, %.1f of %d MiB "
                    "held (accessible mappings, tmpfs data, threads); raise it with "
                    "--memory", delta / mib, self.used / mib, self.limit // mib)


HOT_RANGES = 4  # a thread's buffers: its stack, the heap, a pool or two (nginx: 4 hit ~all)


class _Change:
    """`with mm._change:` around every change of the books: both locks, and the hot
    ranges dropped before anything changes (a class: contextlib would cost every run its
    import)."""

    __slots__ = ("_mm",)

    def __init__(self, mm: AddressSpace) -> None:
        self._mm = mm

    def __enter__(self) -> None:
        mm = self._mm
        mm._lock.acquire()
        mm._books_lock.acquire()
        mm._hot = ()

    def __exit__(self, *exc: object) -> None:
        mm = self._mm
        mm._books_lock.release()
        mm._lock.release()


class AddressSpace:
    def __init__(self, memory: GuestRam, region: Region,
                 account: MemoryAccount | None = None) -> None:
        self.memory = memory
        self.region = region
        self.account = MemoryAccount(region.limit) if account is None else account
        self._vmas: list[Vma] = []
        self._starts: list[int] = []
        self.mapped_bytes = 0  # accessible bytes, counted against region.limit
        self.brk_start = 0
        self.brk = 0
        # MAP_SHARED writable file mappings held as copies, written back to their files:
        # start -> (file, offset, length), see sys_mm._map_shared.
        self.shared_files: dict[int, tuple[OpenFile, int, int]] = {}
        self.code_watcher: CodeWatcher | None = None
        # Guest threads change the books at once (mmap on one, mprotect on another), and
        # a thread switch may fall anywhere: the lock is held while the books are being
        # changed or searched, never over a call that takes a lock of its own or waits
        # (the code watcher, memory slots). Free ranges find_free handed a thread that
        # has not mapped them yet (thread ident -> range) are kept from the others:
        # sys_mmap finds a range, then maps it, and two threads handed one range would
        # share its memory (docs/design/processes.md 3.3). A claim goes when its thread
        # maps or looks again.
        self._lock = threading.Lock()  # a fork takes it (kernel/fork.py)
        self._claims: dict[int, tuple[int, int]] = {}
        # Ranges a thread is unmapping or replacing, from the code watcher's forget until
        # the change that unbooks them (thread ident -> range), kept from reserve_near:
        # see _forget_code.
        self._going: dict[int, tuple[int, int]] = {}
        # Held (within _lock) while the VMA lists change, and by every question about
        # them (accessible_prefix checks every guest buffer, from any thread, whatever
        # locks that thread holds): a leaf (nothing is taken under it but the account's
        # lock), so no lock order with the others a fork takes; made anew in a forked
        # child (forked).
        self._books_lock = threading.Lock()
        # The VMAs the last full checks found accessible, as ranges, newest first: a
        # buffer inside one is accessible with no lock and no search (a thread's calls
        # point into its stack, the heap, a pool or two). Set under the books' lock and
        # read without it; every change of the books drops them first (_Change), so a
        # reader sees them as they were before the change began, or none.
        self._hot: tuple[tuple[int, int], ...] = ()
        self._change = _Change(self)

    def forked(self) -> None:
        """In a forked monitor's copy: the other threads, and their claims, are gone (one
        of them may have held the books' lock at the fork)."""
        self._claims = {}
        self._going = {}
        self._books_lock = threading.Lock()

    # -- queries -----------------------------------------------------------------------

    def vmas(self) -> list[Vma]:
        with self._books_lock:  # (not halfway through a change: /proc/PID/maps, cores)
            return list(self._vmas)

    # The questions below are asked from any thread (mremap, msync, madvise, the
    # patcher) while another may be changing the books: each reads them under the books'
    # lock (a search of the two lists taken a step apart raised IndexError).
    def is_mapped(self, start: int, end: int) -> bool:
        """Whether [start, end) is covered by VMAs without holes."""
        with self._books_lock:
            return self._is_mapped(start, end)

    def _is_mapped(self, start: int, end: int) -> bool:
        pos = start
        for vma in self._overlapping(start, end):
            if vma.start > pos:
                return False
            pos = vma.end
        return pos >= end

    def is_accessible(self, start: int, end: int) -> bool:
        """Whether [start, end) is mapped without holes and none of it is PROT_NONE."""
        return self.accessible_prefix(start, end) == end - start

    def accessible_prefix(self, start: int, end: int) -> int:
        """How many bytes from start on are mapped and not PROT_NONE (at most end-start).
        Inside a remembered range, with no lock (see _hot); else under the books' lock:
        another thread's change of them (an mprotect splitting the VMA, a mapping inserted
        below) passes through states where a mapped range is missing, and a read then
        failed with EFAULT."""
        for lo, hi in self._hot:
            if lo <= start and end <= hi:
                return end - start
        with self._books_lock:
            i = bisect.bisect_right(self._starts, start) - 1
            if i >= 0:  # (every guest buffer of every call is checked here: one VMA
                vma = self._vmas[i]  # holding it all, the usual case, needs no list)
                if vma.start <= start and vma.end >= end and vma.prot != PROT_NONE:
                    self._hot = ((vma.start, vma.end), *self._hot[:HOT_RANGES - 1])
                    return end - start
            pos = start
            for vma in self._overlapping(start, end):
                if vma.start > pos or vma.prot == PROT_NONE:
                    break
                pos = vma.end
            return min(pos, end) - start

    def overlaps(self, start: int, end: int) -> bool:
        with self._books_lock:
            return bool(self._overlapping(start, end))

    def _overlapping(self, start: int, end: int) -> list[Vma]:
        i = bisect.bisect_right(self._starts, start) - 1
        if i < 0 or self._vmas[i].end <= start:
            i += 1
        out = []
        while i < len(self._vmas) and self._vmas[i].start < end:
            out.append(self._vmas[i])
            i += 1
        return out

    def find_free(self, length: int, hint: int = 0) -> int:
        """A free page-aligned range: at the hint if it is free, else top-down. Claimed
        for the calling thread until it maps (or looks again): no other thread's
        find_free returns it meanwhile."""
        me = threading.get_ident()
        with self._lock:
            self._claims.pop(me, None)
            start = self._free(length, hint, self._claims.values())
            self._claims[me] = (start, start + length)
        return start

    def _free(self, length: int, hint: int, claims: Iterable[tuple[int, int]]) -> int:
        reg = self.region
        if hint:
            hint = page_down(hint)
            if reg.user_start <= hint and hint + length <= reg.mmap_top:
                if not self._overlapping(hint, hint + length) \
                        and _meeting(claims, hint, hint + length) is None:
                    return hint
        floor = max(reg.user_start, page_up(self.brk or reg.user_start))
        top = reg.mmap_top
        while True:
            for vma in reversed(self._vmas):
                if vma.start >= top:
                    continue
                if vma.end <= top - length:
                    break
                top = min(top, vma.start)
            candidate = top - length
            if candidate < floor:
                raise SyscallError(errno.ENOMEM)
            claimed = _meeting(claims, candidate, top)
            if claimed is None:
                return candidate
            top = claimed[0]  # below another thread's claim

    def is_private_code(self, start: int, end: int) -> bool:
        """Whether [start, end) is executable guest code that karn may rewrite in place:
        mapped, executable, not karn's own, not shared memory nor a shared file mapping."""
        pos = start
        with self._books_lock:
            pieces = self._overlapping(start, end)
        for vma in pieces:
            if vma.start > pos or not vma.prot & PROT_EXEC or vma.name == KARN_VMA:
                return False
            pos = vma.end
        if pos < end or self.memory.is_shared(start, end):  # other processes' code too
            return False
        return not any(s < end and start < s + length
                       for s, (_f, _o, length) in self.shared_files.items())

    def reserve_near(self, lo: int, hi: int, length: int) -> int | None:
        """Book a free page-aligned range of `length` bytes inside [lo, hi) for karn's own
        code ([karn], uncharged, like the vDSO); None if none fits. Top-down, below the
        mmap area's top and clear of the heap's room to grow, so guest mappings placed
        afterwards simply go around it."""
        reg = self.region
        floor = max(lo, reg.user_start, self.brk_start + BRK_ROOM if self.brk_start else 0)
        while True:
            top = min(hi, reg.mmap_top)
            for vma in reversed([*self._vmas]):
                if vma.start >= top:
                    continue
                gap_start = max(vma.end, floor)
                candidate = page_down(top - length)
                if candidate >= gap_start:
                    break
                top = min(top, vma.start)
            else:
                candidate = page_down(top - length)
            if candidate < floor or candidate + length > top:
                return None
            vma = Vma(candidate, candidate + length, PROT_READ | PROT_EXEC, 0, KARN_VMA,
                      charged=False)
            there = self._book_free(vma, karn=True)
            if there is None:
                break
            hi = there[0]  # booked or claimed by another thread meanwhile: look below it
        try:
            self.memory.cover(candidate, candidate + length)  # booked first: see map
        except SyscallError:
            with self._change:
                self._delete(vma)
            return None
        return candidate

    def _book_free(self, vma: Vma, merge: bool = False, karn: bool = False
                   ) -> tuple[int, int] | None:
        """Book `vma` (searched for without the lock) unless a mapping or another thread's
        claim is there now, or (karn: karn's own code) a range some thread is unmapping
        or mapping over; returns what is there."""
        with self._change:
            met = self._overlapping(vma.start, vma.end)
            if met:
                return met[0].start, met[0].end
            claimed = _meeting(self._claims.values(), vma.start, vma.end)
            if claimed is None and karn:
                claimed = _meeting(self._going.values(), vma.start, vma.end)
            if claimed is None:
                self._insert(vma)
                if merge:
                    self._merge_around(vma.start, vma.end)
            return claimed

    # -- changes -----------------------------------------------------------------------

    def _charge(self, delta: int) -> None:
        if not self.account.charge(delta):
            raise SyscallError(errno.ENOMEM)
        self.mapped_bytes += delta

    def _check_range(self, start: int, end: int) -> None:
        if start & (PAGE - 1) or end <= start:
            raise SyscallError(errno.EINVAL)
        if start < self.region.user_start or end > self.region.user_end:
            raise SyscallError(errno.ENOMEM)

    def _remove(self, start: int, end: int, discard: bool) -> int:
        """Drop [start, end) from the books; returns the accessible bytes released."""
        if discard:
            self._forget_code(start, end)
        with self._change:
            self._going.pop(threading.get_ident(), None)
            released = self._unbook(start, end)
            if discard:  # before another thread's mmap may be handed the range and use it
                self.memory.discard(start, end - start)
        return released

    def _forget_code(self, start: int, end: int, if_mapped: bool = False) -> None:
        """The code watcher (the patcher) forgets [start, end) before the range is
        unbooked or mapped over (if_mapped: only if some of it is mapped now); until then
        the whole range is kept from reserve_near (the caller's change pops it). The
        watcher may reserve an arena as it forgets (for code it moves out of an arena
        going), and so may another thread's patch: a free hole inside the range would be
        handed to it and then unmapped, or mapped over, under it. (Under the lock:
        _book_free looks through them.)"""
        watcher = self.code_watcher
        if watcher is None:
            return
        me = threading.get_ident()
        with self._lock:
            self._going[me] = (start, end)
        try:
            if not if_mapped or self.overlaps(start, end):
                watcher.forget(start, end)
        except BaseException:
            with self._lock:
                self._going.pop(me, None)
            raise

    def _unbook(self, start: int, end: int) -> int:
        """_remove's change of the books, the lock held."""
        released = 0
        kept: list[Vma] = []
        for vma in self._overlapping(start, end):
            self._delete(vma)
            lo, hi = max(vma.start, start), min(vma.end, end)
            released += vma.cost(lo, hi)
            if vma.start < lo:
                kept.append(vma.sliced(vma.start, lo))
            if hi < vma.end:
                kept.append(vma.sliced(hi, vma.end))
        for vma in kept:
            self._insert(vma)
        return released

    def _insert(self, vma: Vma) -> None:
        i = bisect.bisect_left(self._starts, vma.start)
        self._vmas.insert(i, vma)
        self._starts.insert(i, vma.start)

    def _delete(self, vma: Vma) -> None:
        i = bisect.bisect_left(self._starts, vma.start)
        del self._starts[i]
        del self._vmas[i]

    def map(self, start: int, length: int, prot: int, name: str = "", offset: int = 0,
            charged: bool = True, shared: bool = False, no_write: bool = False) -> int:
        """Book [start, start+length) (replacing what was there, as MAP_FIXED does)."""
        end = start + page_up(length)
        self._check_range(start, end)
        self._forget_code(start, end, if_mapped=True)
        vma = Vma(start, end, prot, offset, name, charged, shared, no_write)
        with self._change:
            self._claims.pop(threading.get_ident(), None)  # booked below, or the call fails
            self._going.pop(threading.get_ident(), None)
            replaced = self._overlapping(start, end)
            released = self._unbook(start, end) if replaced else 0
            try:
                self._charge(vma.cost(start, end) - released)
            except SyscallError:
                self._charge(-released)
                raise
            finally:
                if replaced:
                    self.memory.discard(start, end - start)
            self._insert(vma)
        # Memory slots only once the range is booked: adding one waits in the kernel with
        # the GIL released, and another thread's mmap must not be handed this free range
        # meanwhile (two threads given one range: docs/design/processes.md 3.3).
        try:
            self.memory.cover(start, end)
        except SyscallError:
            self._charge(-self._remove(start, end, discard=False))
            raise
        return start

    def prefault(self, start: int, end: int, stack: bool = False, used: bool = False) -> None:
        """Populate new private memory [start, end) as far as the guest will soon use it
        (PREFAULT_BYTES above): a stack's top; the start of memory `used` from its start
        (a heap's growth, a program's data); else a new mapping whole or its start."""
        size = end - start
        if stack:
            size = min(size, STACK_PREFAULT_BYTES)
            start = end - size
        elif size > PREFAULT_BYTES:
            size = PREFAULT_BYTES if used else PREFAULT_BIG_BYTES
        self.memory.populate(start, size)

    def unmap(self, start: int, length: int) -> None:
        end = start + page_up(length)
        self._check_range(start, end)
        self._charge(-self._remove(start, end, discard=True))

    def protect(self, start: int, length: int, prot: int) -> None:
        end = start + page_up(length)
        self._check_range(start, end)
        with self._change:
            if not self._is_mapped(start, end):
                raise SyscallError(errno.ENOMEM)
            pieces = self._overlapping(start, end)
            if prot & PROT_WRITE and any(vma.no_write for vma in pieces):
                raise SyscallError(errno.EACCES)
            delta = 0
            for vma in pieces:
                lo, hi = max(vma.start, start), min(vma.end, end)
                delta += vma.cost(lo, hi, prot) - vma.cost(lo, hi)
            self._charge(delta)
            self._unbook(start, end)
            for vma in pieces:
                lo, hi = max(vma.start, start), min(vma.end, end)
                piece = vma.sliced(lo, hi)
                piece.prot = prot
                self._insert(piece)
            self._merge_around(start, end)

    def _merge_around(self, start: int, end: int) -> None:
        """Join neighbours with identical attributes, so maps stays readable."""
        i = max(bisect.bisect_left(self._starts, start) - 1, 0)
        while i + 1 < len(self._vmas) and self._vmas[i].start <= end:
            a, b = self._vmas[i], self._vmas[i + 1]
            contiguous_file = not a.name.startswith("/") or a.offset + (a.end - a.start) == b.offset
            if a.end == b.start and a.prot == b.prot and a.name == b.name and contiguous_file \
                    and a.charged == b.charged and a.shared == b.shared \
                    and a.no_write == b.no_write:
                a.end = b.end
                del self._starts[i + 1]
                del self._vmas[i + 1]
            else:
                i += 1

    def find_vma(self, addr: int) -> Vma | None:
        with self._books_lock:
            i = bisect.bisect_right(self._starts, addr) - 1
            if i >= 0 and self._vmas[i].end > addr:
                return self._vmas[i]
        return None

    def discard_all(self, mmap_top: int) -> None:
        """execve: every mapping goes at once (shared file mappings written back by the
        caller first), its host pages given back; the books restart empty, with the mmap
        area's top at `mmap_top` (the new program's ASLR placement)."""
        reg = self.region
        if self.code_watcher is not None:  # first: nothing it knows is put back then
            self._forget_code(reg.user_start, reg.user_end)
            self.code_watcher.new_program()
        for vma in self._vmas:
            self.memory.discard(vma.start, vma.end - vma.start)
        self._charge(-self.mapped_bytes)
        with self._change:
            self._going.pop(threading.get_ident(), None)
            self._starts, self._vmas = [], []
        self.shared_files.clear()
        self.brk_start = self.brk = 0
        self.region = reg._replace(mmap_top=mmap_top)

    # -- brk ---------------------------------------------------------------------------

    def set_brk_start(self, addr: int) -> None:
        self.brk_start = self.brk = page_up(addr)

    def set_brk(self, new: int) -> int:
        """Linux brk: returns the (possibly unchanged) break; never an error code."""
        if new < self.brk_start:
            return self.brk
        old_top, new_top = page_up(self.brk), page_up(new)
        try:
            if new_top > old_top:
                if new_top > self.region.mmap_top:
                    return self.brk
                self._charge(new_top - old_top)
                heap = Vma(old_top, new_top, PROT_READ | PROT_WRITE, 0, "[heap]")
                if self._book_free(heap, merge=True) is not None:
                    self._charge(old_top - new_top)
                    return self.brk
                try:
                    self.memory.cover(old_top, new_top)  # booked first: see map
                except SyscallError:
                    self._charge(-self._remove(old_top, new_top, discard=False))
                    raise
                self.prefault(old_top, new_top, used=True)
            elif new_top < old_top:
                self._charge(-self._remove(new_top, old_top, discard=True))
        except SyscallError:
            return self.brk
        self.brk = new
        return new


def _meeting(ranges: Iterable[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """One of `ranges` that overlaps [start, end), or None."""
    return next(((a, b) for a, b in ranges if a < end and start < b), None)
