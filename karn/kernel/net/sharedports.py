"""Guest loopback ports the run's processes share, once it has several (after its first fork).

Each process keeps its own port table (stack.py); this directory tells the others what is
bound. Every bound guest INET socket has an entry file named by what a connect needs: the
protocol, guest port, which loopbacks it answers, SO_REUSEPORT, whether it is published,
the host family, address and port. The entry lives while some process holds the socket:
its bind takes a shared flock on the entry, and every process forked since holds that
same open file (a lock goes with the last fd of its open file), as for abstract AF_UNIX
names (unix.py). The process whose close finds the entry no longer held removes it; one
left by processes that all ended (killed) is removed by the next look that finds it
unheld. Only a process's misses come here: its own sockets, and those it inherited, are
in its table.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator

from karn.hints import NamedTuple

_libc = ctypes.CDLL(None, use_errno=True)
SYS_renameat2, AT_FDCWD, RENAME_NOREPLACE = 316, -100, 1
_BUSY = -2
_ATTEMPTS = 200  # _BUSY_WAIT apart: a remover unlinks within µs, a stuck lock is given up on
_BUSY_WAIT = 0.0005


class PortEntry(NamedTuple):
    """A guest socket bound in some process of the run."""

    proto: str
    guest_port: int
    covers: int  # 1 IPv4 loopbacks, 2 IPv6, 3 both (InetSocket.covers)
    reuseport: bool
    published: bool  # a published listener takes peers unsigned
    family: int  # of the host socket
    host_ip: str
    host_port: int

    def name(self) -> str:
        return (f"{self.proto}-{self.guest_port}-{self.covers}-{int(self.reuseport)}-"
                f"{int(self.published)}-{self.family}-{self.host_ip}-{self.host_port}")

    @classmethod
    def parse(cls, name: str) -> PortEntry | None:
        parts = name.split("-")
        if len(parts) != 8 or not all(p.isdigit() for p in parts[1:6] + parts[7:]):
            return None  # (a bind's file before its rename starts with ".")
        proto, port, covers, reuse, pub, family, ip, host_port = parts
        return cls(proto, int(port), int(covers), reuse == "1", pub == "1", int(family), ip,
                   int(host_port))


class SharedPorts:
    def __init__(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.directory = directory

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def hold(self, entry: PortEntry) -> int:
        """The entry published, held by the returned fd (release() it at the close). A
        socket sharing another's host port (SO_REUSEPORT) joins that entry."""
        source = self._path(f"src-{entry.proto}-{entry.host_port}")
        os.close(os.open(source, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        path = self._path(entry.name())
        for _ in range(_ATTEMPTS):
            fd = self._join(path)
            if fd >= 0:
                return fd
            if fd == _BUSY:  # being removed: gone in a moment
                time.sleep(_BUSY_WAIT)
                continue
            # Made under another name, locked, then renamed where nothing is: never seen
            # unheld, and a live entry of the same name (another process's bind just now)
            # is joined instead. (Not link(): the sandbox's Landlock refuses it here.)
            made = self._path(f".{os.getpid()}.{os.urandom(6).hex()}")
            fd = os.open(made, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)
            if _libc.syscall(SYS_renameat2, AT_FDCWD, os.fsencode(made), AT_FDCWD,
                             os.fsencode(path), ctypes.c_uint(RENAME_NOREPLACE)) == 0:
                return fd
            code = ctypes.get_errno()
            os.close(fd)
            os.unlink(made)
            if code != errno.EEXIST:
                raise OSError(code, os.strerror(code))
        raise OSError(errno.EBUSY, f"port entry {entry.name()} stays locked")

    @staticmethod
    def _join(path: str) -> int:
        """A shared hold of the entry at path if it is there (-1 if not, _BUSY while an
        exclusive lock is on it: a look about to remove it). Never waits on the lock: a
        fork at that moment may copy the look's fd into a child for its whole life."""
        while True:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                return -1
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return _BUSY
            if _same_file(fd, path):
                return fd
            os.close(fd)  # removed as we locked it

    def release(self, fd: int, entry: PortEntry) -> None:
        """This process's close of the socket: the entry goes if no process holds it now."""
        os.close(fd)
        self._remove_if_unheld(self._path(entry.name()))

    def find(self, proto: str, guest_port: int) -> list[PortEntry]:
        """The entries of guest_port that some process holds."""
        return list(self._held(lambda e: e.proto == proto and e.guest_port == guest_port))

    def at_host_port(self, proto: str, host_port: int) -> PortEntry | None:
        """The entry some process of the run holds for a guest socket bound at host_port
        (a datagram's source, a peer), if any."""
        return next(self._held(lambda e: e.proto == proto and e.host_port == host_port), None)

    def _held(self, wanted: Callable[[PortEntry], bool]) -> Iterator[PortEntry]:
        """The wanted entries some process holds (unheld ones met on the way go)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return
        for name in names:
            entry = PortEntry.parse(name)
            if entry is not None and wanted(entry) and \
                    not self._remove_if_unheld(self._path(name)):
                yield entry

    def was_bound(self, proto: str, host_port: int) -> bool:
        """Whether a guest socket of the run was ever bound at host_port (a datagram's
        source: one sent before its process closed the socket or ended is still the
        guest's). Marked at each bind, never removed, as the stack's own guest_sources."""
        return os.path.exists(self._path(f"src-{proto}-{host_port}"))

    @staticmethod
    def _remove_if_unheld(path: str) -> bool:
        """Remove the entry if no process holds it (True, or gone already); False while
        one does."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            if _same_file(fd, path):
                os.unlink(path)
        except OSError as err:
            if err.errno != errno.ENOENT:
                raise
        finally:
            os.close(fd)
        return True


def _same_file(fd: int, path: str) -> bool:
    """Whether path still names fd's file (not removed or replaced since it was opened)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
