"""AF_UNIX sockets: socketpair, and named sockets in the guest's own namespace.

A name the guest binds (a path, or an abstract name) becomes a host socket file in a
private directory of the monitor, never a host path the guest names; other guest
sockets reach it by the guest name. Once the run has several processes (its first fork),
an abstract name is bound at a host path made from the name in the run's shared
directory, so every process of the run reaches it (a path name on a shared tmpfs is
found by its socket file, kernel/fs/sharedtmp.py). SCM_RIGHTS passes guest open files:
the host message carries a token fd that stands for the guest files, kept in the stack
(inflight.py) until received or dropped with the socket buffer that holds it.
"""

from __future__ import annotations

import _socket as socket
import array
import errno
import fcntl
import os
import posixpath
import select
import stat as pystat

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING, Any
from karn.kernel.fs.constants import S_IFMT, S_IFSOCK
from karn.kernel.fs.file import host_error
from karn.kernel.limits import RLIMIT_NOFILE
from karn.kernel.net.addr import Address, UnixAddr
from karn.kernel.net.base import Received, SocketFile, host_accept
from karn.kernel.net.consts import MSG_PEEK, SCM_RIGHTS, SOCK_DGRAM, SOL_SOCKET

if TYPE_CHECKING:
    from karn.kernel.fs.file import OpenFile
    from karn.kernel.fs.sharedtmp import SharedTmpFs
    from karn.kernel.net.stack import NetStack
    from karn.kernel.process import Task

SCM_MAX_FD = 253


