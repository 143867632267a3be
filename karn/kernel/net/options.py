"""setsockopt/getsockopt: the options servers use, passed to the host socket from an
allow-list; what the guest must see differently (timeouts, type, credentials) is
answered here. Anything else is ENOPROTOOPT, logged once. Buffer sizes are charged to
the guest's memory limit (karn/kernel/limits.py BufferBudget)."""

from __future__ import annotations

import errno
import struct

from karn import log
from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING
from karn.kernel.fs.file import host_error
from karn.kernel.limits import (
    SOCK_BUF_MAX,
    SOCK_MIN_RCVBUF,
    SOCK_MIN_SNDBUF,
    Charge,
    buffer_budget,
)
from karn.kernel.net import consts as c

if TYPE_CHECKING:
    from karn.kernel.net.base import SocketFile
    from karn.kernel.process import Task

TIMEVAL = struct.Struct("<qq")
UCRED = struct.Struct("<iII")
IP_BIND_ADDRESS_NO_PORT = 24
IPV6_ADDR_PREFERENCES = 72

PASS: dict[int, frozenset[int]] = {
    c.SOL_SOCKET: frozenset({
        c.SO_DEBUG, c.SO_REUSEADDR, c.SO_DONTROUTE, c.SO_BROADCAST, c.SO_SNDBUF, c.SO_RCVBUF,
        c.SO_KEEPALIVE, c.SO_OOBINLINE, c.SO_PRIORITY, c.SO_LINGER, c.SO_REUSEPORT,
        c.SO_PASSCRED, c.SO_RCVLOWAT, c.SO_TIMESTAMP, c.SO_SNDBUFFORCE, c.SO_RCVBUFFORCE,
        c.SO_RXQ_OVFL, c.SO_BUSY_POLL, c.SO_INCOMING_CPU, c.SO_ZEROCOPY, c.SO_ERROR,
        c.SO_SNDLOWAT,
    }),
    c.IPPROTO_TCP: frozenset({
        c.TCP_NODELAY, c.TCP_MAXSEG, c.TCP_CORK, c.TCP_KEEPIDLE, c.TCP_KEEPINTVL,
        c.TCP_KEEPCNT, c.TCP_SYNCNT, c.TCP_LINGER2, c.TCP_DEFER_ACCEPT, c.TCP_WINDOW_CLAMP,
        c.TCP_INFO, c.TCP_QUICKACK, c.TCP_CONGESTION, c.TCP_USER_TIMEOUT, c.TCP_FASTOPEN,
        c.TCP_NOTSENT_LOWAT, c.TCP_FASTOPEN_CONNECT,
    }),
    c.IPPROTO_IP: frozenset({
        c.IP_TOS, c.IP_TTL, c.IP_RECVERR, c.IP_MTU_DISCOVER, c.IP_FREEBIND,
        c.IP_MULTICAST_TTL, c.IP_MULTICAST_LOOP, IP_BIND_ADDRESS_NO_PORT,
    }),
    c.IPPROTO_IPV6: frozenset({
        c.IPV6_UNICAST_HOPS, c.IPV6_MULTICAST_LOOP, c.IPV6_V6ONLY, c.IPV6_RECVERR,
        c.IPV6_TCLASS, IPV6_ADDR_PREFERENCES,
    }),
}
_warned: set[tuple[int, int]] = set()
BUF_FLOOR = {c.SO_SNDBUF: SOCK_MIN_SNDBUF, c.SO_RCVBUF: SOCK_MIN_RCVBUF}


def _refuse(level: int, name: int) -> SyscallError:
    # Levels we do not know share one key: a guest must not flood the log or grow the set.
    key = (level, name) if level in PASS and 0 <= name < 256 else (-1, -1)
    if key not in _warned:
        _warned.add(key)
        log.warning("socket option level %d name %d is not supported; returning ENOPROTOOPT",
                    level, name)
    return SyscallError(errno.ENOPROTOOPT)


def _timeout(raw: bytes) -> float | None:
    if len(raw) < TIMEVAL.size:
        raise SyscallError(errno.EINVAL)
    sec, usec = TIMEVAL.unpack_from(raw)
    if usec < 0 or usec >= 1_000_000:
        raise SyscallError(errno.EDOM)
    if sec < 0:
        return 0.000001  # Linux: a negative timeout is the shortest one
    return None if sec == 0 and usec == 0 else sec + usec / 1e6


def _charged(sock: SocketFile) -> tuple[int, ...]:
    """The buffers that hold a socket's data: an AF_UNIX message is charged to its
    sender's send buffer only (as in Linux); an inet socket queues in both."""
    return (c.SO_SNDBUF,) if sock.family == c.AF_UNIX else (c.SO_SNDBUF, c.SO_RCVBUF)


