"""Socket syscalls: socket ... recvmmsg. Sockets are host sockets behind the network
policy (karn/kernel/net/, docs/networking.md)."""

from __future__ import annotations

import _socket as socket
import errno
import struct

from karn import log
from karn.abi.errno import SyscallError
from karn.abi.registers import s32, u32
from karn.hints import TYPE_CHECKING, TypeVar
from karn.kernel.fs.file import host_error
from karn.kernel.fs.sysutil import iovecs
from karn.kernel.net import consts as c
from karn.kernel.net.addr import Address, encode, read_addr, write_addr
from karn.kernel.net.base import SocketFile
from karn.kernel.net.options import charge_buffers
from karn.kernel.net.stack import net_of
from karn.kernel.net.unix import SCM_MAX_FD, UnixSocket

if TYPE_CHECKING:
    from karn.kernel.fs.file import OpenFile
    from karn.kernel.process import Task

MSGHDR = struct.Struct("<QI4xQQQQi4x")  # name, namelen, iov, iovlen, control, controllen, flags
MMSGHDR_SIZE = 64  # struct msghdr + unsigned msg_len, padded
CMSGHDR = struct.Struct("<Qii")
UIO_MAXIOV = 1024
S = TypeVar("S", bound=SocketFile)
_warned: set[str] = set()


def _align(n: int) -> int:
    return (n + 7) & ~7


def _sock(task: Task, fd: int) -> SocketFile:
    file = task.process.fds.get(s32(fd))
    if not isinstance(file, SocketFile):
        raise SyscallError(errno.ENOTSOCK)
    return file


def _check_type(family: int, stype: int, proto: int) -> None:
    if family in (c.AF_INET, c.AF_INET6):
        if stype == c.SOCK_RAW:
            log.warning_once("raw", "raw sockets are not allowed in the guest; returning EPERM")
            raise SyscallError(errno.EPERM)
        wanted = {c.SOCK_STREAM: c.IPPROTO_TCP, c.SOCK_DGRAM: c.IPPROTO_UDP}.get(stype)
        if wanted is None:
            raise SyscallError(errno.ESOCKTNOSUPPORT)
        if proto not in (0, wanted):
            # ICMP ping sockets: EACCES, as Linux outside ping_group_range; any other
            # protocol (UDP-Lite, SCTP): as a kernel built without it
            ping = stype == c.SOCK_DGRAM and proto in (c.IPPROTO_ICMP, c.IPPROTO_ICMPV6)
            raise SyscallError(errno.EACCES if ping else errno.EPROTONOSUPPORT)
    elif family == c.AF_UNIX:
        if stype not in (c.SOCK_STREAM, c.SOCK_DGRAM, c.SOCK_SEQPACKET):
            raise SyscallError(errno.ESOCKTNOSUPPORT)
        if proto not in (0, c.AF_UNIX):
            raise SyscallError(errno.EPROTONOSUPPORT)
    elif family == c.AF_PACKET:
        log.warning_once("packet", "packet sockets are not allowed in the guest; returning EPERM")
        raise SyscallError(errno.EPERM)  # as Linux without CAP_NET_RAW
    else:
        if family != c.AF_NETLINK:  # glibc probes netlink and copes without it
            # Keyed by family only for real ones: a guest must not flood the log.
            key = f"af{family}" if 0 <= family < c.AF_MAX else "af?"
            log.warning_once(key, "socket family %d is not supported; returning EAFNOSUPPORT",
                             family)
        raise SyscallError(errno.EAFNOSUPPORT)


def _split_type(kind: int) -> tuple[int, bool, bool]:
    stype = kind & c.SOCK_TYPE_MASK
    if kind & ~(c.SOCK_TYPE_MASK | c.SOCK_NONBLOCK | c.SOCK_CLOEXEC):
        raise SyscallError(errno.EINVAL)
    return stype, bool(kind & c.SOCK_NONBLOCK), bool(kind & c.SOCK_CLOEXEC)


def _wrap(task: Task, cls: type[S], family: int, stype: int, proto: int,
          sock: socket.socket, nonblock: bool) -> S:
    file = cls(net_of(task.process), family, stype, proto, sock, nonblock)
    try:
        charge_buffers(task, file)
    except SyscallError:
        file.close()
        raise
    return file


def _install(task: Task, file: OpenFile, cloexec: bool) -> int:
    try:
        return task.process.fds.install(file, cloexec)
    except SyscallError:
        file.close()
        raise


