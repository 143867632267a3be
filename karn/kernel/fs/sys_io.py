"""Handlers: moving bytes through fds (read, write and their vector/positional kin)."""

from __future__ import annotations

import errno
import select
import struct

from karn import log
from karn.abi.errno import SyscallError
from karn.abi.registers import s32, s64
from karn.hints import TYPE_CHECKING
from karn.kernel.fs.constants import S_IFBLK, S_IFCHR, S_IFMT
from karn.kernel.fs.hostfs import HostDirFs, host_syncfs
from karn.kernel.fs.sysutil import (
    MAX_RW,
    ctx,
    guest_view,
    iovecs,
    readable,
    wait_until_ready,
    writable,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from karn.kernel.fs.file import DirEntry, OpenFile
    from karn.kernel.process import Task

_DIRENT64 = struct.Struct("<QqHB")
_DIRENT = struct.Struct("<QQH")
_SENDFILE_CHUNK = 1 << 16


def _offset(value: int) -> int:
    off = s64(value)
    if off < 0:
        raise SyscallError(errno.EINVAL)
    return off


def sys_read(task: Task, fd: int, buf: int, count: int) -> int:
    file = readable(task, fd)
    if count == 0:
        return 0
    wait_until_ready(task, file, select.POLLIN)
    return file.readinto(task, guest_view(task, file, buf, count))


def sys_write(task: Task, fd: int, buf: int, count: int) -> int:
    file = writable(task, fd)
    if count == 0:
        return 0
    wait_until_ready(task, file, select.POLLOUT)
    return file.write(task, task.mem.view(buf, min(count, MAX_RW)))


def sys_pread64(task: Task, fd: int, buf: int, count: int, offset: int) -> int:
    file = readable(task, fd)
    off = _offset(offset)
    if count == 0:
        return 0
    return file.pread_into(guest_view(task, file, buf, count), off)


def sys_pwrite64(task: Task, fd: int, buf: int, count: int, offset: int) -> int:
    file = writable(task, fd)
    off = _offset(offset)
    if count == 0:
        return 0
    return file.pwrite(task.mem.view(buf, min(count, MAX_RW)), off)


def sys_readv(task: Task, fd: int, iov: int, iovcnt: int) -> int:
    file = readable(task, fd)
    views = iovecs(task, iov, iovcnt)
    if not views:
        return 0
    wait_until_ready(task, file, select.POLLIN)
    return file.readv_into(task, views)


def sys_writev(task: Task, fd: int, iov: int, iovcnt: int) -> int:
    file = writable(task, fd)
    views = iovecs(task, iov, iovcnt)
    if not views:
        return 0
    wait_until_ready(task, file, select.POLLOUT)
    return file.writev(task, views)


def sys_preadv(task: Task, fd: int, iov: int, iovcnt: int, pos_l: int, pos_h: int) -> int:
    file = readable(task, fd)
    off = _offset(pos_l)  # x86-64 passes the whole offset in pos_l
    views = iovecs(task, iov, iovcnt)
    return file.preadv_into(views, off) if views else 0


def sys_pwritev(task: Task, fd: int, iov: int, iovcnt: int, pos_l: int, pos_h: int) -> int:
    file = writable(task, fd)
    off = _offset(pos_l)
    views = iovecs(task, iov, iovcnt)
    return file.pwritev(views, off) if views else 0


def sys_preadv2(
    task: Task, fd: int, iov: int, iovcnt: int, pos_l: int, pos_h: int, flags: int
) -> int:
    if s64(pos_l) == -1:  # -1: use and advance the file offset
        return sys_readv(task, fd, iov, iovcnt)
    return sys_preadv(task, fd, iov, iovcnt, pos_l, pos_h)


def sys_pwritev2(
    task: Task, fd: int, iov: int, iovcnt: int, pos_l: int, pos_h: int, flags: int
) -> int:
    if s64(pos_l) == -1:
        return sys_writev(task, fd, iov, iovcnt)
    return sys_pwritev(task, fd, iov, iovcnt, pos_l, pos_h)


def sys_lseek(task: Task, fd: int, offset: int, whence: int) -> int:
    file = task.process.fds.get(s32(fd))
    if whence > 4:
        raise SyscallError(errno.EINVAL)
    return file.lseek(s64(offset), whence)


def sys_sendfile(task: Task, out_fd: int, in_fd: int, offset_ptr: int, count: int) -> int:
    src = readable(task, in_fd)
    if not src.is_regular and src.stat().mode & S_IFMT not in (S_IFCHR, S_IFBLK):
        # Linux reads only what it can splice from: pipes, sockets, eventfds are EINVAL,
        # and programs rely on it to fall back to read and write (Go's io.Copy of a pipe
        # into a TCP connection waited forever for a socket edge after an EAGAIN).
        raise SyscallError(errno.EINVAL)
    dst = writable(task, out_fd)
    pos = _offset(task.mem.read_u64(offset_ptr)) if offset_ptr else None
    count = min(count, MAX_RW)
    buf = bytearray(min(count, _SENDFILE_CHUNK))  # bounded, whatever count says
    view = memoryview(buf)
    total = 0
    if count:  # wait for an empty pipe or a full one where a signal reaches, not in a host call
        wait_until_ready(task, src, select.POLLIN, copying=True)
        wait_until_ready(task, dst, select.POLLOUT, copying=True)
    while total < count:
        if total and not _ready_now(dst, select.POLLOUT):
            break  # a short count rather than a thread stuck in a host write
        want = view[: min(len(buf), count - total)]
        n = src.readinto(task, want) if pos is None else src.pread_into(want, pos + total)
        if n == 0:
            break
        written = dst.write(task, view[:n])
        total += written
        if written < n or n < len(want) or not src.is_regular:
            break
    if pos is not None:
        task.mem.write_u64(offset_ptr, pos + total)
    return total


def _ready_now(file: OpenFile, events: int) -> bool:
    host = None if file.is_regular else file.host_fd()
    if host is None:
        return True
    probe = select.poll()
    probe.register(host, events)
    return bool(probe.poll(0))


def sys_fsync(task: Task, fd: int) -> int:
    task.process.fds.get(s32(fd)).fsync()
    return 0


def sys_sync(task: Task) -> int:
    """The guest's writable volumes reach the host's disk (its tmpfs mounts live in
    memory; the root and read-only volumes hold nothing unwritten). Errors are not told:
    sync(2) has no return value."""
    for _path, fs in task.process.fs.vfs.mount_list():
        if isinstance(fs, HostDirFs) and not fs.readonly:
            try:
                fs.sync()
            except (OSError, SyscallError) as err:
                log.debug("sync of %s: %s", fs.host_root, err)
    return 0


def sys_syncfs(task: Task, fd: int) -> int:
    """The host filesystem holding the guest file's host fd; nothing to write for a
    file that lives in memory (tmpfs, karn's pipes and devices)."""
    host = task.process.fds.get(s32(fd)).host_fd()
    if host is not None:
        host_syncfs(host)
    return 0


def sys_ftruncate(task: Task, fd: int, length: int) -> int:
    file = task.process.fds.get(s32(fd))
    size = s64(length)
    if size < 0 or not file.writable:
        raise SyscallError(errno.EINVAL)
    file.truncate(size)
    return 0


def _dir_entries(task: Task, fd: int):  # noqa: ANN202 - (file, entries)
    file = task.process.fds.get(s32(fd))
    if not file.is_dir:
        raise SyscallError(errno.ENOTDIR)
    if file.dir_entries is None:
        file.dir_entries = ctx(task).dir_entries(file)
    return file, file.dir_entries


def _getdents(task: Task, fd: int, dirp: int, count: int,
              record: Callable[[DirEntry, int, bytes], bytes]) -> int:
    """Fill the guest buffer with as many whole records as fit; EINVAL if none does."""
    file, entries = _dir_entries(task, fd)
    out = bytearray()
    pos = file.dir_pos
    limit = min(count, MAX_RW)
    while pos < len(entries):
        e = entries[pos]
        rec = record(e, pos + 1, e.name.encode(errors="surrogateescape") + b"\0")
        if len(out) + len(rec) > limit:
            break
        out += rec
        pos += 1
    if not out and pos < len(entries):
        raise SyscallError(errno.EINVAL)
    task.mem.write(dirp, out)
    file.dir_pos = pos
    return len(out)


def _dirent64(e: DirEntry, offset: int, name: bytes) -> bytes:
    reclen = (_DIRENT64.size + len(name) + 7) & ~7
    return (_DIRENT64.pack(e.ino, offset, reclen, e.dtype) + name).ljust(reclen, b"\0")


def _dirent(e: DirEntry, offset: int, name: bytes) -> bytes:
    reclen = (_DIRENT.size + len(name) + 1 + 7) & ~7  # d_type is the record's last byte
    rec = bytearray((_DIRENT.pack(e.ino, offset, reclen) + name).ljust(reclen, b"\0"))
    rec[-1] = e.dtype
    return bytes(rec)


def sys_getdents64(task: Task, fd: int, dirp: int, count: int) -> int:
    return _getdents(task, fd, dirp, count, _dirent64)


def sys_getdents(task: Task, fd: int, dirp: int, count: int) -> int:
    return _getdents(task, fd, dirp, count, _dirent)


HANDLERS = {
    "read": sys_read,
    "write": sys_write,
    "pread64": sys_pread64,
    "pwrite64": sys_pwrite64,
    "readv": sys_readv,
    "writev": sys_writev,
    "preadv": sys_preadv,
    "pwritev": sys_pwritev,
    "preadv2": sys_preadv2,
    "pwritev2": sys_pwritev2,
    "lseek": sys_lseek,
    "sendfile": sys_sendfile,
    "fsync": sys_fsync,
    "fdatasync": sys_fsync,
    "sync": sys_sync,
    "syncfs": sys_syncfs,
    "ftruncate": sys_ftruncate,
    "getdents64": sys_getdents64,
    "getdents": sys_getdents,
}
NOTES = {
    "sync": "syncfs of the host filesystems of the guest's writable volumes (the root and "
    "read-only volumes hold nothing unwritten; tmpfs lives in memory).",
    "preadv2": "flags (RWF_*) are ignored",
    "pwritev2": "flags (RWF_*) are ignored",
}