class UnixSocket(SocketFile):
    passes_files = True
    guest_name: bytes = b""
    peer_name: bytes | None = None  # b"": connected to an unnamed socket (socketpair)
    bound_key: bytes | tuple[int, int] | None = None  # its entry in the stack's unix_names
    bound_by = 0  # the monitor process that bound it: the one that removes its host name
    shared_name = False  # bound on a filesystem processes share (a name of the run's)
    name_hold = -1  # an abstract name's hold fd (_hold): shared by every process's copy

    def _guest_name(self, task: Task, addr: Address) -> bytes:
        if not isinstance(addr, UnixAddr):
            raise SyscallError(errno.EINVAL)
        name = addr.path
        if not name:
            raise SyscallError(errno.EINVAL)
        if name[:1] != b"\0" and not name.startswith(b"/"):
            name = posixpath.normpath(posixpath.join(task.process.fs.cwd.encode(), name))
        return name

    def bind(self, task: Task, addr: Address) -> None:
        if isinstance(addr, UnixAddr) and not addr.path:  # autobind: an abstract name
            addr = UnixAddr(b"\0" + os.urandom(3).hex()[:5].encode())
        name = self._guest_name(task, addr)
        if self.guest_name:
            raise SyscallError(errno.EINVAL)
        net = self.net
        host = net.new_unix_path()
        with net.lock:
            key: bytes | tuple[int, int] = name
            host_is_shared = False
            if name[:1] != b"\0":
                key, shared = _make_socket_file(task, name)
                if shared is not None:  # other processes find it by the file's (dev, ino)
                    host, host_is_shared = shared, True
                    _remove_stale(host)
            else:
                # the run's processes find it by its name; like a private one it goes at
                # the binder's close (the host's bind says EADDRINUSE while it is bound)
                host = _abstract_host_path(task, name) or host
            if key in net.unix_names:
                raise SyscallError(errno.EADDRINUSE)
            try:
                self._bind_host(host, reclaim=not isinstance(key, tuple))
            except OSError as err:
                if isinstance(key, tuple):
                    _remove_socket_file(task, name)
                raise host_error(err) from None
            if not isinstance(key, tuple):
                self.name_hold = _hold(host)
            net.unix_names[key] = (host, self)
            net.unix_hosts[host] = name
        self.guest_name = name
        self.bound_key = key
        self.bound_by = os.getpid()
        self.shared_name = host_is_shared

    def _bind_host(self, host: str, reclaim: bool) -> None:
        """Bind the host socket; reclaim: an abstract name left by processes that all
        ended without releasing it (killed) is free again."""
        try:
            self.sock.bind(host)
        except OSError as err:
            if not (reclaim and err.errno == errno.EADDRINUSE and _release_if_unheld(host)):
                raise
            self.sock.bind(host)

    def _target(self, task: Task, name: bytes) -> str:
        """The host path of the socket a guest name reaches: an abstract name's, or the one
        bound to the socket file at a path (ENOENT without one, ECONNREFUSED for a file
        that is no socket or one nothing is bound to now)."""
        key: bytes | tuple[int, int] = name
        shared = None
        if name[:1] != b"\0":
            r = task.process.fs.resolve(os.fsdecode(name))
            st = r.require()
            if st.mode & S_IFMT != S_IFSOCK:
                raise SyscallError(errno.ECONNREFUSED)
            key = (st.dev, st.ino)
            shared = r.fs.socket_host_path(key)
        else:
            shared = _abstract_host_path(task, name)
            if shared is not None and not os.path.lexists(shared):
                raise SyscallError(errno.ECONNREFUSED)  # not ENOENT: no file is named
        entry = self.net.unix_names.get(key)
        if entry is not None:
            return entry[0]
        if shared is not None:  # bound by another process of the run, or by none
            return shared  # ECONNREFUSED from the host if none
        raise SyscallError(errno.ECONNREFUSED)

    def connect(self, task: Task, addr: Address) -> None:
        name = self._guest_name(task, addr)
        host = self._target(task, name)
        while True:
            try:
                self.sock.connect(host)
                break
            except BlockingIOError:  # the listener's backlog is full
                if self.nonblocking():
                    raise SyscallError(errno.EAGAIN) from None
                self.wait(task, 0, None)  # woken by signals only: poll the backlog again
            except OSError as err:
                raise host_error(err) from None
        self.peer_name = name

    def listen(self, task: Task, backlog: int) -> None:
        if self.stype == SOCK_DGRAM:
            raise SyscallError(errno.EOPNOTSUPP)
        if not self.guest_name:
            self.bind(task, UnixAddr(b""))
        self.host_listen(backlog)

    def accept(self, task: Task, nonblock: bool) -> tuple[UnixSocket, UnixAddr]:
        if self.stype == SOCK_DGRAM:
            raise SyscallError(errno.EOPNOTSUPP)
        if not self.listening:
            raise SyscallError(errno.EINVAL)
        fd, peer = self.retry(task, host_accept(self.sock), select.POLLIN, self.nonblocking(),
                              self.rcvtimeo)
        conn = socket.socket(socket.AF_UNIX, self.stype, 0, fd)
        new = UnixSocket(self.net, self.family, self.stype, self.proto, conn, nonblock)
        new.guest_name = self.guest_name
        new.peer_name = self._name_of(peer)
        return new, UnixAddr(new.peer_name or b"")

    def _name_of(self, host: object) -> bytes:
        if isinstance(host, str) and host:
            return self.net.unix_hosts.get(host, b"")
        return b""

    def getsockname(self) -> UnixAddr:
        return UnixAddr(self.guest_name)

    def getpeername(self) -> UnixAddr:
        if self.peer_name is None:
            try:
                self.sock.getpeername()
            except OSError as err:
                raise host_error(err) from None
            return UnixAddr(b"")
        return UnixAddr(self.peer_name)

    def guest_address(self, host_addr: Any) -> UnixAddr:
        return UnixAddr(self._name_of(host_addr))

    def sendmsg(self, task: Task, bufs: list[memoryview], flags: int, dest: Address | None,
                files: list[OpenFile] | None = None) -> int:
        if not files:
            return self._send_to(task, bufs, flags, dest, None)
        ancdata, token = self.pack_rights(files, task.process.rlimits[RLIMIT_NOFILE][0])
        try:
            return self._send_to(task, bufs, flags, dest, ancdata)
        finally:
            os.close(token)  # the host message holds it now, or was never queued
            self.net.in_flight.reap()  # so a failed send gives the files back

    def _send_to(self, task: Task, bufs: list[memoryview], flags: int,
                 dest: Address | None, ancdata: list | None) -> int:
        target = None
        if dest is not None and self.stype != socket.SOCK_STREAM:
            target = self._target(task, self._guest_name(task, dest))
        elif dest is not None:
            raise SyscallError(errno.EISCONN if self.peer_name is not None else errno.EOPNOTSUPP)
        return self.send(task, bufs, flags, target, ancdata)

    def close(self) -> None:
        self.release_name()
        super().close()
        self.net.in_flight.reap()  # messages queued on this socket went with it

    def release_name(self) -> None:
        """The socket is closed: what it is bound to goes. The socket file stays, as on
        Linux: only what it reaches goes."""
        net = self.net
        if self.bound_key is None:
            return
        with net.lock:
            entry = net.unix_names.get(self.bound_key)
            if entry is not None and entry[1] is self:
                del net.unix_names[self.bound_key]
                net.unix_hosts.pop(entry[0], None)
                # An abstract name goes with the last process holding the socket; a
                # name on a filesystem processes share stays while any process holds
                # the socket (it goes with the socket file: unlink); a private path
                # name goes with the binder's close.
                if self.name_hold >= 0:
                    os.close(self.name_hold)
                    self.name_hold = -1
                    _release_if_unheld(entry[0])
                elif self.bound_by == os.getpid() and not self.shared_name:
                    try:
                        os.unlink(entry[0])
                    except OSError:
                        pass

    def recv(self, task: Task, views: list[memoryview], flags: int,
             ancbufsize: int = 0, msg: bool = False) -> tuple[int, list, int, object]:
        try:
            return super().recv(task, views, flags, ancbufsize, msg)
        finally:
            # A read without room for ancillary data discards a message's files.
            self.net.in_flight.reap()

    def recvmsg(self, task: Task, views: list[memoryview], flags: int, named: bool,
                control: bool) -> Received:
        # Room for tokens whenever the guest gave room for files or files are in flight
        # now: a receive that blocks may be handed a message sent after it started.
        wants_files = control or bool(self.net.in_flight.messages)
        ancsize = socket.CMSG_SPACE(4 * (1 + SCM_MAX_FD)) if wants_files else 0  # token, fds
        n, ancdata, msg_flags, host_src = self.recv(task, views, flags, ancsize, msg=True)
        files = [f for group in self.unpack_rights(task, ancdata, bool(flags & MSG_PEEK))
                 for f in group] if ancdata else []
        return Received(n, msg_flags, self._source(host_src, named), files)

    # -- SCM_RIGHTS ----------------------------------------------------------------------
    def pack_rights(self, files: list[OpenFile], limit: int) -> tuple[list, int]:
        """Host ancillary data standing for files, and the token fd to close after the
        send (then reap: a failed send dropped the token). The files' host fds follow
        the token when every file has one and they fit the host's SCM_MAX_FD beside it:
        a receiver in another process (another monitor, which does not know the token)
        makes its files from them."""
        token = self.net.in_flight.add(files, limit)
        hosts = [f.host_fd() for f in files]
        fds = [token]
        if None not in hosts and len(hosts) < SCM_MAX_FD:
            fds += [h for h in hosts if h is not None]
        return [(SOL_SOCKET, SCM_RIGHTS, array.array("i", fds).tobytes())], token

    def unpack_rights(self, task: Task, ancdata: list, peek: bool) -> list[list[OpenFile]]:
        """The files of received messages: taken out of flight, or still there when only
        peeked at (the caller gives the in-flight reference up when not peeking)."""
        out = []
        for level, kind, data in ancdata:
            if level != SOL_SOCKET or kind != SCM_RIGHTS:
                continue
            fds = array.array("i")
            fds.frombytes(data[: len(data) - len(data) % 4])
            if not fds:
                continue
            token, hosts = fds[0], list(fds[1:])
            files = self.net.in_flight.take(token, peek)
            if files is None and hosts:  # sent by another process
                files = [adopt_host_fd(task, self.net, fd, in_flight=not peek)
                         for fd in hosts]
            else:
                for fd in hosts:
                    os.close(fd)
            if files is not None:
                out.append(files)
        return out