def sys_socket(task: Task, domain: int, kind: int, protocol: int) -> int:
    family, proto = s32(domain), s32(protocol)
    stype, nonblock, cloexec = _split_type(s32(kind))
    _check_type(family, stype, proto)
    try:
        sock = socket.socket(family, stype | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, proto)
    except OSError as err:
        raise host_error(err) from None
    if family == c.AF_UNIX:
        cls: type[SocketFile] = UnixSocket
    else:
        from karn.kernel.net.inet import InetSocket  # only for a guest that makes one

        cls = InetSocket
    return _install(task, _wrap(task, cls, family, stype, proto, sock, nonblock), cloexec)


def sys_socketpair(task: Task, domain: int, kind: int, protocol: int, sv: int) -> int:
    family, proto = s32(domain), s32(protocol)
    stype, nonblock, cloexec = _split_type(s32(kind))
    _check_type(family, stype, proto)
    if family != c.AF_UNIX:
        raise SyscallError(errno.EOPNOTSUPP)
    task.mem.read(sv, 8)
    try:
        a, b = socket.socketpair(socket.AF_UNIX, stype | socket.SOCK_NONBLOCK
                                 | socket.SOCK_CLOEXEC)
    except OSError as err:
        raise host_error(err) from None
    try:
        fa = _wrap(task, UnixSocket, family, stype, proto, a, nonblock)
    except SyscallError:
        b.close()
        raise
    try:
        fb = _wrap(task, UnixSocket, family, stype, proto, b, nonblock)
    except SyscallError:
        fa.close()
        raise
    fa.peer_name = fb.peer_name = b""
    first = _install(task, fa, cloexec)
    try:
        second = _install(task, fb, cloexec)
    except SyscallError:
        task.process.fds.close(first)
        raise
    task.mem.write(sv, struct.pack("<ii", first, second))
    return 0


def sys_bind(task: Task, fd: int, addr: int, addrlen: int) -> int:
    sock = _sock(task, fd)
    sock.bind(task, read_addr(task, addr, s32(addrlen)))
    return 0


def sys_connect(task: Task, fd: int, addr: int, addrlen: int) -> int:
    sock = _sock(task, fd)
    sock.connect(task, read_addr(task, addr, s32(addrlen)))
    return 0


def sys_listen(task: Task, fd: int, backlog: int) -> int:
    _sock(task, fd).listen(task, s32(backlog))
    return 0


def sys_accept4(task: Task, fd: int, addr: int, addrlen: int, flags: int) -> int:
    flags = s32(flags)
    if flags & ~(c.SOCK_NONBLOCK | c.SOCK_CLOEXEC):
        raise SyscallError(errno.EINVAL)
    sock = _sock(task, fd)
    if addr and sock.listening:
        task.mem.read_u32(addrlen)  # EFAULT before a connection is taken
    new, peer = sock.accept(task, bool(flags & c.SOCK_NONBLOCK))
    try:
        charge_buffers(task, new)
    except SyscallError:
        new.close()
        raise
    newfd = _install(task, new, bool(flags & c.SOCK_CLOEXEC))
    write_addr(task, addr, addrlen, peer)
    return newfd


def sys_accept(task: Task, fd: int, addr: int, addrlen: int) -> int:
    return sys_accept4(task, fd, addr, addrlen, 0)


def sys_getsockname(task: Task, fd: int, addr: int, addrlen: int) -> int:
    sock = _sock(task, fd)
    write_addr(task, addr, addrlen, sock.getsockname())
    return 0


def sys_getpeername(task: Task, fd: int, addr: int, addrlen: int) -> int:
    sock = _sock(task, fd)
    write_addr(task, addr, addrlen, sock.getpeername())
    return 0


def sys_shutdown(task: Task, fd: int, how: int) -> int:
    sock = _sock(task, fd)
    how = s32(how)
    if how not in (c.SHUT_RD, c.SHUT_WR, c.SHUT_RDWR):
        raise SyscallError(errno.EINVAL)
    sock.shutdown(how)
    return 0


def sys_setsockopt(task: Task, fd: int, level: int, name: int, val: int, optlen: int) -> int:
    sock = _sock(task, fd)
    length = s32(optlen)
    if length < 0:
        raise SyscallError(errno.EINVAL)
    raw = task.mem.read(val, min(length, 1024)) if length else b""
    sock.setsockopt(task, s32(level), s32(name), raw)
    return 0


def sys_getsockopt(task: Task, fd: int, level: int, name: int, val: int, lenptr: int) -> int:
    sock = _sock(task, fd)
    size = s32(task.mem.read_u32(lenptr))
    if size < 0:
        raise SyscallError(errno.EINVAL)
    data = sock.getsockopt(task, s32(level), s32(name), size)
    data = data[:size]
    task.mem.write(val, data)
    task.mem.write_u32(lenptr, len(data))
    return 0


