"""Shared-memory rings for the channels of a partitioned system (docs/design/channels.md).

A channel is two memfds that the supervisor creates and never copies through:

* the **ring**, written only by the sender's side: a header (the count of messages
  published, and how often a sender that publishes by itself wakes the receiver) and
  `slots` slots of `seq, time_ns, length, payload`. The receiver's
  monitor gets the memfd reopened read-only, so the host kernel refuses it any writable
  mapping, write() or truncation: nothing it does can reach what the sender reads.
* the **reader page**, written only by the receiver's side: its read position and
  counters (received, dropped, rejected). The sender of a diode never gets it; the
  sender of an ordinary queuing channel maps it read-only for back-pressure.

The sender never waits for the receiver through a diode: it overwrites the oldest slot,
and the receiver sees the loss as a gap in the sequence (each slot is a seqlock: its
`seq` is cleared before the payload is written and set after, and the receiver checks
it before and after copying). x86-64 orders stores with stores and loads with loads,
which is all a seqlock between two processes needs.

The "side" is the monitor, or the guest itself where it maps its port (docs/design/
channels.md, "Mapped ports"): then what the monitor caches is read again from the shared
page before use. Everything the other side wrote is untrusted: the geometry comes from
the supervisor, never from shared memory, and lengths and sequence numbers are checked
before use.
"""

from __future__ import annotations

import mmap
import os
import struct
import time

from karn.hints import NamedTuple

HEADER_SIZE = 64  # the ring's header: the published count and the notify interval
NOTIFY_AT = 8  # header: 0, or the ns between wake-ups of a sender's guest that maps the ring
NOTIFY_MAX_NS = 1_000_000  # what a receiver believes of it at most
SLOT_HEADER = struct.Struct("<QQI4x")  # seq (message number + 1; 0 while written), time, length
PUBLISHED = struct.Struct("<Q")
READER = struct.Struct("<QQQQ")  # read position, received, dropped, rejected
READER_SIZE = 4096
ALIGN = 64
U64 = 0xFFFFFFFFFFFFFFFF  # counters from shared memory wrap, never overflow a pack


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class Geometry(NamedTuple):
    """A ring's shape, from the supervisor to both monitors."""

    slots: int  # messages the ring holds
    slot_size: int  # the largest payload (the source port's max_size)

    @property
    def stride(self) -> int:
        return -(-(SLOT_HEADER.size + self.slot_size) // ALIGN) * ALIGN

    @property
    def size(self) -> int:
        return -(-(HEADER_SIZE + self.slots * self.stride) // mmap.PAGESIZE) * mmap.PAGESIZE

    def slot(self, seq: int) -> int:
        return HEADER_SIZE + (seq % self.slots) * self.stride


def create(name: str, size: int) -> int:
    """A zeroed memfd of `size` bytes (the supervisor keeps it across restarts)."""
    fd = os.memfd_create(f"karn-{name}", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


def reopen_readonly(fd: int) -> int:
    """A new read-only open file description of a memfd: whoever holds it cannot map it
    writable (mmap and mprotect fail with EACCES), write or truncate it."""
    return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)


def counts(mem: mmap.mmap) -> memoryview:
    """The mapping as native u64 words. An item of it is read and written with one 8-byte
    load or store (memoryview copies the item whole), where struct works byte by byte: a
    count read while the other side writes it must be its old value or its new one, never
    a mix (a published count read as 0 at 255 -> 256 would look like a count gone back)."""
    return memoryview(mem).cast("Q")


def map_readonly(fd: int, size: int) -> mmap.mmap:
    return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)


def map_writable(fd: int, size: int) -> mmap.mmap:
    return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)


class Message(NamedTuple):
    seq: int  # the message's number, from 0
    time_ns: int  # the sender monitor's CLOCK_MONOTONIC when it was written
    data: bytes


