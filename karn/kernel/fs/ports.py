"""/dev/ports: a partition's ports (docs/systems.md) as files.

Each port is one host SOCK_SEQPACKET socket to the system supervisor, which owns the
channels. One write() sends one message; one read() receives one. The socket is the
file's host fd, so poll/select/epoll and blocking reads work like for a pipe.

Messages from the supervisor carry an 8-byte header: the supervisor's CLOCK_MONOTONIC
time (ns) when the sender's message arrived. A queuing-port read answers each message
with one byte, so the supervisor knows how many messages the receiver still holds (the
queue depth is exact). Nothing ever travels back to a sending port.

NAME.status beside each port is a text file of "key value" lines; for a sampling
destination port it tells whether the latest message is still valid (younger than the
port's refresh period).
"""

from __future__ import annotations

import errno
import os
import stat as pystat
import struct
import time
from typing import TYPE_CHECKING, NamedTuple

from karn.abi.errno import SyscallError
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
    host_error,
)
from karn.kernel.fs.filesystem import Filesystem, Rel
from karn.kernel.fs.stat import Stat, StatFs

if TYPE_CHECKING:
    from karn.kernel.process import Task

HEADER = struct.Struct("<Q")
ACK = b"\x01"
STATUS_SUFFIX = ".status"
DIRECTIONS = ("in", "out")
KINDS = ("sampling", "queuing")


class PortSpec(NamedTuple):
    """How `karn run --port` names one port: NAME:in|out:sampling|queuing:MAX:FD[:REFRESH_MS]."""

    name: str
    direction: str
    kind: str
    max_size: int
    fd: int
    refresh_ms: float = 0.0

    @classmethod
    def parse(cls, text: str) -> PortSpec:
        parts = text.split(":")
        if len(parts) not in (5, 6) or parts[1] not in DIRECTIONS or parts[2] not in KINDS:
            raise ValueError(f"invalid port {text!r} (NAME:in|out:sampling|queuing:MAX:FD)")
        name = parts[0]
        if not name or "/" in name or name.startswith(".") or name.endswith(STATUS_SUFFIX):
            raise ValueError(f"invalid port name {name!r}")
        try:
            max_size, fd = int(parts[3]), int(parts[4])
            refresh = float(parts[5]) if len(parts) == 6 else 0.0
        except ValueError:
            raise ValueError(f"invalid port {text!r}: MAX, FD and REFRESH are numbers") from None
        if max_size <= 0 or fd < 0 or refresh < 0:
            raise ValueError(f"invalid port {text!r}")
        try:
            is_socket = pystat.S_ISSOCK(os.fstat(fd).st_mode)
        except OSError:
            is_socket = False
        if not is_socket:
            raise ValueError(f"invalid port {text!r}: fd {fd} is not an open socket")
        return cls(name, parts[1], parts[2], max_size, fd, refresh)

    def format(self) -> str:
        return ":".join(str(v) for v in self)


class Port:
    """One port of this partition: its socket and, for a sampling destination, the
    latest message seen (shared by every open file of the port)."""

    def __init__(self, spec: PortSpec) -> None:
        self.spec = spec
        self.fd = spec.fd
        os.set_blocking(self.fd, False)
        self.latest: bytes | None = None
        self.latest_ns = 0  # supervisor's monotonic time of the latest message
        self.received = 0

    @property
    def source(self) -> bool:
        return self.spec.direction == "out"

    def send(self, data: Buffer) -> int:
        if len(data) > self.spec.max_size:
            raise SyscallError(errno.EMSGSIZE)
        try:
            os.write(self.fd, data)
        except BlockingIOError:
            raise SyscallError(errno.EAGAIN) from None
        except OSError:
            pass  # supervisor gone (system going down): the message is lost, as on a wire
        return len(data)

    def receive_queued(self, views: list[memoryview]) -> int:
        header = bytearray(HEADER.size)
        try:
            n = os.readv(self.fd, [header, *views])  # a longer message is truncated
        except BlockingIOError:
            raise SyscallError(errno.EAGAIN) from None
        except OSError as err:
            raise host_error(err) from None
        if n < HEADER.size:
            raise SyscallError(errno.EAGAIN)  # supervisor gone: nothing will come
        try:
            os.write(self.fd, ACK)
        except OSError:
            pass  # supervisor gone or its ack buffer full: it recounts on restart
        self.received += 1
        self.latest_ns = HEADER.unpack(header)[0]
        return n - HEADER.size

    def refresh_sampling(self) -> None:
        """Take every message waiting in the socket; keep the newest."""
        while True:
            try:
                data = os.read(self.fd, HEADER.size + self.spec.max_size)
            except OSError:
                return
            if len(data) < HEADER.size:
                return
            self.latest_ns = HEADER.unpack_from(data)[0]
            self.latest = data[HEADER.size :]
            self.received += 1

    def receive_sampling(self, views: list[memoryview]) -> int:
        self.refresh_sampling()
        if self.latest is None:
            raise SyscallError(errno.EAGAIN)
        done = 0
        for view in views:  # scattered like readv
            n = min(len(view), len(self.latest) - done)
            view[:n] = self.latest[done : done + n]
            done += n
        return done

    def status(self) -> bytes:
        spec = self.spec
        lines = [f"kind {spec.kind}", f"direction {spec.direction}",
                 f"max_size {spec.max_size}"]
        if spec.direction == "in":
            if spec.kind == "sampling":
                self.refresh_sampling()
                lines.append(f"refresh_ms {spec.refresh_ms:g}")
            if self.latest_ns:
                age_ms = (time.clock_gettime_ns(time.CLOCK_MONOTONIC) - self.latest_ns) / 1e6
                if spec.kind == "sampling":
                    valid = spec.refresh_ms == 0 or age_ms <= spec.refresh_ms
                    lines.append(f"valid {int(valid)}")
                lines.append(f"age_ms {age_ms:.3f}")
            elif spec.kind == "sampling":
                lines.append("valid 0")
            lines.append(f"received {self.received}")
        return ("\n".join(lines) + "\n").encode()


class PortFile(OpenFile):
    def __init__(self, port: Port, path: str, flags: int, st: Stat) -> None:
        super().__init__(path, flags)
        self.port = port
        self._stat = st

    @property
    def is_regular(self) -> bool:  # type: ignore[override]  # a class attribute elsewhere
        # A sampling read never waits once a message has arrived: it returns the latest.
        return self.port.spec.kind == "sampling" and self.port.latest is not None

    def readinto(self, task: Task, view: memoryview) -> int:
        return self.readv_into(task, [view])

    def readv_into(self, task: Task, views: list[memoryview]) -> int:
        """One message, scattered over the buffers."""
        port = self.port
        if port.source:
            raise SyscallError(errno.EBADF)
        if port.spec.kind == "sampling":
            return port.receive_sampling(views)
        return port.receive_queued(views)

    def write(self, task: Task, data: Buffer) -> int:
        if not self.port.source:
            raise SyscallError(errno.EBADF)
        return self.port.send(data)

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
