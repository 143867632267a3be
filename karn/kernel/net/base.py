"""What every guest socket shares: a non-blocking host socket behind an OpenFile, and
the socket interface the syscall handlers call (sys_net.py).

The host socket never blocks the monitor. A guest call that would block waits on the
host fd and the task's waker together (task.waker.wait), so a signal interrupts it and
other threads keep running; O_NONBLOCK, MSG_DONTWAIT and SO_RCVTIMEO/SO_SNDTIMEO behave
as on Linux (EAGAIN).

An operation a family does not implement fails as Linux fails it for a socket without
it (EOPNOTSUPP); a family refuses an operation its socket type lacks itself (listen on a
datagram socket).
"""

from __future__ import annotations

import _socket as socket
import errno
import fcntl
import os
import select
import termios
import time
from collections.abc import Callable
from functools import partial

from karn.abi.errno import SyscallError
from karn.abi.signals import SI_USER, SIGPIPE
from karn.hints import TYPE_CHECKING, Any, NamedTuple, TypeVar
from karn.kernel.blocking import Interrupted, WouldBlock
from karn.kernel.fs.constants import OFlag
from karn.kernel.fs.file import Buffer, OpenFile, host_error
from karn.kernel.fs.stat import Stat
from karn.kernel.net.consts import (
    MSG_DONTWAIT,
    MSG_NOSIGNAL,
    MSG_PEEK,
    MSG_WAITALL,
    SOCK_STREAM,
    SOMAXCONN,
)
from karn.kernel.net.options import get_option, set_option
from karn.kernel.signals import SigInfo

if TYPE_CHECKING:
    from karn.kernel.limits import Charge
    from karn.kernel.net.addr import Address
    from karn.kernel.net.stack import NetStack
    from karn.kernel.process import Task

T = TypeVar("T")
POLLIN, POLLOUT = select.POLLIN, select.POLLOUT
HOST_FLAG_MASK = 0x1 | 0x2 | 0x4 | 0x20 | 0x80 | 0x8000  # OOB PEEK DONTROUTE TRUNC EOR MORE


class Received(NamedTuple):
    """What one recvmsg got."""

    nbytes: int  # bytes received
    flags: int  # the host's msg_flags (MSG_TRUNC, MSG_CTRUNC, ...)
    source: Address | None  # the sender as the guest sees it, when the host named one
    files: list[OpenFile]  # SCM_RIGHTS; each holds an in-flight reference unless peeked


def host_accept(sock: socket.socket) -> Callable[[], tuple[int, Any]]:
    """accept4(SOCK_CLOEXEC) on a host socket: a new fd and the peer's address. karn uses
    the C module (_socket: no enum set-up at start), whose accept is named _accept, which
    typeshed does not list."""
    return sock._accept  # type: ignore[attr-defined]