class RingWriter:
    """The sender's side: publishes messages; knows nothing of the receiver unless given
    the reader page (an ordinary queuing channel's back-pressure)."""

    def __init__(self, ring_fd: int, geometry: Geometry) -> None:
        self.geometry = geometry
        self.mem = map_writable(ring_fd, geometry.size)
        self.words = counts(self.mem)
        self.set_notify(0)  # until this run's guest maps the ring

    @property
    def published(self) -> int:
        """Read from the ring each time: a guest that maps it publishes by itself (a
        restarted sender goes on from the count)."""
        return self.words[0]

    def set_notify(self, interval_ns: int) -> None:
        """Tell the receiver that this sender's guest publishes without the monitor and
        wakes it at most every interval_ns (0: every message wakes it)."""
        self.words[NOTIFY_AT // 8] = interval_ns

    def write(self, data: bytes | bytearray | memoryview) -> None:
        seq, geo, mem = self.published, self.geometry, self.mem
        at = geo.slot(seq)
        SLOT_HEADER.pack_into(mem, at, 0, 0, 0)  # being written: a reader there retries
        mem[at + SLOT_HEADER.size : at + SLOT_HEADER.size + len(data)] = data
        SLOT_HEADER.pack_into(mem, at, (seq + 1) & U64, now_ns(), len(data))
        self.words[0] = (seq + 1) & U64

    def close(self) -> None:
        self.words.release()
        self.mem.close()


class ReaderPage:
    """The receiver's position and counters; writable only where the receiver maps it."""

    def __init__(self, fd: int, writable: bool) -> None:
        self.mem = map_writable(fd, READER_SIZE) if writable else map_readonly(fd, READER_SIZE)

    def load(self) -> tuple[int, int, int, int]:
        return READER.unpack_from(self.mem, 0)

    @property
    def position(self) -> int:
        return PUBLISHED.unpack_from(self.mem, 0)[0]

    def store(self, position: int, received: int, dropped: int, rejected: int) -> None:
        READER.pack_into(self.mem, 0, position & U64, received & U64, dropped & U64,
                         rejected & U64)

    def close(self) -> None:
        self.mem.close()


class RingReader:
    """The receiver's side, over a read-only mapping. Its position lives in its own
    reader page. `take()` returns the next message, skipping (and counting) what the
    sender overwrote before it was read; `latest()` the newest (sampling)."""

    def __init__(self, ring_fd: int, reader_fd: int, geometry: Geometry) -> None:
        self.geometry = geometry
        self.mem = map_readonly(ring_fd, geometry.size)
        self.words = counts(self.mem)
        self.page = ReaderPage(reader_fd, writable=True)
        self.guest_reads = False  # the guest maps the reader page and reads by itself
        self.reload()

    def reload(self) -> None:
        self.position, self.received, self.dropped, self.rejected = self.page.load()

    def published(self) -> int:
        return self.words[0]

    def notify_ns(self) -> int:
        """0, or how long a message may wait for its wake-up (the sender's guest wakes
        the receiver at most that often), believed up to NOTIFY_MAX_NS."""
        return min(self.words[NOTIFY_AT // 8], NOTIFY_MAX_NS)

    def pending(self) -> int:
        """Messages published and not yet read (the sender's count is not trusted to be
        ahead of ours)."""
        if self.guest_reads:
            self.reload()
        # _look as take() does: a count behind the position (reset there) must read as
        # messages waiting here too, or the fd is not readable for them
        return max(0, min(self._look() - self.position, self.geometry.slots))

    def _look(self) -> int:
        """The sender's published count, read once. A count behind our position (only
        garbage, or a 64-bit count that wrapped, can be) sets the position back to what
        the ring holds, so a sender that broke its count is read again once it writes on."""
        published = self.published()
        if published < self.position:
            self.position = max(0, published - self.geometry.slots)
        return published

    def take(self) -> Message | None:
        """The next message in order, or None when there is none yet. One look at the
        count and at most `slots` slots a call, whatever the sender writes meanwhile."""
        published = self._look()
        oldest = published - self.geometry.slots
        if self.position < oldest:  # overwritten before we came: a gap
            self.dropped += oldest - self.position
            self.position = oldest
        while self.position < published:
            message = self._copy(self.position)
            self.position += 1
            if message is not None:
                return message
            self.dropped += 1  # overwritten while we copied it
        return None

    def latest(self) -> Message | None:
        """The newest message if it is newer than the last one taken (None too while it
        is being rewritten: the next look gets the newer one); what it replaced counts as
        dropped (superseded before it was read)."""
        published = self._look()
        if published <= self.position:
            return None
        message = self._copy(published - 1)
        if message is not None:
            self.dropped += published - 1 - self.position
            self.position = published
        return message

    def peek_latest(self) -> Message | None:
        """The newest message, taken or not, without moving (a restarted receiver)."""
        published = self.published()
        return self._copy(published - 1) if published else None

    def _copy(self, seq: int) -> Message | None:
        """Slot `seq` copied out, or None if the sender has overwritten it since."""
        geo, mem = self.geometry, self.mem
        at = geo.slot(seq)
        tag, stamp, length = SLOT_HEADER.unpack_from(mem, at)
        if tag != seq + 1 or length > geo.slot_size:
            return None
        start = at + SLOT_HEADER.size
        data = mem[start : start + length]
        if SLOT_HEADER.unpack_from(mem, at)[0] != seq + 1:
            return None  # rewritten under us: the copy may be torn
        return Message(seq, min(stamp, now_ns()), data)

    def commit(self) -> None:
        """Publish the position and counters to the reader page."""
        self.page.store(self.position, self.received, self.dropped, self.rejected)

    def close(self) -> None:
        self.words.release()
        self.mem.close()
        self.page.close()


class ChannelCounters(NamedTuple):
    sent: int
    received: int
    dropped: int
    rejected: int
    queued: int


def counters(ring: mmap.mmap, page: ReaderPage, geometry: Geometry, sampling: bool
             ) -> ChannelCounters:
    """What the supervisor reports: sent from the ring, the rest from the reader page;
    messages overwritten and not yet noticed by the receiver count as dropped."""
    sent = counts(ring)[0]
    position, received, dropped, rejected = page.load()
    behind = max(0, sent - position)
    keep = 1 if sampling else geometry.slots
    queued = min(behind, keep)
    return ChannelCounters(sent, received, dropped + behind - queued, rejected, queued)
