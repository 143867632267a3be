"""Per-process network state: which guest ports are bound to which host ports, the
published ports' reservations, AF_UNIX names and fds in flight over SCM_RIGHTS."""

from __future__ import annotations

import _socket as socket
import os
import threading

from karn import log
from karn.hints import TYPE_CHECKING
from karn.kernel.hosttmp import private_dir, remove_tree
from karn.kernel.net.consts import AF_INET, AF_INET6
from karn.kernel.net.inflight import InFlight
from karn.kernel.net.policy import NetPolicy, PolicyError, Publish
from karn.kernel.net.sharedports import SharedPorts

if TYPE_CHECKING:
    from karn.kernel.net.addr import InetAddr
    from karn.kernel.net.inet import InetSocket
    from karn.kernel.net.unix import UnixSocket
    from karn.kernel.process import Process

PROTOS = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
MAX_LOGGED_DENIALS = 64


class NetStack:
    def __init__(self, policy: NetPolicy | None = None) -> None:
        self.policy = policy or NetPolicy()
        self.lock = threading.Lock()
        self.bound: dict[tuple[str, int], list[InetSocket]] = {}  # (proto, guest port)
        self.host_ports: dict[tuple[str, int], int] = {}  # (proto, host port) -> guest port
        self.reserved: dict[tuple[str, int], socket.socket] = {}
        self.claimed: dict[tuple[str, int], InetSocket] = {}  # who holds a published port
        # abstract name, or (dev, ino) of a bound path's socket file -> host path, socket
        self.unix_names: dict[bytes | tuple[int, int], tuple[str, UnixSocket]] = {}
        self.unix_hosts: dict[str, bytes] = {}  # host path -> guest name
        self.in_flight = InFlight()  # files passed with SCM_RIGHTS, not yet received
        self.tcp_key = os.urandom(80)  # signs the guest's own TCP connections (inet.py)
        self.private = False  # the sandbox gave the monitor a network namespace of its own
        # (proto, host port) of every guest socket ever bound: a datagram may arrive after
        # its sender closed. Only grows, at most 65536 ports per protocol.
        self.guest_sources: set[tuple[str, int]] = set()
        self.shared_ports: SharedPorts | None = None  # once the run has several processes
        self._unix_dir: str | None = None
        self._unix_seq = 0
        self._logged: set[str] = set()

    # -- published ports -------------------------------------------------------------
    def reserve_published(self) -> None:
        """Bind every published host port now, so a port in use is reported before the
        guest starts; the guest's bind takes the port over."""
        for pub in self.policy.publish:
            family = socket.AF_INET6 if ":" in pub.host_ip else socket.AF_INET
            sock = socket.socket(family, PROTOS[pub.proto] | socket.SOCK_CLOEXEC)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((pub.host_ip, pub.host_port))
            except OSError as err:
                sock.close()
                self.close()
                where = f"[{pub.host_ip}]" if family == socket.AF_INET6 else pub.host_ip
                raise PolicyError(f"--publish {pub.spec}: cannot bind {where}:{pub.host_port}"
                                  f"/{pub.proto}: {err.strerror}") from None
            self.reserved[(pub.proto, pub.guest_port)] = sock

    def claim(self, proto: str, guest_port: int, sock: InetSocket, covers: int
              ) -> Publish | None:
        """The publication of guest_port for the first socket that can serve it (covers:
        1 IPv4, 2 IPv6), releasing its reservation. The caller holds the lock."""
        pub = self.policy.published(proto, guest_port)
        if pub is None or (proto, guest_port) in self.claimed:
            return None
        if not covers & (2 if ":" in pub.host_ip else 1):
            return None
        held = self.reserved.pop((proto, guest_port), None)
        if held is not None:
            held.close()
        self.claimed[(proto, guest_port)] = sock
        return pub

    # -- guest port table ------------------------------------------------------------
    def register(self, proto: str, guest_port: int, host_port: int, sock: InetSocket) -> None:
        self.bound.setdefault((proto, guest_port), []).append(sock)
        self.host_ports[(proto, host_port)] = guest_port
        self.guest_sources.add((proto, host_port))

    def unregister(self, proto: str, guest_port: int, host_port: int, sock: InetSocket) -> None:
        with self.lock:
            users = self.bound.get((proto, guest_port), [])
            if sock in users:
                users.remove(sock)
            if self.claimed.get((proto, guest_port)) is sock:
                del self.claimed[(proto, guest_port)]  # a later bind publishes again
            if not users:
                self.bound.pop((proto, guest_port), None)
                if self.host_ports.get((proto, host_port)) == guest_port:
                    del self.host_ports[(proto, host_port)]

    def guest_port(self, proto: str, host_port: int) -> int:
        """The guest port of a guest socket bound at host_port: this process's, or another
        process's of the run (a peer, a datagram's source); host_port if none."""
        port = self.host_ports.get((proto, host_port))
        if port is not None:
            return port
        if self.shared_ports is not None:
            entry = self.shared_ports.at_host_port(proto, host_port)
            if entry is not None:
                return entry.guest_port
        return host_port

    def lookup(self, proto: str, dest: InetAddr, family: int) -> tuple[tuple, bool] | None:
        """The host address (in the caller's family) that dest (a loopback address)
        reaches, and whether the socket there takes only signed peers; None when no
        guest socket is bound there: this process's, or another's of the run."""
        want6 = dest.family == AF_INET6 and not dest.host.startswith("::ffff:")
        with self.lock:
            candidates = list(self.bound.get((proto, dest.port), ()))
        for sock in candidates:
            if proto == "tcp" and not sock.listening:
                continue
            host = sock.host_local
            if host is not None:
                target = _reach(want6, family, sock.family, host[0], host[1])
                if target is not None:
                    return target, sock.signed
        if self.shared_ports is None:
            return None
        for entry in self.shared_ports.find(proto, dest.port):
            target = _reach(want6, family, entry.family, entry.host_ip, entry.host_port)
            if target is not None:  # (signed as its listen() signs: unpublished, unless
                return target, not (entry.published or self.private)  # in a netns)
        return None

    def share_ports(self, directory: str) -> None:
        """The run is to have several processes (its first fork): every guest INET
        socket bound from now on, and each bound now, is published to the others."""
        with self.lock:
            if self.shared_ports is not None or self.policy.passthrough:
                return
            try:
                self.shared_ports = SharedPorts(directory)
            except OSError as err:  # each process then reaches its own ports only
                log.warning("guest ports are not shared between processes: %s", err)
                return
            for socks in self.bound.values():
                for sock in socks:
                    sock.share_port()

    def from_the_run(self, proto: str, host_port: int) -> bool:
        """Whether a datagram's host source port is a guest socket's, in any process of
        the run (remembered once seen)."""
        with self.lock:
            if (proto, host_port) in self.guest_sources:
                return True
        if self.shared_ports is None or not self.shared_ports.was_bound(proto, host_port):
            return False
        with self.lock:
            self.guest_sources.add((proto, host_port))
        return True

    # -- AF_UNIX names ---------------------------------------------------------------
    def socket_files_moved(self, moved: dict[tuple[int, int], tuple[int, int]]) -> None:
        """The first fork copied the tmpfs to a host directory: names bound to socket files
        there are found by the copies' (dev, ino) from now on, in this process and the
        children that inherit the table."""
        with self.lock:
            for old, new in moved.items():
                entry = self.unix_names.pop(old, None)
                if entry is not None:
                    self.unix_names[new] = entry
                    entry[1].bound_key = new

    def process_ended(self) -> None:
        """A forked process's monitor ends without closing the guest's files: the names
        it bound go as its sockets' close would take them, abstract names it held go if it
        was their last holder (net/unix.py), and so do its INET ports' entries."""
        with self.lock:
            ours = [sock for _host, sock in self.unix_names.values()
                    if sock.bound_by == os.getpid() or sock.name_hold >= 0]
            ports = [sock for socks in self.bound.values() for sock in socks]
        for sock in ours:
            sock.release_name()
        for port in ports:  # before the parent's wait returns, as Linux closes them
            port.release_port()

    def unix_dir(self) -> str:
        with self.lock:
            if self._unix_dir is None:
                self._unix_dir = private_dir("karn-unix-")
            return self._unix_dir

    def new_unix_path(self) -> str:
        base = self.unix_dir()
        with self.lock:
            self._unix_seq += 1
            # a forked process inherits the directory and the count: the pid keeps names
            # of the run's processes apart
            return os.path.join(base, f"{os.getpid()}.{self._unix_seq}")

    # -- logging ---------------------------------------------------------------------
    def denied(self, what: str, dest: object) -> None:
        key = f"{what} {dest}"
        if key in self._logged or len(self._logged) > MAX_LOGGED_DENIALS:
            return  # a guest must not flood the log or grow the set
        self._logged.add(key)
        later = " (later denials are not logged)" if len(self._logged) > MAX_LOGGED_DENIALS \
            else ""
        log.warning("network policy: %s %s denied (%s)%s", what, dest, self.policy.describe(),
                    later)

    def close(self) -> None:
        for sock in self.reserved.values():
            sock.close()
        self.reserved.clear()
        self.in_flight.close()
        if self._unix_dir is not None:
            remove_tree(self._unix_dir)


def _reach(want6: bool, family: int, bound_family: int, ip: str, port: int) -> tuple | None:
    """The host address (in family) of a socket of bound_family bound at host (ip, port),
    if a destination of the wanted family reaches it."""
    mapped = ip.startswith("::ffff:")
    if want6 and bound_family != AF_INET6:
        return None  # an IPv6 destination reaches only IPv6 listeners (dual-stack ones
        # through their IPv4-mapped host address)
    if not want6 and bound_family == AF_INET6 and not mapped:
        return None
    if family == AF_INET:
        return (ip.removeprefix("::ffff:"), port)
    if bound_family == AF_INET:
        return ("::ffff:" + ip, port, 0, 0)
    return (ip, port, 0, 0)


_default_lock = threading.Lock()


def net_of(process: Process) -> NetStack:
    """The process's network state (the run builder gives it one; a bare Process gets the
    default policy on first use)."""
    net = process.net
    if net is None:
        with _default_lock:
            net = process.net
            if net is None:
                net = process.net = NetStack()
    return net