# -- data -------------------------------------------------------------------------------

def _send(task: Task, sock: SocketFile, views: list[memoryview], flags: int,
          dest: Address | None, files: list[OpenFile] | None = None) -> int:
    if flags & ~(c.SEND_FLAGS | 0x800 | 0x10000 | 0x20000000):  # CONFIRM, BATCH, ZEROCOPY
        raise SyscallError(errno.EOPNOTSUPP)
    return sock.sendmsg(task, views, flags, dest, files)


def sys_sendto(task: Task, fd: int, buf: int, length: int, flags: int, dest: int,
               addrlen: int) -> int:
    sock = _sock(task, fd)
    views = [task.mem.view(buf, length)] if length else [memoryview(b"")]
    where = read_addr(task, dest, s32(addrlen)) if dest else None
    return _send(task, sock, views, s32(flags), where)


def sys_recvfrom(task: Task, fd: int, buf: int, length: int, flags: int, src: int,
                 addrlen: int) -> int:
    sock = _sock(task, fd)
    if src:
        task.mem.read_u32(addrlen)
    view = task.mem.view(buf, length) if length else memoryview(bytearray(0))
    n, source = sock.recvfrom(task, view, s32(flags), bool(src))
    if src:
        if source is not None:
            write_addr(task, src, addrlen, source)
        else:
            task.mem.write_u32(addrlen, 0)
    return n


