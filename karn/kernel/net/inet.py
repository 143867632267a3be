"""AF_INET and AF_INET6 sockets: guest addresses and ports translated by the policy.

Under `--network none`/`egress`, a guest bind on a loopback or wildcard address becomes a
host socket on the loopback with an ephemeral host port (or the published one); the guest
keeps seeing the port it asked for. A guest connect to its own loopback reaches its own
listeners through that table; anything else needs an egress rule. `--network host`
passes addresses through unchanged.

An unpublished guest listener is a host socket on a loopback port that a host process
could find. It is kept for the guest by the kernel: the listener and every guest client
that connects to it sign their TCP segments with a per-run secret key (TCP MD5, RFC
2385) and the listener requires that signature from every peer, so a host process's
handshake never completes; the guest's own connections (of any thread, either family,
closed before accept or not) are signed from their first SYN. Signing costs bulk
throughput, so a monitor in a network namespace of its own (the sandbox's, as root with
`--network none` and nothing published), which no host process can reach, does not sign.
"""

from __future__ import annotations

import _socket as socket
import errno
import ipaddress
import select
import struct

from karn import log
from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING, Any
from karn.kernel.fs.file import host_error
from karn.kernel.net.addr import Address, InetAddr, UnspecAddr, from_host
from karn.kernel.net.base import SocketFile, host_accept
from karn.kernel.net.consts import (
    AF_INET,
    AF_INET6,
    IPPROTO_IPV6,
    IPV6_V6ONLY,
    MSG_DONTWAIT,
    MSG_PEEK,
    SO_ERROR,
    SO_REUSEPORT,
    SOCK_STREAM,
    SOL_SOCKET,
)
from karn.kernel.net.sharedports import PortEntry

if TYPE_CHECKING:
    from karn.kernel.fs.file import OpenFile
    from karn.kernel.net.stack import NetStack
    from karn.kernel.process import Task