def _host_buf(sock: SocketFile, name: int) -> int:
    return sock.sock.getsockopt(c.SOL_SOCKET, name)


def _size_buf(sock: SocketFile, charge: Charge, name: int, want: int, lock: bool) -> None:
    """Give buffer name want bytes (the host's doubled value), or what the budget has
    left, and charge what the host then reports. lock: set it even if unchanged (the
    guest asked: TCP stops tuning it)."""
    n = charge.resize(name, want, BUF_FLOOR[name])
    assert n is not None
    if lock or n != _host_buf(sock, name):
        sock.sock.setsockopt(c.SOL_SOCKET, name, n // 2)  # the kernel doubles it
    charge.settle(name, _host_buf(sock, name))


def charge_buffers(task: Task, sock: SocketFile) -> None:
    """Charge a new socket's buffers, as the host made them, to the guest's budget;
    past the budget they shrink to Linux's minimum."""
    sock.charge = charge = Charge(buffer_budget(task.process))
    try:
        for name in _charged(sock):
            _size_buf(sock, charge, name, _host_buf(sock, name), False)
    except OSError as err:
        raise host_error(err) from None


def _set_buffer(sock: SocketFile, name: int, raw: bytes) -> None:
    """SO_SNDBUF/SO_RCVBUF as Linux takes them: at most wmem_max/rmem_max (Linux's
    default, not the host's), doubled; within the budget when charged."""
    if len(raw) < 4:
        raise SyscallError(errno.EINVAL)
    want = min(int.from_bytes(raw[:4], "little"), SOCK_BUF_MAX)  # unsigned, as Linux
    try:
        if sock.charge is None or name not in _charged(sock):
            sock.sock.setsockopt(c.SOL_SOCKET, name, want)
        else:
            _size_buf(sock, sock.charge, name, max(want * 2, BUF_FLOOR[name]), True)
    except OSError as err:
        raise host_error(err) from None


def set_option(task: Task, sock: SocketFile, level: int, name: int, raw: bytes) -> None:
    """setsockopt for every family (InetSocket adds its own options' bookkeeping)."""
    if level == c.SOL_SOCKET and name in (c.SO_RCVTIMEO, c.SO_SNDTIMEO):
        value = _timeout(raw)
        if name == c.SO_RCVTIMEO:
            sock.rcvtimeo = value
        else:
            sock.sndtimeo = value
        return
    if level == c.SOL_SOCKET and name == c.SO_BINDTODEVICE:
        device = raw.split(b"\0", 1)[0]
        if device in (b"", b"lo"):
            return
        raise SyscallError(errno.ENODEV)  # the guest has only a loopback device
    if name not in PASS.get(level, ()) or (level, name) == (c.SOL_SOCKET, c.SO_ERROR):
        raise _refuse(level, name)
    if sock.family == c.AF_UNIX and level != c.SOL_SOCKET:
        raise SyscallError(errno.EOPNOTSUPP)
    if level == c.SOL_SOCKET and name in (c.SO_SNDBUFFORCE, c.SO_RCVBUFFORCE):
        raise SyscallError(errno.EPERM)  # the guest has no CAP_NET_ADMIN
    if level == c.SOL_SOCKET and name in (c.SO_SNDBUF, c.SO_RCVBUF):
        _set_buffer(sock, name, raw)
        sock.opts[(level, name)] = raw
        return
    try:
        sock.sock.setsockopt(level, name, raw)
    except OSError as err:
        raise host_error(err) from None
    sock.opts[(level, name)] = raw


def get_option(task: Task, sock: SocketFile, level: int, name: int, size: int) -> bytes:
    if level == c.SOL_SOCKET:
        if name in (c.SO_RCVTIMEO, c.SO_SNDTIMEO):
            value = sock.rcvtimeo if name == c.SO_RCVTIMEO else sock.sndtimeo
            sec = int(value or 0)
            return TIMEVAL.pack(sec, int(round(((value or 0) - sec) * 1e6)))
        if name == c.SO_TYPE:
            return sock.stype.to_bytes(4, "little")
        if name == c.SO_DOMAIN:
            return sock.family.to_bytes(4, "little")
        if name == c.SO_PROTOCOL:
            return sock.sock.proto.to_bytes(4, "little")
        if name == c.SO_ACCEPTCONN:
            return int(sock.listening).to_bytes(4, "little")
        if name == c.SO_PEERCRED and sock.family == c.AF_UNIX:
            ident = task.process.identity
            return UCRED.pack(task.process.pid, ident.uid, ident.gid)
    if name not in PASS.get(level, ()):
        raise _refuse(level, name)
    if sock.family == c.AF_UNIX and level != c.SOL_SOCKET:
        raise SyscallError(errno.EOPNOTSUPP)
    try:
        return sock.sock.getsockopt(level, name, max(4, min(size, 1024)))
    except OSError as err:
        raise host_error(err) from None

