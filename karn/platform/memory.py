"""Guest memory: one anonymous host mapping, bounds-checked access at guest addresses.

Ranges the guest maps MAP_SHARED are host MAP_SHARED mappings placed over the guest RAM
mapping at their guest address (anonymous shared memory, or the host file itself): KVM's
memory slot follows host virtual addresses, so the guest sees the new pages at once, and a
host fork of the monitor keeps them shared with the child's VM (docs/design/processes.md,
6.2). Futexes on such words are host futexes on the host address, which the host kernel
keys by the shared page: a wait in one monitor is woken by a wake in another.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import struct
import threading
from collections.abc import Callable

from karn.abi.errno import SyscallError

PAGE = mmap.PAGESIZE
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)
_MAP_FIXED = 0x10
_MADV_POPULATE_WRITE = 23  # Linux 5.14
# What backs a range mapped over guest RAM on its own (HostGuestMemory._mapped): shared
# anonymous memory; a host file shared (MAP_SHARED of a writable description: every
# process sees every write); a shared mapping of a read-only description (host
# MAP_PRIVATE: it sees the file's changes, but its futex words are this process's own);
# a private mapping of a file (programs, libraries: copied on write, never shared).
ANON_SHARED, FILE_SHARED, FILE_READ_ONLY, FILE_PRIVATE = range(4)
_WORDS_SHARED = (ANON_SHARED, FILE_SHARED)  # a futex word there is a host futex
_MAP_FAILED = ctypes.c_void_p(-1).value
_SYS_FUTEX = 202
_FUTEX_WAKE_OP = 5
_FUTEX_REQUEUE = 3
_FUTEX_CMP_REQUEUE = 4
_FUTEX_WAIT_BITSET = 9
_FUTEX_WAKE_BITSET = 10
# KVM memory slots cover guest memory in pieces of this size, aligned, as the guest maps
# it (cover): a slot's set-up (reverse maps and write tracking, ~10 bytes a 4 KiB page,
# zeroed) and a host fork's MMU-notifier walk of the parent's VM cost by the slots' size,
# and a fork's child sets up its own. Large enough that a growing heap or mmap area adds
# a slot (an ioctl and an SRCU grace period) only now and then.
SLOT_GRANULE = 64 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.syscall.restype = ctypes.c_long
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class HostGuestMemory:
    """Guest physical memory [0, size) backed by MAP_NORESERVE host memory.

    Guest virtual == guest physical (see layout.py), so a guest address is an offset here.
    `user_start`/`user_end` bound what guest-supplied pointers may reach; the monitor itself
    uses `raw` to build system structures outside that range.
    """

    def __init__(self, size: int, user_start: int, user_end: int) -> None:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _NORESERVE
        self._map = mmap.mmap(-1, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.raw = memoryview(self._map)
        self.size = size
        self.host_address = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self.user_start = user_start
        self.user_end = user_end
        # Ranges backed by host mappings of their own (start, end, kind), disjoint: shared
        # memory and files mapped in place (the kinds above). Replaced whole on a change,
        # so a futex call on another thread reads a consistent set without a lock.
        self._mapped: tuple[tuple[int, int, int], ...] = ()
        # What KVM's memory slots cover: disjoint sorted ranges, merged when adjacent;
        # replaced whole, so a reader needs no lock. add_slot gives KVM one more range
        # (the VM that owns the slots sets it; a forked monitor's new VM registers
        # `covered` and sets its own).
        self.covered: tuple[tuple[int, int], ...] = ()
        self.add_slot: Callable[[int, int], None] | None = None
        self.cover_lock = threading.Lock()
        self._populate = True  # the host has MADV_POPULATE_WRITE (populate)

    def _check(self, addr: int, size: int) -> None:
        if size < 0 or addr < self.user_start or addr + size > self.user_end:
            raise SyscallError(errno.EFAULT)

    def read(self, addr: int, size: int) -> bytes:
        self._check(addr, size)
        return self.raw[addr : addr + size].tobytes()

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        self._check(addr, size)
        self.raw[addr : addr + size] = data

    def view(self, addr: int, size: int) -> memoryview:
        self._check(addr, size)
        return self.raw[addr : addr + size]

    def read_cstring(self, addr: int, limit: int = 4096) -> bytes:
        self._check(addr, 1)
        end = min(addr + limit, self.user_end)
        nul = self._map.find(b"\0", addr, end)
        if nul < 0:
            if end < addr + limit:
                raise SyscallError(errno.EFAULT)
            raise SyscallError(errno.ENAMETOOLONG)
        return self._map[addr:nul]

    def read_u64(self, addr: int) -> int:
        self._check(addr, 8)
        return _U64.unpack_from(self._map, addr)[0]

    def write_u64(self, addr: int, value: int) -> None:
        self._check(addr, 8)
        _U64.pack_into(self._map, addr, value & 0xFFFFFFFFFFFFFFFF)

    def read_u32(self, addr: int) -> int:
        self._check(addr, 4)
        return _U32.unpack_from(self._map, addr)[0]

    def write_u32(self, addr: int, value: int) -> None:
        self._check(addr, 4)
        _U32.pack_into(self._map, addr, value & 0xFFFFFFFF)

    def zero(self, addr: int, size: int) -> None:
        self._check(addr, size)
        self.raw[addr : addr + size] = bytes(size)

    def discard(self, addr: int, size: int) -> None:
        """The page-aligned range leaves the address space: its host pages go back and it
        reads zeros; a host-shared piece becomes private anonymous memory again."""
        self._check(addr, size)
        if not size:
            return
        if self._cut_mapped(addr, addr + size):
            self._host_map(addr, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _NORESERVE, -1, 0)
        else:
            self._map.madvise(mmap.MADV_DONTNEED, addr, size)

    def drop_pages(self, addr: int, size: int) -> None:
        """madvise(MADV_DONTNEED): private pages read zeros afterwards, shared ones show
        the shared memory's data again, as on Linux."""
        self._check(addr, size)
        if size:
            self._map.madvise(mmap.MADV_DONTNEED, addr, size)

    def populate(self, addr: int, size: int) -> None:
        """Give the private range its host pages now, as the guest's first write would:
        under PVM a guest's first touch of a page costs ~25 µs (the host's own page fault,
        taken through PVM's handling of the guest's), the monitor's ~1.5 µs a page. Best
        effort: a kernel without MADV_POPULATE_WRITE, a shortage, or a file's end stops it
        quietly. Never on host-shared ranges (it would dirty a file's pages, or take a
        private copy of a read-only description's, which must keep seeing the file)."""
        self._check(addr, size)
        if size <= 0 or not self._populate or any(
                lo < addr + size and addr < hi and kind != FILE_PRIVATE
                for lo, hi, kind in self._mapped):
            return
        # through ctypes, which lets go of the GIL (~0.5 ms a MiB: the other vCPUs' threads
        # and the fast transport's server run meanwhile)
        if _libc.madvise(self.host_address + addr, size, _MADV_POPULATE_WRITE) and \
                ctypes.get_errno() == errno.EINVAL:  # an older kernel: not again
            self._populate = False

    # -- what the guest may touch: KVM memory slots ----------------------------------------

    def cover(self, start: int, end: int) -> None:
        """The guest may touch [start, end) from now on (a mapping is made there): KVM's
        memory slots must cover it. A guest access outside every slot is an MMIO exit.
        ENOMEM if KVM takes no more slots."""
        if any(lo <= start and end <= hi for lo, hi in self.covered):
            return
        lo = start // SLOT_GRANULE * SLOT_GRANULE
        hi = min(self.size, -(-end // SLOT_GRANULE) * SLOT_GRANULE)
        with self.cover_lock:
            for gap in _gaps(self.covered, lo, hi):
                if self.add_slot is not None:
                    try:
                        self.add_slot(*gap)
                    except OSError:
                        raise SyscallError(errno.ENOMEM) from None
                self.covered = _merged((*self.covered, gap))

    # -- host-shared ranges ------------------------------------------------------------

    def share_anonymous(self, addr: int, size: int) -> None:
        """Make [addr, addr+size) zeroed memory that stays shared with forked monitors."""
        self._share(addr, size, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS | _NORESERVE, -1, 0,
                    ANON_SHARED)

    def share_file(self, addr: int, size: int, fd: int, offset: int, writable: bool) -> None:
        """Map the host file `fd` at `offset` over [addr, addr+size): writable, its pages
        are the file's (every process mapping it sees every write); read-only, a private
        mapping that reads the file's current data."""
        if writable:
            self._share(addr, size, mmap.MAP_SHARED, fd, offset, FILE_SHARED)
        else:
            self._share(addr, size, mmap.MAP_PRIVATE, fd, offset, FILE_READ_ONLY)

    def map_file_private(self, addr: int, size: int, fd: int, offset: int) -> None:
        """A private mapping (MAP_PRIVATE) of the host file `fd` at `offset` over [addr,
        addr+size), as Linux maps programs and libraries: its pages are read from the
        file when first touched and shared with every other mapping of the file until
        written (then copied). Nothing is read now."""
        self._share(addr, size, mmap.MAP_PRIVATE, fd, offset, FILE_PRIVATE)

    def _share(self, addr: int, size: int, flags: int, fd: int, offset: int,
               kind: int) -> None:
        self._check(addr, size)
        if addr % PAGE or size % PAGE or not size:
            raise SyscallError(errno.EINVAL)
        self._cut_mapped(addr, addr + size)
        try:
            self._host_map(addr, size, flags, fd, offset)
        except SyscallError:  # the range must stay guest RAM whatever happened
            self._host_map(addr, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _NORESERVE, -1, 0)
            raise
        self._mapped = (*self._mapped, (addr, addr + size, kind))

    def _cut_mapped(self, start: int, end: int) -> bool:
        """Forget the mapped ranges' parts inside [start, end); whether there were any."""
        kept: list[tuple[int, int, int]] = []
        cut = False
        for lo, hi, kind in self._mapped:
            if hi <= start or end <= lo:
                kept.append((lo, hi, kind))
                continue
            cut = True
            kept.extend((a, b, kind) for a, b in ((lo, start), (end, hi)) if a < b)
        if cut:
            self._mapped = tuple(kept)
        return cut

    def _host_map(self, addr: int, size: int, flags: int, fd: int, offset: int) -> None:
        host = _libc.mmap(ctypes.c_void_p(self.host_address + addr), size,
                          mmap.PROT_READ | mmap.PROT_WRITE, flags | _MAP_FIXED, fd, offset)
        if host in (None, _MAP_FAILED):
            raise SyscallError(ctypes.get_errno() or errno.ENOMEM)

    def shared_word(self, addr: int) -> bool:
        """Whether the futex word at addr lives in memory other processes share."""
        return any(lo <= addr and addr + 4 <= hi and kind in _WORDS_SHARED
                   for lo, hi, kind in self._mapped)

    def has_shared_words(self) -> bool:
        """Whether any futex word of the guest's is a host futex (shared_word): a read-only
        MAP_SHARED file mapping (glibc's gconv cache), mapped privately, holds none."""
        return any(kind in _WORDS_SHARED for _lo, _hi, kind in self._mapped)

    def is_shared(self, start: int, end: int) -> bool:
        """Whether any of [start, end) is host-shared memory."""
        return any(lo < end and start < hi and kind != FILE_PRIVATE
                   for lo, hi, kind in self._mapped)

    def maps_file(self, start: int, end: int) -> bool:
        """Whether any of [start, end) is a shared mapping of a host file's own pages
        (share_file)."""
        return any(lo < end and start < hi and kind in (FILE_SHARED, FILE_READ_ONLY)
                   for lo, hi, kind in self._mapped)

    # -- host futexes on shared words (errors come back as SyscallError) ---------------

    def _futex(self, addr: int, op: int, val: int, timeout: object, addr2: int,
               val3: int) -> int:
        self._check(addr, 4)
        uaddr2 = 0
        if addr2:
            self._check(addr2, 4)
            uaddr2 = self.host_address + addr2
        result = _libc.syscall(ctypes.c_long(_SYS_FUTEX), ctypes.c_void_p(self.host_address + addr),
                               ctypes.c_int(op), ctypes.c_uint32(val & 0xFFFFFFFF), timeout,
                               ctypes.c_void_p(uaddr2), ctypes.c_uint32(val3 & 0xFFFFFFFF))
        if result < 0:
            raise SyscallError(ctypes.get_errno())
        return int(result)

    def futex_wait(self, addr: int, expected: int, until: float, bitset: int) -> None:
        """Sleep while the word holds `expected`, at most until the monotonic time `until`:
        EAGAIN if it did not hold it, ETIMEDOUT at `until`, EINTR on a host signal (a
        vCPU kick); returns on a wake (or spuriously: callers re-check)."""
        ts = _Timespec(int(until), int((until % 1) * 1e9))
        self._futex(addr, _FUTEX_WAIT_BITSET, expected, ctypes.byref(ts), 0, bitset)

    def futex_wake(self, addr: int, count: int, bitset: int) -> int:
        return self._futex(addr, _FUTEX_WAKE_BITSET, count, None, 0, bitset)

    def futex_requeue(self, addr: int, count: int, addr2: int, requeue: int,
                      expected: int | None) -> int:
        """FUTEX_CMP_REQUEUE, or FUTEX_REQUEUE when expected is None."""
        op = _FUTEX_REQUEUE if expected is None else _FUTEX_CMP_REQUEUE
        return self._futex(addr, op, count, ctypes.c_void_p(requeue), addr2, expected or 0)

    def futex_wake_op(self, addr: int, count: int, addr2: int, count2: int, op: int) -> int:
        return self._futex(addr, _FUTEX_WAKE_OP, count, ctypes.c_void_p(count2), addr2, op)

    def resident_bytes(self) -> int:
        """Host pages of guest memory in RAM now (mincore over the whole mapping)."""
        libc = ctypes.CDLL(None, use_errno=True)
        vec = ctypes.create_string_buffer(self.size // PAGE)
        if libc.mincore(ctypes.c_void_p(self.host_address), ctypes.c_size_t(self.size), vec):
            return 0
        raw = vec.raw  # one byte per page: bit 0 set when resident, other bits reserved (0)
        return (len(raw) - raw.count(0)) * PAGE


def _gaps(covered: tuple[tuple[int, int], ...], lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of [lo, hi) outside the sorted disjoint ranges `covered`."""
    gaps = []
    for a, b in covered:
        if b <= lo:
            continue
        if a >= hi:
            break
        if a > lo:
            gaps.append((lo, a))
        lo = max(lo, b)
    if lo < hi:
        gaps.append((lo, hi))
    return gaps


def _merged(ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)
