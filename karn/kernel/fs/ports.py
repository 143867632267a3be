"""/dev/ports: a partition's ports (docs/systems.md) as files.

Each port is one end of a channel's shared-memory ring (kernel/fs/ring.py,
docs/design/channels.md), set up by the system supervisor, which never copies a message:

* a source port writes each message into the ring and one byte into the channel's wake
  pipe (ignoring the result: a full pipe means the receiver has been told already);
* a destination port copies messages out of its read-only view of the ring, runs the
  channel's guard on its private copy (the guard is here, on the only way into this
  partition, so a sender cannot go around it), and reports each rejection on a socket
  to the supervisor, which counts nothing itself and logs the reasons.

One write() sends one message; one read() receives one. Readiness is a host fd, so
poll/select/epoll work as for a pipe: a destination's fd is a private epoll set over the
wake pipe and a private eventfd that stays set while messages wait; the source of an
ordinary queuing channel waits on an eventfd both sides share (set by the sender when
the ring is full, cleared by the receiver after each read); a diode's source has a
private eventfd that is always writable, as nothing about the receiver reaches it.

NAME.status beside each port is a text file of "key value" lines; for a sampling
destination port it tells whether the latest message is still valid (younger than the
port's refresh period).
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import select
import stat as pystat
import struct
import time
from collections.abc import Callable

from karn.abi import portmap
from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING, NamedTuple
from karn.kernel.blocking import Interrupted
from karn.kernel.fs.constants import (
    DT_CHR,
    DT_REG,
    O_ACCMODE,
    O_OPEN_ONLY,
    S_IFCHR,
    S_IFDIR,
    S_IFREG,
    ST_VALID,
    TMPFS_MAGIC,
    OFlag,
)
from karn.kernel.fs.file import (
    Buffer,
    DirEntry,
    DirListFile,
    OpenFile,
    SyntheticFile,
)
from karn.kernel.fs.filesystem import Filesystem, Rel
from karn.kernel.fs.ring import (
    READER_SIZE,
    U64,
    Geometry,
    Message,
    ReaderPage,
    RingReader,
    RingWriter,
    now_ns,
)
from karn.kernel.fs.stat import Stat, StatFs
from karn.kernel.fs.sysutil import wait_until_ready
from karn.platform.fastcall.server import load_helper
from karn.platform.hostload import SpareCore

if TYPE_CHECKING:
    from karn.kernel.process import Task

STATUS_SUFFIX = ".status"
DIRECTIONS = ("in", "out")
KINDS = ("sampling", "queuing")
FULL = 0xFFFFFFFFFFFFFFFE  # an eventfd at this count is not writable (POLLOUT off)
REPORT = struct.Struct("<QQI")  # rejection ordinal, message number, message length
MAX_REASON = 200  # characters of a rejection's reason sent (it can quote the message)
WAKE_DRAIN = 65536

Check = Callable[[bytes], bytes]  # a guard: the bytes to forward, or raises its Rejected

# A receiver about to block spins (GIL released) up to SPIN_NS for the ring's published
# count to move: a message that comes meanwhile costs no host sleep and wake-up of the
# waiting thread (and on the fast transport's server, no redo on the VM-exit path). A
# spin in vain makes the next SPIN_SKIP waits block at once, so an idle or slow
# channel's receiver burns no core. It spins only while the host seems to have a core to
# spare (load average under SPARE_LOAD per core): measured guest to guest (64 B
# ping-pong, medians of 5, 2 cores), one way 91-136 µs without and 59-70 µs with a 60 µs
# spin at load 2.2-3.0, but 5-20% slower with it at load 3.5-5 (it takes the core that
# its partner needs to send).
SPIN_NS = 60_000
SPIN_SKIP = 4
SPARE_LOAD = 1.5

# A sender's guest that maps its ring wakes the receiver at most this often (the rest of a
# burst is seen by a receiver awake anyway, or by its last wait: DestPort.wait_for_data).
NOTIFY_NS = 100_000


def _spin_helper() -> Callable[[mmap.mmap, int, int, int], int] | None:
    """The C spin (karn/platform/fastcall/_fastpoll.c wait_u64), or None where it was not
    built: then a wait blocks at once, as before."""
    helper = load_helper()
    return None if helper is None else getattr(helper, "wait_u64", None)


_wait_u64 = _spin_helper()


spare_core = SpareCore(SPARE_LOAD)


class PortSpec(NamedTuple):
    """One port as the supervisor hands it to `karn run --port JSON`: the port, its
    channel's ring geometry and limit, and the host fds the monitor inherits (-1: none).
    `guard` is the channel's guard, for the guard process; `check` is built from it."""

    name: str
    direction: str
    kind: str
    max_size: int
    ring: int  # the ring memfd (read-only for a destination)
    wake: int  # the wake pipe: write end (source) or read end (destination)
    reader: int = -1  # reader page: writable (destination), read-only (queuing source)
    space: int = -1  # shared eventfd of an ordinary queuing channel
    report: int = -1  # destination: rejection reports to the supervisor
    slots: int = 1
    slot_size: int = 0
    limit: int = 0  # the channel's max_size
    refresh_ms: float = 0.0
    map_ring: bool = True  # a source's guest may map the ring (a diode's: if the system says)
    guard: dict | None = None
    check: Check | None = None

    @classmethod
    def parse(cls, text: str, guarded: bool = False) -> PortSpec:
        """A port from its JSON; a guard only where one runs (`guarded`: the guard
        process), never in a partition's monitor."""
        try:
            fields = json.loads(text)
            if not isinstance(fields, dict) or "check" in fields or (
                    fields.get("guard") is not None and not guarded):
                raise ValueError
            spec = cls(**fields)
        except (ValueError, TypeError):
            raise ValueError(f"invalid port {text[:200]!r}") from None
        name = spec.name
        if not isinstance(name, str) or not name or "/" in name or name.startswith(".") \
                or name.endswith(STATUS_SUFFIX):
            raise ValueError(f"invalid port name {name!r}")
        numbers = (spec.max_size, spec.ring, spec.wake, spec.reader, spec.space, spec.report,
                   spec.slots, spec.slot_size, spec.limit)
        if (spec.direction not in DIRECTIONS or spec.kind not in KINDS
                or not all(type(n) is int for n in numbers)
                or not isinstance(spec.refresh_ms, (int, float)) or spec.refresh_ms < 0
                or type(spec.map_ring) is not bool
                or spec.max_size <= 0 or spec.slots <= 0 or spec.limit <= 0
                or (spec.direction == "out" and spec.slot_size < spec.max_size)
                or (spec.guard is not None and not isinstance(spec.guard, dict))):
            raise ValueError(f"invalid port {name!r}")
        source = spec.direction == "out"
        need = [("ring", spec.ring, pystat.S_ISREG), ("wake", spec.wake, pystat.S_ISFIFO)]
        if spec.reader >= 0 or not source:
            need.append(("reader", spec.reader, pystat.S_ISREG))
        if spec.space >= 0:
            need.append(("space", spec.space, lambda _m: True))
        if not source:
            need.append(("report", spec.report, pystat.S_ISSOCK))
        for what, fd, kind in need:
            try:
                ok = kind(os.fstat(fd).st_mode)
            except OSError:
                ok = False
            if not ok:
                raise ValueError(f"invalid port {name!r}: {what} fd {fd} is not open")
        return spec

    def format(self) -> str:
        fields = self._asdict()
        del fields["check"]
        return json.dumps(fields, separators=(",", ":"))

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.slots, self.slot_size)