def _unspec_connect(fd: int) -> None:
    """connect(AF_UNSPEC): dissolve a datagram socket's association (not in Python)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    addr = (ctypes.c_char * 16)()
    if libc.connect(fd, addr, 16) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EAFNOSUPPORT,):
            raise SyscallError(err)


TCP_MD5SIG_EXT, TCP_MD5SIG_FLAG_PREFIX = 32, 1
_unsigned_logged = False


def _md5_option(family: int, ip: str, key: bytes) -> bytes:
    """A struct tcp_md5sig giving key for every peer of a family (prefix length 0; an
    IPv4-mapped ip stands for the IPv4 peers of an IPv6 socket)."""
    if family == AF_INET:
        addr = struct.pack("=HH4s", AF_INET, 0, socket.inet_pton(AF_INET, ip))
    else:
        addr = struct.pack("=HHI16sI", AF_INET6, 0, 0, socket.inet_pton(AF_INET6, ip), 0)
    return addr.ljust(128, b"\0") + struct.pack("=BBHi", TCP_MD5SIG_FLAG_PREFIX, 0,
                                                len(key), 0) + key.ljust(80, b"\0")


class InetSocket(SocketFile):
    def __init__(self, net: NetStack, family: int, stype: int, proto: int,
                 sock: socket.socket, nonblock: bool) -> None:
        super().__init__(net, family, stype, proto, sock, nonblock)
        self.pname = "tcp" if stype == SOCK_STREAM else "udp"
        self.guest_local: InetAddr | None = None
        self.guest_peer: InetAddr | None = None
        self.host_local: tuple | None = None  # where the host socket is bound, when known
        self.guest_port = 0  # registered in the stack's table (0: not registered)
        self.v6only = False
        self.reuseport = False
        self.blackhole = False  # a UDP socket "connected" to a closed guest port
        self.pending_error = 0
        self.signed = False  # segments carry the guest's TCP MD5 signature
        self.port_hold = -1  # its entry among the run's shared ports (share_port)
        self.port_entry: PortEntry | None = None

    # -- addresses ---------------------------------------------------------------------

    @property
    def host_bound(self) -> tuple:
        """The host address of a socket known to be bound."""
        if self.host_local is None:
            raise SyscallError(errno.EINVAL)
        return self.host_local
    def _check_family(self, addr: Address) -> InetAddr:
        if not isinstance(addr, InetAddr):
            raise SyscallError(errno.EAFNOSUPPORT)
        if addr.family != self.family:
            raise SyscallError(errno.EAFNOSUPPORT if self.family == AF_INET else errno.EINVAL)
        return addr

    def _host_ip(self, addr: InetAddr) -> str:
        """The host address a guest bind on addr (loopback or wildcard) uses."""
        if self.family == AF_INET:
            return addr.host if addr.is_loopback() else "127.0.0.1"
        ip = ipaddress.IPv6Address(addr.host)
        if ip.ipv4_mapped is not None:
            return addr.host
        if ip.is_unspecified and not self.v6only:
            return "::ffff:127.0.0.1"  # dual-stack: reached from 127.0.0.1 and ::1 guests
        return "::1"

    def _publish_ip(self, host_ip: str) -> str:
        if self.family == AF_INET6 and ":" not in host_ip:
            return "::ffff:" + host_ip
        if self.family == AF_INET and ":" in host_ip:
            raise SyscallError(errno.EADDRNOTAVAIL)
        return host_ip

    def bind(self, task: Task, addr: Address) -> None:
        addr = self._check_family(addr)
        if self.guest_local is not None or self.host_local is not None:
            raise SyscallError(errno.EINVAL)
        if self.net.policy.passthrough:
            self._host_bind(addr.host_tuple())
            self.guest_local = from_host(self.family, self.host_bound)
            return
        if not (addr.is_any() or addr.is_loopback()):
            raise SyscallError(errno.EADDRNOTAVAIL)  # the guest has only a loopback
        net = self.net
        with net.lock:
            port = addr.port
            host_port = 0
            host_ip = self._host_ip(addr)
            users = [u for u in net.bound.get((self.pname, port), []) if port
                     and u.covers() & self._covers(addr)]
            others = [] if users or not port or net.shared_ports is None else \
                [e for e in net.shared_ports.find(self.pname, port)
                 if e.covers & self._covers(addr)]  # bound in another process of the run
            if not (self.reuseport and all(u.reuseport for u in users + others)) and \
                    (users or others):
                raise SyscallError(errno.EADDRINUSE)
            if users:  # (another process's: a host port of its own, as the sandbox
                host_ip, host_port = users[0].host_bound[:2]  # binds only ephemeral ones)
            elif port:
                pub = net.claim(self.pname, port, self, self._covers(addr))
                if pub is not None:
                    host_ip, host_port = self._publish_ip(pub.host_ip), pub.host_port
            self._host_bind(self._tuple(host_ip, host_port))
            if not port:
                port = self.host_bound[1]
            net.register(self.pname, port, self.host_bound[1], self)
            self.guest_port = port
            self.guest_local = addr.with_port(port)
            self.share_port()

    def share_port(self) -> None:
        """Publish this bound socket to the run's other processes, if it has several (net
        share_ports; the caller holds the stack's lock)."""
        shared = self.net.shared_ports
        if shared is None or self.port_hold >= 0 or not self.guest_port or \
                self.host_local is None:
            return
        published = self.net.claimed.get((self.pname, self.guest_port)) is self
        entry = PortEntry(self.pname, self.guest_port, self.covers(), self.reuseport,
                          published, self.family, self.host_local[0], self.host_local[1])
        try:
            self.port_hold = shared.hold(entry)
        except OSError as err:  # (out of host fds, say): found by this process only
            log.warning_once("shared ports", "guest port %s/%d is not shared with the "
                             "run's other processes: %s", self.pname, self.guest_port, err)
            return
        self.port_entry = entry

    def release_port(self) -> None:
        """Its entry among the run's shared ports goes (this process's hold of it)."""
        shared, entry = self.net.shared_ports, self.port_entry
        if self.port_hold >= 0 and entry is not None and shared is not None:
            shared.release(self.port_hold, entry)
        self.port_hold, self.port_entry = -1, None

    def _covers(self, addr: InetAddr) -> int:
        """Which loopbacks a bind on addr answers: 1 IPv4, 2 IPv6 (ports may be shared
        between an IPv4 socket and a v6-only IPv6 one, as on Linux)."""
        if self.family == AF_INET:
            return 1
        ip = ipaddress.IPv6Address(addr.host)
        if ip.ipv4_mapped is not None:
            return 1
        return 3 if ip.is_unspecified and not self.v6only else 2

    def covers(self) -> int:
        return self._covers(self.guest_local) if self.guest_local is not None else 0

    def _tuple(self, ip: str, port: int) -> tuple:
        return (ip, port) if self.family == AF_INET else (ip, port, 0, 0)

    def _host_bind(self, where: tuple) -> None:
        try:
            self.sock.bind(where)
        except OSError as err:
            raise host_error(err) from None
        self.host_local = self.sock.getsockname()

    def _autobind(self, task: Task, target: tuple | None, connecting: bool) -> None:
        """Bind an unbound datagram socket before it sends, as Linux does, on the host
        loopback that can reach target (an IPv6 socket: ::1 or the IPv4-mapped one). A
        connected socket then shows that source address (glibc's getaddrinfo sorts
        addresses by it); an unconnected one the wildcard."""
        if self.host_local is not None or self.net.policy.passthrough:
            return
        if target is not None and not ipaddress.ip_address(target[0]).is_loopback and \
                not target[0].startswith("::ffff:127."):
            return  # egress: the host picks the source address
        if self.family == AF_INET:
            self.bind(task, InetAddr(AF_INET, "127.0.0.1" if connecting else "0.0.0.0", 0))
            return
        v6 = target is not None and len(target) == 4 and not target[0].startswith("::ffff:")
        self.bind(task, InetAddr(AF_INET6, "::1" if v6 else "::ffff:127.0.0.1", 0))
        if not connecting:
            self.guest_local = InetAddr(AF_INET6, "::", self.guest_port)

    def getsockname(self) -> InetAddr:
        if self.guest_local is not None:
            return self.guest_local
        try:
            host = from_host(self.family, self.sock.getsockname())
        except OSError as err:
            raise host_error(err) from None
        if self.net.policy.passthrough:
            return host
        return host.with_port(self.net.guest_port(self.pname, host.port))

    def getpeername(self) -> InetAddr:
        if self.guest_peer is not None and (self.stype != SOCK_STREAM or self._connected()):
            return self.guest_peer
        raise SyscallError(errno.ENOTCONN)

    def _connected(self) -> bool:
        try:
            self.sock.getpeername()
            return True
        except OSError:
            return False

    def guest_address(self, host_addr: Any) -> InetAddr:
        addr = from_host(self.family, host_addr)
        if self.net.policy.passthrough or not addr.is_loopback():
            return addr
        return addr.with_port(self.net.guest_port(self.pname, addr.port))

    # -- routing -----------------------------------------------------------------------
    def route(self, dest: InetAddr, what: str) -> tuple | None:
        """The host address for a guest destination, or a denial (SyscallError). None:
        a closed port on the guest's own loopback (datagrams vanish there)."""
        policy = self.net.policy
        if policy.passthrough:
            return dest.host_tuple()
        if self.family == AF_INET6 and dest.family == AF_INET6:
            ip = ipaddress.IPv6Address(dest.host)
            if ip.ipv4_mapped is not None:
                dest = InetAddr(AF_INET, str(ip.ipv4_mapped), dest.port)
        if dest.is_loopback() or dest.is_any():
            if dest.is_any():  # connect to 0.0.0.0 means the local host
                dest = dest._replace(host="127.0.0.1" if dest.family == AF_INET else "::1")
            found = self.net.lookup(self.pname, dest, self.family)
            if found is not None:
                target, signed = found
                if signed and not self.signed and self.stype == SOCK_STREAM:
                    self._sign()  # before the SYN: the listener takes only signed peers
                return target
        if policy.egress_allowed(dest):
            return self._in_family(dest)
        if dest.is_loopback() and self.stype != SOCK_STREAM:
            return None
        if not dest.is_loopback():
            self.net.denied(what, dest)
        raise SyscallError(policy.denial(dest))

    def _in_family(self, dest: InetAddr) -> tuple:
        if self.family == dest.family:
            return dest.host_tuple()
        if self.family == AF_INET6:
            return ("::ffff:" + dest.host, dest.port, 0, 0)
        raise SyscallError(errno.EAFNOSUPPORT)

    # -- connections -------------------------------------------------------------------
    def connect(self, task: Task, addr: Address) -> None:
        if isinstance(addr, UnspecAddr):
            if self.stype == SOCK_STREAM:
                return  # nothing to dissolve that the guest could observe
            _unspec_connect(self.fd)
            self.guest_peer, self.blackhole = None, False
            return
        if not isinstance(addr, InetAddr):
            raise SyscallError(errno.EAFNOSUPPORT)
        if addr.family != self.family and not (self.family == AF_INET6 and self.stype != 1):
            raise SyscallError(errno.EAFNOSUPPORT if self.family == AF_INET else errno.EINVAL)
        if self.listening:
            raise SyscallError(errno.EISCONN)
        target = self.route(addr, "connect to")
        if self.stype != SOCK_STREAM:
            self._autobind(task, target, True)
            self.blackhole = target is None
            try:  # a closed guest port: the host socket talks to itself (_refuse)
                self.sock.connect(self.sock.getsockname() if target is None else target)
            except OSError as err:
                raise host_error(err) from None
            self.guest_peer = addr
            return
        if target is None:  # route() gives None to datagram sockets only
            raise SyscallError(errno.ECONNREFUSED)
        code = self.sock.connect_ex(target)
        if code == 0 or code == errno.EISCONN and self.guest_peer is not None:
            self.guest_peer = addr
            if code:
                raise SyscallError(errno.EISCONN)
            return
        if code not in (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY):
            raise SyscallError(code)
        self.guest_peer = addr
        if self.nonblocking():
            raise SyscallError(errno.EALREADY if code == errno.EALREADY else errno.EINPROGRESS)
        while True:
            self.wait(task, select.POLLOUT, None)
            ready = select.poll()
            ready.register(self.fd, select.POLLOUT)
            if ready.poll(0):
                break
        pending = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if pending:
            raise SyscallError(pending)

    def _sign(self) -> None:
        """Sign this stream socket's segments with the run's key and require the signature
        from every peer (see the module's docstring). Without TCP MD5 in the host kernel
        the socket stays unsigned, and says so once."""
        global _unsigned_logged
        peers = [(AF_INET, "0.0.0.0")] if self.family == AF_INET else \
            [(AF_INET6, "::"), (AF_INET6, "::ffff:0.0.0.0")]
        try:
            for family, ip in peers:
                self.sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG_EXT,
                                     _md5_option(family, ip, self.net.tcp_key))
        except OSError as err:
            if err.errno not in (errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                raise host_error(err) from None
            if not _unsigned_logged:
                _unsigned_logged = True
                log.warning("network: the host kernel has no TCP MD5 signatures "
                            "(CONFIG_TCP_MD5SIG): host processes can connect to "
                            "unpublished guest listeners")
            return
        self.signed = True

    def _datagram_allowed(self, src: tuple | None) -> bool:
        """Whether a datagram may reach the guest: from one of its own sockets, from
        outside the host (replies to allowed egress), or to a published port. An
        unpublished UDP socket is a host socket on a loopback port a host process could
        find, as for accept()."""
        net = self.net
        if src is None or net.policy.passthrough or \
                net.claimed.get((self.pname, self.guest_port)) is self:
            return True
        ip = ipaddress.ip_address(src[0].removeprefix("::ffff:"))
        if not ip.is_loopback or any(r.allows(ip, src[1]) for r in net.policy.egress):
            return True  # not from this host, or a host service egress allows
        return net.from_the_run(self.pname, src[1])

    def _refuse(self) -> None:
        """A datagram to a closed guest port: as Linux's ICMP error, fail the next call and
        wake poll (an empty datagram to itself; the host socket is connected to itself)."""
        self.pending_error = errno.ECONNREFUSED
        try:
            self.sock.send(b"")
        except OSError:
            pass  # its buffer is full: it is readable already

    def _take_error(self) -> int:
        err, self.pending_error = self.pending_error, 0
        while self.blackhole:  # drain _refuse's wake-ups
            try:
                self.sock.recv(1, MSG_DONTWAIT)
            except OSError:
                break
        return err

    def recv(self, task: Task, views: list[memoryview], flags: int,
             ancbufsize: int = 0, msg: bool = False) -> tuple[int, list, int, Any]:
        if self.stype == SOCK_STREAM:
            return super().recv(task, views, flags, ancbufsize, msg)
        if self.pending_error:
            raise SyscallError(self._take_error())
        while True:  # look at the sender first; drop what a host process sent
            src = super().recv(task, [memoryview(bytearray(1))], flags | MSG_PEEK)[3]
            if self._datagram_allowed(src):
                return super().recv(task, views, flags, ancbufsize, msg)
            try:
                self.sock.recv(1, MSG_DONTWAIT)
            except OSError:
                pass  # taken meanwhile by another thread
            self.net.denied("datagram from the host to unpublished port",
                            f"{self.guest_port}/{self.pname}")

    def listen(self, task: Task, backlog: int) -> None:
        if self.stype != SOCK_STREAM:
            raise SyscallError(errno.EOPNOTSUPP)
        net = self.net
        if self.host_local is None and not net.policy.passthrough:
            self.bind(task, InetAddr(self.family, "0.0.0.0" if self.family == AF_INET
                                     else "::", 0))
        holder = net.claimed.get((self.pname, self.guest_port))
        published = holder is not None and holder.host_bound[1] == self.host_bound[1]
        if not (net.policy.passthrough or net.private or self.signed or published):
            self._sign()  # unpublished: only the guest's own (signed) connections get in
        self.host_listen(backlog)

    def accept(self, task: Task, nonblock: bool) -> tuple[InetSocket, InetAddr]:
        if self.stype != SOCK_STREAM:
            raise SyscallError(errno.EOPNOTSUPP)
        if not self.listening:
            raise SyscallError(errno.EINVAL)
        fd, peer = self.retry(task, host_accept(self.sock), select.POLLIN, self.nonblocking(),
                              self.rcvtimeo)
        conn = socket.socket(self.sock.family, self.stype, self.sock.proto, fd)
        new = InetSocket(self.net, self.family, self.stype, self.proto, conn, nonblock)
        new.signed = self.signed  # the kernel gave the connection the listener's keys
        local = self.getsockname()
        try:
            here = from_host(self.family, conn.getsockname())
            if not self.net.policy.passthrough:
                here = here.with_port(local.port)
                if not local.is_any():
                    here = here._replace(host=local.host)
        except OSError:
            here = local
        new.guest_local = here
        new.guest_peer = peer_addr = self.guest_address(peer)
        return new, peer_addr

    # -- data --------------------------------------------------------------------------
    def sendmsg(self, task: Task, bufs: list[memoryview], flags: int, dest: Address | None,
                files: list[OpenFile] | None = None) -> int:
        if self.pending_error:
            raise SyscallError(self._take_error())
        if dest is None or self.stype == SOCK_STREAM:
            if self.stype != SOCK_STREAM and self.guest_peer is None:
                raise SyscallError(errno.EDESTADDRREQ)
            if self.blackhole:
                self._refuse()
                return sum(len(b) for b in bufs)
            return self.send(task, bufs, flags, None)
        if isinstance(dest, UnspecAddr) or not isinstance(dest, InetAddr):
            raise SyscallError(errno.EAFNOSUPPORT)
        target = self.route(dest, "send to")
        self._autobind(task, target, False)
        if target is None:
            return sum(len(b) for b in bufs)  # nothing listens: the datagram is dropped
        return self.send(task, bufs, flags, target)

    # -- options --------------------------------------------------------------------------
    def setsockopt(self, task: Task, level: int, name: int, raw: bytes) -> None:
        v6only = level == IPPROTO_IPV6 and name == IPV6_V6ONLY
        if v6only:
            if self.family != AF_INET6:
                raise SyscallError(errno.ENOPROTOOPT)
            if self.host_local is not None:
                raise SyscallError(errno.EINVAL)  # fixed once bound
        super().setsockopt(task, level, name, raw)
        value = bool(int.from_bytes(raw[:4], "little")) if len(raw) >= 4 else False
        if v6only:
            self.v6only = value
        elif level == SOL_SOCKET and name == SO_REUSEPORT:
            self.reuseport = value

    def getsockopt(self, task: Task, level: int, name: int, size: int) -> bytes:
        if level == SOL_SOCKET and name == SO_ERROR and self.pending_error:
            return self._take_error().to_bytes(4, "little")  # a refused "connected" datagram
        return super().getsockopt(task, level, name, size)

    def close(self) -> None:
        if self.guest_port:
            self.net.unregister(self.pname, self.guest_port, self.host_bound[1], self)
            self.guest_port = 0
        self.release_port()
        super().close()