def adopt_host_fd(task: Task, net: NetStack, fd: int, in_flight: bool) -> OpenFile:
    """A guest file over a host fd received from another process: a socket, a file of
    the run's shared tmpfs (mapped as itself, so MAP_SHARED pages stay one with the other
    processes': multiprocessing's heap arenas reach its forkserver's workers this way),
    or a host file (pipes and the files of host-backed mounts). `in_flight`: it holds the
    message's reference, which the receive gives up once installed."""
    from karn.kernel.fs.file import HostFile
    from karn.kernel.net.inet import InetSocket

    file: OpenFile
    st = os.fstat(fd)
    shared = _shared_tmpfs_of(task, st) if pystat.S_ISREG(st.st_mode) else None
    if shared is not None:
        file = shared.file_of(fd, "", fcntl.fcntl(fd, fcntl.F_GETFL))
    elif pystat.S_ISSOCK(st.st_mode):
        sock = socket.socket(fileno=fd)
        cls = UnixSocket if sock.family == socket.AF_UNIX else InetSocket
        file = cls(net, sock.family, sock.type, sock.proto, sock, False)
        if isinstance(file, UnixSocket):
            file.peer_name = b""
    else:
        accmode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        file = HostFile(fd, "", accmode)
    file.refs = 1 if in_flight else 0
    return file