def _eventfd() -> int:
    return os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)


class SourcePort:
    """Writes messages into the ring. Through a diode it never reads anything the
    receiver writes; an ordinary queuing channel reads the receiver's position."""

    def __init__(self, spec: PortSpec) -> None:
        self.spec = spec
        self.writer = RingWriter(spec.ring, spec.geometry)
        self.wake = spec.wake
        os.set_blocking(self.wake, False)
        self.page = ReaderPage(spec.reader, writable=False) if spec.reader >= 0 else None
        self.ready = spec.space if spec.space >= 0 else _eventfd()  # a diode: always writable

    def send(self, data: Buffer) -> int:
        if len(data) > self.spec.max_size:
            raise SyscallError(errno.EMSGSIZE)
        if self.page is not None and self.full():
            raise SyscallError(errno.EAGAIN)
        self.writer.write(data)
        self.notify()
        return len(data)

    def room(self) -> int:
        """Messages that fit before the receiver must read (any number through a diode:
        the oldest are overwritten)."""
        slots = self.spec.slots
        if self.page is None:
            return slots
        # the receiver's position is what it says (a guest may write it): never more
        # than the ring, so no unread slot is overwritten
        return max(0, min(slots, slots - (self.writer.published - self.page.position)))

    def send_many(self, messages: list[bytes]) -> None:
        """Messages that fit (room(), each within max_size), with one wake-up for all."""
        for data in messages:
            if len(data) > self.spec.max_size:
                raise SyscallError(errno.EMSGSIZE)
            self.writer.write(data)
        self.notify()

    def notify(self) -> None:
        try:
            os.write(self.wake, b"\0")
        except OSError:
            pass  # full: the receiver has wake-ups enough; its result is never looked at

    def full(self) -> bool:
        """Is the queue full? If so, mark the shared eventfd unwritable, then look again:
        the receiver clears the mark after every read (after moving its position), so
        either it sees our mark or we see its move."""
        assert self.page is not None
        if self.writer.published - self.page.position < self.spec.slots:
            return False
        try:
            os.eventfd_write(self.ready, FULL)
        except BlockingIOError:
            pass  # marked already
        if self.writer.published - self.page.position < self.spec.slots:
            try:
                os.eventfd_read(self.ready)
            except BlockingIOError:
                pass
            return False
        return True


