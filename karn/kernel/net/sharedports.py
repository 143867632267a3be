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

import errno
import fcntl
import os

from karn.hints import NamedTuple


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
        path = self._path(entry.name())
        while True:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                break
            fcntl.flock(fd, fcntl.LOCK_SH)
            if _same_file(fd, path):
                return fd
            os.close(fd)  # removed as we locked it: publish afresh
        # Made under another name, locked, then renamed: never seen unheld.
        made = self._path(f".{os.getpid()}.{os.urandom(6).hex()}")
        fd = os.open(made, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.rename(made, path)
        return fd

    def release(self, fd: int, entry: PortEntry) -> None:
        """This process's close of the socket: the entry goes if no process holds it now."""
        os.close(fd)
        self._remove_if_unheld(self._path(entry.name()))

    def find(self, proto: str, guest_port: int) -> list[PortEntry]:
        """The entries of guest_port that some process holds."""
        prefix = f"{proto}-{guest_port}-"
        try:
            names = [n for n in os.listdir(self.directory) if n.startswith(prefix)]
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            entry = PortEntry.parse(name)
            if entry is not None and not self._remove_if_unheld(self._path(name)):
                found.append(entry)
        return found

    def owns_host_port(self, proto: str, host_port: int) -> bool:
        """Whether some process of the run holds a guest socket bound at host_port (a
        datagram's source)."""
        suffix = f"-{host_port}"
        try:
            names = [n for n in os.listdir(self.directory)
                     if n.startswith(f"{proto}-") and n.endswith(suffix)]
        except FileNotFoundError:
            return False
        return any(PortEntry.parse(n) is not None and
                   not self._remove_if_unheld(self._path(n)) for n in names)

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