def _shared_tmpfs_of(task: Task, st: os.stat_result) -> SharedTmpFs | None:
    """The shared tmpfs mount (kernel/fs/sharedtmp.py) a received regular file lives on,
    by its host device: the run's shared mounts are directories of one host directory,
    so with several the file's own mount is not told apart (the first is taken: only
    whose --tmpfs-size its growth is charged to differs)."""
    from karn.kernel.fs.sharedtmp import SharedTmpFs

    for _path, fs in task.process.fs.vfs.mount_list():
        if isinstance(fs, SharedTmpFs) and os.fstat(fs.root_fd).st_dev == st.st_dev:
            return fs
    return None


def _make_socket_file(task: Task, name: bytes) -> tuple[tuple[int, int], str | None]:
    """bind(2) on a path: a socket file there (EADDRINUSE if anything is), which stat
    shows and connect finds; its (dev, ino) names the bound socket; and the host
    path its socket is bound at if its filesystem is shared by processes."""
    fs = task.process.fs
    r = fs.resolve(os.fsdecode(name), follow=False)
    if r.stat is not None:
        raise SyscallError(errno.EADDRINUSE)
    if not r.rel or r.virtual or r.magic is not None:
        raise SyscallError(errno.EADDRINUSE)
    r.fs.mknod(r.rel, S_IFSOCK | (0o777 & ~fs.umask))
    st = r.fs.lstat(r.rel)
    key = (st.dev, st.ino)
    return key, r.fs.socket_host_path(key)


def _abstract_host_path(task: Task, name: bytes) -> str | None:
    """Where an abstract name is bound on the host once the run has several processes
    (None before: a process alone keeps its names private): in the run's shared
    directory, made at the first fork, under a digest of the name (sun_path is short)."""
    proc = task.process
    if proc.link is None:
        return None
    import hashlib

    names = os.path.join(proc.fs.shared_tmp.path(), ".abstract")
    os.makedirs(names, mode=0o700, exist_ok=True)
    return os.path.join(names, hashlib.sha256(name).hexdigest()[:40])


def _hold(host: str) -> int:
    """An abstract name's hold: a shared lock on a file beside its host socket, taken at
    bind. Every process forked since holds the same open file (a lock goes with the last
    fd of its open file), so the name is free exactly when no process holds the socket,
    as on Linux, whichever process closed it last."""
    fd = os.open(host + ".held", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def _release_if_unheld(host: str) -> bool:
    """Remove an abstract name's host socket if no process holds it any more (True, or
    it was gone already); False while some process does. The hold file goes first, under
    the exclusive lock, so a new binder never locks a file about to be removed."""
    try:
        fd = os.open(host + ".held", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = -1
    try:
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(host + ".held")
        os.unlink(host)
    except BlockingIOError:
        return False
    except FileNotFoundError:
        pass
    finally:
        if fd >= 0:
            os.close(fd)
    return True


def _remove_stale(host: str) -> None:
    """A socket left at a file's (dev, ino) belonged to a file since removed (its inode
    number now the new file's): it reaches nothing the guest can name."""
    try:
        os.unlink(host)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise host_error(err) from None


def _remove_socket_file(task: Task, name: bytes) -> None:
    r = task.process.fs.resolve(os.fsdecode(name), follow=False)
    try:
        r.fs.unlink(r.rel)
    except SyscallError:
        pass