class DestPort:
    """Reads messages from its read-only view of the ring, through the guard."""

    def __init__(self, spec: PortSpec) -> None:
        self.spec = spec
        self.ring = RingReader(spec.ring, spec.reader, spec.geometry)
        self.wake = spec.wake
        os.set_blocking(self.wake, False)
        os.set_blocking(spec.report, False)
        self.flag = _eventfd()  # set while messages wait whose wake-up byte may be gone
        self.flagged = False
        self.epoll = select.epoll(flags=select.EPOLL_CLOEXEC)
        self.epoll.register(self.wake, select.EPOLLIN)
        self.epoll.register(self.flag, select.EPOLLIN)
        self.skip = 0  # waits left that block without spinning (after a spin in vain)
        self.drained_ns = 0  # when wake-up bytes were last drained (CLOCK_MONOTONIC)
        self.moved = False  # the position moved since it was last published
        self.latest: bytes | None = None  # sampling: the latest accepted message
        self.latest_ns = 0  # its sender's monitor's monotonic time
        self.received = 0
        if spec.kind == "sampling":
            message = self.ring.peek_latest()  # a restarted receiver sees the current value
            if message is not None and message.seq < self.ring.position:
                self.latest = self._accept(message, count=False)
        self.seen = self.ring.position  # where the guest had read to, when it reads itself
        self._settle()

    # -- readiness ------------------------------------------------------------------------
    def _set_flag(self, on: bool) -> None:
        if on == self.flagged:
            return
        if on:
            os.eventfd_write(self.flag, 1)
        else:
            try:
                os.eventfd_read(self.flag)
            except BlockingIOError:
                pass
        self.flagged = on

    def _settle(self) -> bool:
        """Make the fd readable exactly while messages wait; True if any do. Wake-up
        bytes are drained only with the ring found empty, and it is looked at again
        after: a byte written after the drain keeps the fd readable by itself."""
        if self.ring.pending():
            self._set_flag(True)
            return True
        self._set_flag(False)
        try:
            while len(os.read(self.wake, WAKE_DRAIN)) == WAKE_DRAIN:
                pass
        except OSError:
            pass
        self.drained_ns = now_ns()
        waiting = self.ring.pending() > 0
        self._set_flag(waiting)
        return waiting

    def wait_for_data(self) -> bool:
        """Before the receiver blocks: spin a little for a message (SPIN_NS); True if one
        waits now (the fd is readable). Where the sender's guest publishes by itself and
        wakes the receiver at most every N ns, the receiver also waits until N ns after
        its last drain of wake-ups before it may block for good: a message not woken for
        came within N ns of one that was, so it is seen by then (docs/design/channels.md,
        "Mapped ports")."""
        ring = self.ring
        if ring.pending():
            return self._settle()
        if _wait_u64 is not None and not self.skip and spare_core():
            seen = ring.published()
            if _wait_u64(ring.mem, 0, seen, SPIN_NS) != seen:
                return self._settle()
            self.skip = SPIN_SKIP
        else:
            self.skip = max(0, self.skip - 1)
        notify = ring.notify_ns()
        if notify:
            # (+1/64: the sender's clock is the guest's, slewed against the host's)
            left = self.drained_ns + notify + notify // 64 - now_ns()
            if left > 0:  # select: µs where epoll rounds up to whole ms
                select.select([self.epoll.fileno()], [], [], left / 1e9)  # a wake-up ends it
            if ring.pending():  # looked at without a drain: the wake-ups since stay
                return self._settle()
        return False

    def arm(self) -> int:
        """The guest read the ring by itself: readiness follows the ring again (the
        flag may say messages wait that the guest took). Messages waiting."""
        self._settle()
        return min(self.ring.pending(), 0x7FFFFFFF)  # ioctl returns an int

    def free_space(self) -> None:
        """The position moved (here, or by the guest itself: PORT_FREED): a sender held
        back may go on."""
        if self.spec.space >= 0:
            try:
                os.eventfd_read(self.spec.space)
            except BlockingIOError:
                pass

    # -- messages -------------------------------------------------------------------------
    def _judge(self, message: Message, count: bool = True) -> bytes | None:
        """What to deliver, or None when the guard rejected it (counted and reported)."""
        data, spec = message.data, self.spec
        try:
            if len(data) > spec.limit:
                raise ValueError(f"size over the channel's limit of {spec.limit}")
            if spec.check is None:
                return data
            forward = spec.check(data)
            if len(forward) > spec.limit:  # a canonical number can be longer
                raise ValueError(f"canonical form ({len(forward)} bytes) over the channel's "
                                 f"limit of {spec.limit}")
            return forward
        except Exception as err:  # noqa: BLE001 - the guard's Rejected, or a failure: reject
            if count:
                self._reject(message, str(err))
            return None

    def _reject(self, message: Message, reason: str) -> None:
        ring = self.ring
        ring.rejected += 1
        if len(reason) > MAX_REASON:
            reason = reason[:MAX_REASON] + "..."
        try:
            os.write(self.spec.report, REPORT.pack(ring.rejected & U64, message.seq + 1,
                                                   len(message.data)) + reason.encode())
        except OSError:
            pass  # supervisor busy or gone: it sums up from the counter instead

    def _accept(self, message: Message, count: bool = True) -> bytes | None:
        forward = self._judge(message, count)
        if forward is not None:
            self.latest_ns = message.time_ns
            if count:
                self.ring.received += 1
                self.received += 1
        return forward

    def _done(self) -> None:
        """Publish position and counters, then free the sender (queuing back-pressure)."""
        self.ring.commit()
        self.free_space()

    def next_queued(self) -> bytes | None:
        """The next message the guard lets through, or None when none waits."""
        taken = self.take_queued(1)
        return taken[0] if taken else None

    def take_queued(self, limit: int, commit: bool = True) -> list[bytes]:
        """Up to `limit` messages the guard lets through, in order (none when none
        waits); the position and counters are published once for them all, here or
        (commit False: the guard process, once it has passed them on) by commit_taken."""
        ring = self.ring
        if ring.guest_reads:
            ring.reload()  # once: the guest may have read on by itself
        taken: list[bytes] = []
        for _ in range(2):  # a second look if a message came as the wake-ups were drained
            while len(taken) < limit:
                before = ring.position
                message = ring.take()
                self.moved = self.moved or ring.position != before  # skipped slots too
                if message is None:
                    break
                forward = self._accept(message)
                if forward is not None:
                    taken.append(forward)
            if commit:
                self.commit_taken()
            if not self._settle() or taken or limit <= 0:
                break
        return taken

    def commit_taken(self) -> None:
        if self.moved:
            self.moved = False
            self._done()

    def receive_queued(self, views: list[memoryview]) -> int:
        forward = self.next_queued()
        if forward is None:
            raise SyscallError(errno.EAGAIN)
        return _scatter(forward, views)

    def refresh_sampling(self) -> bool:
        """Take the newest message, if newer than the last one; True if it was let
        through (a new latest)."""
        ring = self.ring
        if ring.guest_reads:
            ring.reload()
            if ring.position != self.seen:  # the guest took newer ones itself
                newest = ring.peek_latest()
                forward = None if newest is None or newest.seq >= ring.position \
                    else self._accept(newest, count=False)
                if forward is not None:
                    self.latest = forward
        message = ring.latest()
        self.seen = ring.position
        fresh = False
        if message is not None:
            forward = self._accept(message)
            if forward is not None:
                self.latest, fresh = forward, True
            self._done()
        self._settle()
        return fresh

    def receive_sampling(self, views: list[memoryview]) -> int:
        self.refresh_sampling()
        if self.latest is None:
            raise SyscallError(errno.EAGAIN)
        return _scatter(self.latest, views)