def _rights_of(task: Task, control: bytes) -> list[OpenFile]:
    files: list[OpenFile] = []
    pos = 0
    while pos + CMSGHDR.size <= len(control):
        length, level, kind = CMSGHDR.unpack_from(control, pos)
        if length < CMSGHDR.size or pos + length > len(control):
            raise SyscallError(errno.EINVAL)
        if level == c.SOL_SOCKET and kind == c.SCM_RIGHTS:
            data = control[pos + CMSGHDR.size : pos + length]
            for (gfd,) in struct.iter_unpack("<i", data[: len(data) // 4 * 4]):
                files.append(task.process.fds.get(gfd))
            if len(files) > SCM_MAX_FD:
                raise SyscallError(errno.EINVAL)
        pos += _align(length)
    return files


def _do_sendmsg(task: Task, sock: SocketFile, msg: int, flags: int) -> int:
    name, namelen, iov, iovlen, control, controllen, _ = MSGHDR.unpack(
        task.mem.read(msg, MSGHDR.size))
    if iovlen > UIO_MAXIOV:
        raise SyscallError(errno.EMSGSIZE)
    views = iovecs(task, iov, iovlen) or [memoryview(b"")]
    dest = read_addr(task, name, namelen) if name and namelen else None
    files = None
    if control and controllen:
        raw = task.mem.read(control, min(controllen, 1 << 16))
        if sock.passes_files:
            files = _rights_of(task, raw)
        elif "cmsg" not in _warned:
            _warned.add("cmsg")
            log.debug("sendmsg: control messages on an inet socket are ignored")
    return _send(task, sock, views, flags, dest, files)


def sys_sendmsg(task: Task, fd: int, msg: int, flags: int) -> int:
    return _do_sendmsg(task, _sock(task, fd), msg, s32(flags))


def _deliver_rights(task: Task, files: list[OpenFile], room: int, cloexec: bool,
                    peek: bool) -> tuple[bytes, bool]:
    """Install received guest files; the SCM_RIGHTS control message and whether it was
    truncated (files that do not fit are closed, as Linux does)."""
    if not files:
        return b"", False
    fit = max(0, (room - CMSGHDR.size) // 4) if room >= CMSGHDR.size else 0
    fds = []
    for i, f in enumerate(files):
        if i < fit:
            try:
                fds.append(task.process.fds.install(f, cloexec))
            except SyscallError:
                fit = i
        if not peek:
            task.process.fds.unref(f)  # the in-flight reference
    if not fds:  # no room for one: no message at all, as Linux's scm_detach_fds
        return b"", True
    data = struct.pack(f"<{len(fds)}i", *fds)
    cmsg = CMSGHDR.pack(CMSGHDR.size + len(data), c.SOL_SOCKET, c.SCM_RIGHTS) + data
    return cmsg, len(fds) < len(files)


def _do_recvmsg(task: Task, sock: SocketFile, msg: int, flags: int) -> int:
    name, namelen, iov, iovlen, control, controllen, _ = MSGHDR.unpack(
        task.mem.read(msg, MSGHDR.size))
    if iovlen > UIO_MAXIOV:
        raise SyscallError(errno.EMSGSIZE)
    views = iovecs(task, iov, iovlen) or [memoryview(bytearray(0))]
    got = sock.recvmsg(task, views, flags, bool(name and namelen), controllen > 0)
    msg_flags = got.flags & (c.MSG_TRUNC | c.MSG_CTRUNC | c.MSG_EOR | c.MSG_OOB)
    msg_flags |= flags & c.MSG_CMSG_CLOEXEC  # Linux hands the request back in msg_flags
    cmsg, truncated = _deliver_rights(task, got.files, controllen,
                                      bool(flags & c.MSG_CMSG_CLOEXEC),
                                      bool(flags & c.MSG_PEEK))
    if truncated:
        msg_flags |= c.MSG_CTRUNC
    if cmsg and control:
        task.mem.write(control, cmsg)
    written_namelen = 0
    if got.source is not None:
        raw = encode(got.source)
        task.mem.write(name, raw[:namelen])
        written_namelen = len(raw)
    task.mem.write(msg + 8, struct.pack("<I", written_namelen))
    # the room used: the message's CMSG_SPACE, or what there was of it
    task.mem.write(msg + 40, struct.pack("<Q", min(_align(len(cmsg)), controllen)))
    task.mem.write(msg + 48, struct.pack("<i", msg_flags))
    return got.nbytes


def sys_recvmsg(task: Task, fd: int, msg: int, flags: int) -> int:
    return _do_recvmsg(task, _sock(task, fd), msg, s32(flags))


def sys_sendmmsg(task: Task, fd: int, vec: int, vlen: int, flags: int) -> int:
    sock = _sock(task, fd)
    count = min(u32(vlen), UIO_MAXIOV)
    sent = 0
    for i in range(count):
        entry = vec + i * MMSGHDR_SIZE
        try:
            n = _do_sendmsg(task, sock, entry, s32(flags))
        except SyscallError:
            if sent:
                return sent
            raise
        task.mem.write_u32(entry + MSGHDR.size, n)
        sent += 1
    return sent


def sys_recvmmsg(task: Task, fd: int, vec: int, vlen: int, flags: int, timeout: int) -> int:
    sock = _sock(task, fd)
    flags = s32(flags)
    count = min(u32(vlen), UIO_MAXIOV)
    got = 0
    for i in range(count):
        entry = vec + i * MMSGHDR_SIZE
        this = flags & ~c.MSG_WAITFORONE
        if got and flags & c.MSG_WAITFORONE:
            this |= c.MSG_DONTWAIT
        try:
            n = _do_recvmsg(task, sock, entry, this)
        except SyscallError:
            if got:
                return got
            raise
        task.mem.write_u32(entry + MSGHDR.size, n)
        got += 1
    return got


HANDLERS = {
    "socket": sys_socket,
    "socketpair": sys_socketpair,
    "bind": sys_bind,
    "listen": sys_listen,
    "accept": sys_accept,
    "accept4": sys_accept4,
    "connect": sys_connect,
    "getsockname": sys_getsockname,
    "getpeername": sys_getpeername,
    "shutdown": sys_shutdown,
    "setsockopt": sys_setsockopt,
    "getsockopt": sys_getsockopt,
    "sendto": sys_sendto,
    "recvfrom": sys_recvfrom,
    "sendmsg": sys_sendmsg,
    "recvmsg": sys_recvmsg,
    "sendmmsg": sys_sendmmsg,
    "recvmmsg": sys_recvmmsg,
}

NOTES = {
    "socket": "AF_INET, AF_INET6 (TCP, UDP) and AF_UNIX (stream, datagram, seqpacket) as "
    "host sockets behind the network policy (docs/networking.md); raw sockets EPERM; "
    "other families EAFNOSUPPORT",
    "socketpair": "AF_UNIX only, as Linux",
    "bind": "inet: loopback and wildcard addresses only (the guest has a loopback of its "
    "own); ports are mapped to host ports unless --network host; an AF_UNIX path is a "
    "socket file in the guest's filesystem (its host socket sits in a private directory), "
    "abstract names are the guest's own",
    "connect": "inet: the guest's own listeners, egress allowed by --network, else "
    "ECONNREFUSED/ENETUNREACH",
    "sendmsg": "SCM_RIGHTS between guest fds on AF_UNIX; other control messages are "
    "ignored",
    "recvmsg": "SCM_RIGHTS on AF_UNIX; no other control messages are produced",
    "setsockopt": "an allow-list of SOL_SOCKET/TCP/IP/IPv6 options is passed to the host "
    "socket; SO_RCVTIMEO/SO_SNDTIMEO kept by karn; others ENOPROTOOPT",
    "getsockopt": "as setsockopt; SO_PEERCRED reports the guest's pid and identity",
    "recvmmsg": "the timeout argument is ignored",
}
