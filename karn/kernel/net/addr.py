"""Guest socket addresses: struct sockaddr_{in,in6,un} <-> (family, host, port) records."""

from __future__ import annotations

import _socket as socket
import errno
import ipaddress
import struct

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING, NamedTuple
from karn.kernel.net.consts import AF_INET, AF_INET6, AF_UNIX, AF_UNSPEC

if TYPE_CHECKING:
    from karn.kernel.process import Task

SOCKADDR_IN = struct.Struct("<H2s4s8x")  # family, port (big-endian), address
SOCKADDR_IN6 = struct.Struct("<H2sI16sI")  # family, port, flowinfo, address, scope id
UNIX_PATH_MAX = 108
SOCKADDR_UN_SIZE = 2 + UNIX_PATH_MAX
MAX_SOCKADDR = 128  # sizeof(struct sockaddr_storage)


class InetAddr(NamedTuple):
    family: int  # AF_INET or AF_INET6
    host: str  # textual address, as Python's socket module takes it
    port: int
    flowinfo: int = 0
    scope_id: int = 0

    def host_tuple(self) -> tuple:
        if self.family == AF_INET:
            return (self.host, self.port)
        return (self.host, self.port, self.flowinfo, self.scope_id)

    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.host)

    def is_loopback(self) -> bool:
        ip = self.ip()
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback

    def is_any(self) -> bool:
        return self.ip().is_unspecified

    def with_port(self, port: int) -> InetAddr:
        return self._replace(port=port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family == AF_INET6 else \
            f"{self.host}:{self.port}"


class UnixAddr(NamedTuple):
    path: bytes  # b"" unnamed, b"\0..." abstract, else a guest path

    family: int = AF_UNIX


class UnspecAddr(NamedTuple):
    family: int = AF_UNSPEC


Address = InetAddr | UnixAddr | UnspecAddr


def decode(raw: bytes) -> Address:
    """A guest sockaddr (its bytes, addrlen long)."""
    if len(raw) < 2:
        raise SyscallError(errno.EINVAL)
    family = int.from_bytes(raw[:2], "little")
    if family == AF_INET:
        if len(raw) < SOCKADDR_IN.size:
            raise SyscallError(errno.EINVAL)
        _, port, ip, = SOCKADDR_IN.unpack_from(raw)
        return InetAddr(AF_INET, socket.inet_ntop(socket.AF_INET, ip), int.from_bytes(port, "big"))
    if family == AF_INET6:
        if len(raw) < 24:  # SIN6_LEN_RFC2133: scope id optional
            raise SyscallError(errno.EINVAL)
        raw6 = raw[:SOCKADDR_IN6.size].ljust(SOCKADDR_IN6.size, b"\0")
        _, port, flow, ip, scope = SOCKADDR_IN6.unpack(raw6)
        return InetAddr(AF_INET6, socket.inet_ntop(socket.AF_INET6, ip),
                        int.from_bytes(port, "big"), flow, scope)
    if family == AF_UNIX:
        path = raw[2:SOCKADDR_UN_SIZE]
        if path[:1] != b"\0":
            path = path.split(b"\0", 1)[0]
        return UnixAddr(path)
    if family == AF_UNSPEC:
        return UnspecAddr()
    raise SyscallError(errno.EAFNOSUPPORT)


def encode(addr: Address) -> bytes:
    if isinstance(addr, InetAddr):
        port = addr.port.to_bytes(2, "big")
        if addr.family == AF_INET:
            return SOCKADDR_IN.pack(AF_INET, port, socket.inet_pton(socket.AF_INET, addr.host))
        return SOCKADDR_IN6.pack(AF_INET6, port, addr.flowinfo,
                                 socket.inet_pton(socket.AF_INET6, addr.host), addr.scope_id)
    if isinstance(addr, UnixAddr):
        if not addr.path:
            return AF_UNIX.to_bytes(2, "little")
        tail = b"" if addr.path[:1] == b"\0" else b"\0"
        return AF_UNIX.to_bytes(2, "little") + addr.path + tail
    return AF_UNSPEC.to_bytes(2, "little") + bytes(14)


def from_host(family: int, host_addr: tuple) -> InetAddr:
    """A Python host address tuple as an InetAddr."""
    if family == AF_INET:
        host, port = host_addr
        return InetAddr(AF_INET, host, port)
    host, port, flow, scope = host_addr
    return InetAddr(AF_INET6, host.split("%", 1)[0], port, flow, scope)


def read_addr(task: Task, ptr: int, length: int) -> Address:
    if length > MAX_SOCKADDR or length < 0:
        raise SyscallError(errno.EINVAL)
    return decode(task.mem.read(ptr, length))


def write_addr(task: Task, ptr: int, lenptr: int, addr: Address) -> None:
    """Store addr at ptr truncated to the guest's *lenptr; *lenptr = the full length."""
    if not ptr:
        return
    size = task.mem.read_u32(lenptr)
    if size >> 31:
        raise SyscallError(errno.EINVAL)
    data = encode(addr)
    if size:
        task.mem.write(ptr, data[:size])
    task.mem.write_u32(lenptr, len(data))