def _scatter(data: bytes, views: list[memoryview]) -> int:
    """As readv: the message over the buffers; what does not fit is discarded."""
    done = 0
    for view in views:
        n = min(len(view), len(data) - done)
        view[:n] = data[done : done + n]
        done += n
    return done


class Port:
    """One port of this partition (shared by every open file of it)."""

    def __init__(self, spec: PortSpec) -> None:
        self.spec = spec
        self.source = spec.direction == "out"
        self.out = SourcePort(spec) if self.source else None
        self.into = None if self.source else DestPort(spec)

    @property
    def fd(self) -> int:
        """The host fd whose readiness is the port's."""
        if self.out is not None:
            return self.out.ready
        assert self.into is not None
        return self.into.epoll.fileno()

    @property
    def latest(self) -> bytes | None:
        return self.into.latest if self.into is not None else None

    def info(self) -> bytes:
        """struct karn_port_info for a guest that maps this port."""
        spec, geo = self.spec, self.spec.geometry
        flags = (portmap.FLAG_SOURCE if self.source else 0) | (
            portmap.FLAG_QUEUING if spec.kind == "queuing" else 0) | (
            portmap.FLAG_BACKPRESSURE if spec.space >= 0 else 0)
        limit = spec.max_size if self.source else spec.limit
        return portmap.INFO.pack(portmap.INFO_VERSION, flags, geo.slots, geo.slot_size,
                                 geo.stride, geo.size, geo.size, limit,
                                 NOTIFY_NS if self.source else 0)

    def status(self) -> bytes:
        spec = self.spec
        lines = [f"kind {spec.kind}", f"direction {spec.direction}",
                 f"max_size {spec.max_size}"]
        dest = self.into
        if dest is not None:
            if spec.kind == "sampling":
                dest.refresh_sampling()
                lines.append(f"refresh_ms {spec.refresh_ms:g}")
            if dest.latest_ns:
                age_ms = (time.clock_gettime_ns(time.CLOCK_MONOTONIC) - dest.latest_ns) / 1e6
                if spec.kind == "sampling":
                    valid = spec.refresh_ms == 0 or age_ms <= spec.refresh_ms
                    lines.append(f"valid {int(valid)}")
                lines.append(f"age_ms {age_ms:.3f}")
            elif spec.kind == "sampling":
                lines.append("valid 0")
            if dest.ring.guest_reads:  # counted in the reader page by the guest too
                dest.ring.reload()
                lines.append(f"received {dest.ring.received}")
            else:
                lines.append(f"received {dest.received}")
        return ("\n".join(lines) + "\n").encode()