class SocketFile(OpenFile):
    """A guest socket; subclasses add addressing (inet.py, unix.py)."""

    passes_files = False  # carries SCM_RIGHTS (AF_UNIX)
    waits_itself = True  # read/write honour SO_RCVTIMEO/SO_SNDTIMEO (retry)

    def __init__(self, net: NetStack, family: int, stype: int, proto: int,
                 sock: socket.socket, nonblock: bool) -> None:
        super().__init__("", OFlag.RDWR | (OFlag.NONBLOCK if nonblock else 0))
        sock.setblocking(False)
        self.net = net
        self.family = family
        self.stype = stype
        self.proto = proto
        self.sock = sock
        self.fd = sock.fileno()
        self.rcvtimeo: float | None = None  # SO_RCVTIMEO, seconds (None: forever)
        self.sndtimeo: float | None = None
        self.listening = False
        self.opts: dict[tuple[int, int], bytes] = {}  # options the guest set, for replays
        self.charge: Charge | None = None  # its buffers' share of --memory (net/options.py)

    # -- OpenFile --------------------------------------------------------------------
    def host_fd(self) -> int | None:
        return self.fd

    def stat(self) -> Stat:
        return Stat.from_host(os.fstat(self.fd))

    def link_name(self) -> str:
        return f"socket:[{os.fstat(self.fd).st_ino}]"

    def available(self) -> int:
        buf = bytearray(4)
        try:
            fcntl.ioctl(self.fd, termios.FIONREAD, buf)
        except OSError as err:
            raise host_error(err) from None
        return int.from_bytes(buf, "little")

    def readinto(self, task: Task, view: memoryview) -> int:
        return self.recv(task, [view], 0)[0]

    def readv_into(self, task: Task, views: list[memoryview]) -> int:
        return self.recv(task, views, 0)[0]

    def write(self, task: Task, data: Buffer) -> int:
        return self.send(task, [memoryview(data)], 0, None)

    def writev(self, task: Task, bufs: list[memoryview]) -> int:
        return self.send(task, bufs, 0, None)

    def close(self) -> None:
        self.sock.close()
        if self.charge is not None:
            self.charge.drop()
            self.charge = None

    # -- the socket interface (sys_net.py) ---------------------------------------------
    def bind(self, task: Task, addr: Address) -> None:
        raise SyscallError(errno.EOPNOTSUPP)

    def connect(self, task: Task, addr: Address) -> None:
        raise SyscallError(errno.EOPNOTSUPP)

    def listen(self, task: Task, backlog: int) -> None:
        raise SyscallError(errno.EOPNOTSUPP)

    def accept(self, task: Task, nonblock: bool) -> tuple[SocketFile, Address]:
        """A new connection and its peer's address; listening sockets only."""
        raise SyscallError(errno.EOPNOTSUPP)

    def getsockname(self) -> Address:
        raise SyscallError(errno.EOPNOTSUPP)

    def getpeername(self) -> Address:
        raise SyscallError(errno.EOPNOTSUPP)

    def shutdown(self, how: int) -> None:
        try:
            self.sock.shutdown(how)
        except OSError as err:
            raise host_error(err) from None

    def sendmsg(self, task: Task, bufs: list[memoryview], flags: int, dest: Address | None,
                files: list[OpenFile] | None = None) -> int:
        """Send to dest (None: the connected peer); files only where passes_files."""
        raise SyscallError(errno.EOPNOTSUPP)

    def recvmsg(self, task: Task, views: list[memoryview], flags: int, named: bool,
                control: bool) -> Received:
        """Receive into views; named: the guest asked for the sender's address; control:
        it gave room for control messages."""
        n, _, msg_flags, host_src = self.recv(task, views, flags, 0, msg=True)
        return Received(n, msg_flags, self._source(host_src, named), [])

    def recvfrom(self, task: Task, view: memoryview, flags: int,
                 named: bool) -> tuple[int, Address | None]:
        n, _, _, host_src = self.recv(task, [view], flags)
        return n, self._source(host_src, named)

    def _source(self, host_src: object, named: bool) -> Address | None:
        return None if host_src is None or not named else self.guest_address(host_src)

    def setsockopt(self, task: Task, level: int, name: int, raw: bytes) -> None:
        set_option(task, self, level, name, raw)

    def getsockopt(self, task: Task, level: int, name: int, size: int) -> bytes:
        return get_option(task, self, level, name, size)

    def guest_address(self, host_addr: Any) -> Address:
        """The guest's view of a host socket address (a datagram's source, a peer)."""
        raise NotImplementedError

    # -- blocking --------------------------------------------------------------------
    def nonblocking(self, flags: int = 0) -> bool:
        return bool(self.flags & OFlag.NONBLOCK or flags & MSG_DONTWAIT)

    def wait(self, task: Task, events: int, deadline: float | None) -> None:
        """Wait until the host fd may be ready; EAGAIN at the deadline, Interrupted on a
        signal."""
        if task.signal_pending():
            raise Interrupted
        if deadline is not None and time.monotonic() >= deadline:
            raise SyscallError(errno.EAGAIN)
        task.waker.wait(deadline, ((self.fd, events),))

    def host_listen(self, backlog: int) -> None:
        """listen(2) on the host socket, with Linux's clamp of the backlog."""
        backlog = SOMAXCONN if backlog < 0 or backlog > SOMAXCONN else backlog
        try:
            self.sock.listen(backlog)
        except OSError as err:
            raise host_error(err) from None
        self.listening = True

    def retry(self, task: Task, op: Callable[[], T], events: int, nonblock: bool,
              timeout: float | None) -> T:
        """Run a host operation, waiting for readiness while it would block."""
        deadline = None
        while True:
            try:
                return op()
            except BlockingIOError:
                if nonblock:
                    raise SyscallError(errno.EAGAIN) from None
            except InterruptedError:
                continue
            except OSError as err:
                raise host_error(err) from None
            if deadline is None and timeout is not None:
                deadline = time.monotonic() + timeout
            self.wait(task, events, deadline)

    # -- data ------------------------------------------------------------------------
    def recv(self, task: Task, views: list[memoryview], flags: int,
             ancbufsize: int = 0, msg: bool = False) -> tuple[int, list, int, Any]:
        """(bytes, host ancillary data, msg flags, host source address)."""
        nonblock = self.nonblocking(flags)
        host_flags = flags & HOST_FLAG_MASK
        sock = self.sock

        def once() -> tuple[int, list, int, object]:
            if not msg and len(views) == 1 and not host_flags & 0x20:
                if self.stype == SOCK_STREAM:
                    return sock.recv_into(views[0], 0, host_flags), [], 0, None
                n, src = sock.recvfrom_into(views[0], 0, host_flags)
                return n, [], 0, src
            return sock.recvmsg_into(views, ancbufsize, host_flags)

        result = self.retry(task, once, POLLIN, nonblock, self.rcvtimeo)
        if flags & MSG_WAITALL and self.stype == SOCK_STREAM and not flags & MSG_PEEK:
            total = result[0]
            want = sum(len(v) for v in views)
            while 0 < total < want:
                rest = _advance(views, total)
                try:
                    n = self.recv(task, rest, flags & ~MSG_WAITALL)[0]
                except SyscallError:
                    break  # what arrived so far is the result, as Linux returns it
                except WouldBlock:  # on the fast server: what arrived is consumed, so
                    break  # it is the result (a redo would lose it), as when interrupted
                if n == 0:
                    break
                total += n
            result = (total, *result[1:])
        return result

    def send(self, task: Task, bufs: list[memoryview], flags: int, addr: Any,
             ancdata: list | None = None) -> int:
        """Stream sockets in blocking mode send everything (a signal after some data
        ends the call with what was sent); datagrams go whole or not at all."""
        nonblock = self.nonblocking(flags)
        host_flags = flags & HOST_FLAG_MASK
        sock = self.sock
        total = sum(len(b) for b in bufs)

        def once() -> int:
            if addr is None and not ancdata and len(bufs) == 1:
                return sock.send(bufs[0], host_flags)
            if addr is None:
                return sock.sendmsg(bufs, ancdata or [], host_flags)
            return sock.sendmsg(bufs, ancdata or [], host_flags, addr)

        try:
            sent = self.retry(task, once, POLLOUT, nonblock, self.sndtimeo)
        except SyscallError as err:
            if err.errno == errno.EPIPE and not flags & MSG_NOSIGNAL:
                task.process.signal_thread(task, SigInfo.from_sender(SIGPIPE, SI_USER,
                                                                     task.process.pid))
            raise
        if self.stype != SOCK_STREAM or nonblock:
            return sent
        return self._send_rest(task, bufs, sent, total, host_flags)

    def _send_rest(self, task: Task, bufs: list[memoryview], sent: int, total: int,
                   host_flags: int) -> int:
        """The rest of a blocking stream send once `sent` bytes have gone. On the fast
        transport's server, which may not wait, what is left is handed to the redo on
        the exit path: the bytes sent must not go twice (they did, under load: a 10 MiB
        sendfile arrived 16 KiB longer)."""
        while sent < total:
            rest = _advance(bufs, sent)
            try:
                n = self.retry(task, partial(self.sock.sendmsg, rest, [], host_flags),
                               POLLOUT, False, self.sndtimeo)
            except SyscallError:
                return sent  # interrupted or failed after some data: the count so far
            except WouldBlock:
                raise WouldBlock(partial(self._send_rest, task, bufs, sent, total,
                                         host_flags)) from None
            sent += n
        return sent


def _advance(views: list[memoryview], count: int) -> list[memoryview]:
    out = []
    for v in views:
        if count >= len(v):
            count -= len(v)
            continue
        out.append(v[count:])
        count = 0
    return out