class PortFile(OpenFile):
    def __init__(self, port: Port, path: str, flags: int, st: Stat) -> None:
        super().__init__(path, flags)
        self.port = port
        self._stat = st

    waits_itself = True  # a blocking read or write waits here, on the port's fd

    @property
    def is_regular(self) -> bool:  # type: ignore[override]  # a class attribute elsewhere
        # A sampling read never waits once a message has arrived: it returns the latest.
        return self.port.spec.kind == "sampling" and self.port.latest is not None

    def readinto(self, task: Task, view: memoryview) -> int:
        return self.readv_into(task, [view])

    def readv_into(self, task: Task, views: list[memoryview]) -> int:
        """One message, scattered over the buffers."""
        dest = self.port.into
        if dest is None:
            raise SyscallError(errno.EBADF)
        receive = dest.receive_sampling if self.port.spec.kind == "sampling" \
            else dest.receive_queued
        while True:
            try:
                return receive(views)
            except SyscallError as err:
                if err.errno != errno.EAGAIN:
                    raise
                self._wait(task, select.POLLIN)

    def write(self, task: Task, data: Buffer) -> int:
        out = self.port.out
        if out is None:
            raise SyscallError(errno.EBADF)
        while True:
            try:
                return out.send(data)
            except SyscallError as err:
                if err.errno != errno.EAGAIN:
                    raise
                self._wait(task, select.POLLOUT)

    def _wait(self, task: Task, events: int) -> None:
        """EAGAIN under O_NONBLOCK; else wait for the port's fd (a signal interrupts)."""
        if self.flags & OFlag.NONBLOCK:
            raise SyscallError(errno.EAGAIN)
        if task.signal_pending():  # a sender that keeps publishing garbage never lets
            raise Interrupted  # a read find a message: it must not keep it from signals
        if self.ready_soon(events):
            return
        wait_until_ready(task, self, events, copying=True)

    def ready_soon(self, events: int) -> bool:
        dest = self.port.into
        return dest is not None and bool(events & select.POLLIN) and dest.wait_for_data()

    def writev(self, task: Task, bufs: list[memoryview]) -> int:
        return self.write(task, b"".join(bufs))  # the buffers make one message

    def available(self) -> int:
        latest = self.port.latest
        return len(latest) if latest is not None else 0

    def host_fd(self) -> int | None:
        return self.port.fd

    def stat(self) -> Stat:
        return self._stat

    def reopen(self, flags: int) -> OpenFile:
        return PortFile(self.port, self.path, flags & ~O_OPEN_ONLY, self._stat)

    # -- a guest that maps its port (abi/portmap.py) --------------------------------------
    def own_ioctl(self, task: Task, request: int, arg: int) -> int | None:
        port = self.port
        if request == portmap.PORT_INFO:
            task.mem.write(arg, port.info())
            return 0
        if request == portmap.PORT_NOTIFY and port.out is not None:
            port.out.notify()
            return 0
        if request == portmap.PORT_ARM and port.into is not None:
            return port.into.arm()
        if request == portmap.PORT_FREED and port.into is not None:
            port.into.free_space()
            return 0
        return None

    def device_mapping(self, offset: int, length: int, prot: int, shared: bool
                       ) -> tuple[int, int, bool]:
        """What a MAP_SHARED mapping at `offset` is: (host fd, its offset, writable).
        Read-only ones are host private mappings of a read-only file, so nothing the
        guest writes there reaches the other side (ring.reopen_readonly)."""
        port, spec = self.port, self.port.spec
        ring_size = spec.geometry.size
        if not shared:
            raise SyscallError(errno.EINVAL)
        if offset == 0 and length <= ring_size:
            if port.out is not None:
                if not spec.map_ring:  # a diode whose system did not allow it
                    raise SyscallError(errno.EACCES)
                port.out.writer.set_notify(NOTIFY_NS)  # it may publish by itself now
                return spec.ring, 0, True
            if prot & mmap.PROT_WRITE:
                raise SyscallError(errno.EACCES)
            return spec.ring, 0, False
        if offset == ring_size and length <= READER_SIZE:
            if port.into is not None:
                port.into.ring.guest_reads = True
                return spec.reader, 0, True
            if spec.reader < 0 or prot & mmap.PROT_WRITE:
                raise SyscallError(errno.EACCES)  # a diode's sender never sees it
            return spec.reader, 0, False
        raise SyscallError(errno.EINVAL)


class PortsFs(Filesystem):
    """The flat directory /dev/ports: NAME (the port) and NAME.status for each port."""

    fstype = "karnports"
    readonly = True

    def __init__(self, specs: list[PortSpec]) -> None:
        super().__init__()
        self.ports = {s.name: Port(s) for s in specs}
        self._inos: dict[str, int] = {}
        for name in self.ports:
            self._inos[name] = len(self._inos) + 2
            self._inos[name + STATUS_SUFFIX] = len(self._inos) + 2

    def _lookup(self, rel: Rel) -> tuple[Port, bool]:
        if len(rel) != 1 or rel[0] not in self._inos:
            raise SyscallError(errno.ENOENT)
        name = rel[0]
        if name in self.ports:
            return self.ports[name], False
        return self.ports[name.removesuffix(STATUS_SUFFIX)], True

    def lstat(self, rel: Rel) -> Stat:
        if not rel:
            return Stat(mode=S_IFDIR | 0o555, ino=1, dev=self.dev, nlink=2, size=0)
        port, status = self._lookup(rel)
        if status:
            return Stat(mode=S_IFREG | 0o444, ino=self._inos[rel[0]], dev=self.dev)
        mode = 0o222 if port.source else 0o444  # one direction only
        return Stat(mode=S_IFCHR | mode, ino=self._inos[rel[0]], dev=self.dev)

    def open(self, rel: Rel, flags: int, mode: int, path: str) -> OpenFile:
        st = self.lstat(rel)
        if not rel:
            if flags & (OFlag.WRONLY | OFlag.RDWR):
                raise SyscallError(errno.EISDIR)
            entries = [DirEntry(n, i, DT_REG if n.endswith(STATUS_SUFFIX) else DT_CHR)
                       for n, i in self._inos.items()]
            return DirListFile(path, flags & ~O_OPEN_ONLY, entries, st)
        if flags & OFlag.DIRECTORY:
            raise SyscallError(errno.ENOTDIR)
        port, status = self._lookup(rel)
        access = flags & O_ACCMODE
        if status:
            if access != OFlag.RDONLY:
                raise SyscallError(errno.EACCES)
            return SyntheticFile(path, flags & ~O_OPEN_ONLY, port.status(), st.ino, self.dev)
        if access == OFlag.RDWR or (access == OFlag.WRONLY) != port.source:
            raise SyscallError(errno.EACCES)  # a port is one-way: never both, never reversed
        return PortFile(port, path, flags & ~O_OPEN_ONLY, st)

    def statfs(self) -> StatFs:
        return StatFs(TMPFS_MAGIC, files=len(self._inos), flags=ST_VALID)
