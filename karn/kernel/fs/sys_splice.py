"""Handlers: moving data between fds without the guest's memory (splice, tee, vmsplice,
copy_file_range) and fallocate.

Between host fds (pipes, sockets, volume files) the host kernel moves the data (splice,
tee, copy_file_range); a tmpfs file's side is copied here. A blocking call waits where a
signal reaches it (wait_until_ready), then asks the host without blocking.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select

from karn.abi.errno import SyscallError
from karn.abi.registers import s32, s64, u32
from karn.hints import TYPE_CHECKING
from karn.kernel.blocking import Interrupted
from karn.kernel.fs.constants import SEEK_CUR, SEEK_SET, OFlag
from karn.kernel.fs.file import OpenFile, host_error, write_error
from karn.kernel.fs.sysutil import MAX_RW, iovecs, readable, wait_until_ready, writable
from karn.kernel.fs.tmpfs import WRITE_SEALS, TmpFile

if TYPE_CHECKING:
    from karn.kernel.process import Task

SPLICE_F_MOVE, SPLICE_F_NONBLOCK, SPLICE_F_MORE, SPLICE_F_GIFT = 1, 2, 4, 8
SPLICE_FLAGS = SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE | SPLICE_F_GIFT
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_ZERO_RANGE, FALLOC_FL_INSERT_RANGE = 0x08, 0x10, 0x20
FALLOC_MODES = (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_COLLAPSE_RANGE
                | FALLOC_FL_ZERO_RANGE | FALLOC_FL_INSERT_RANGE | 0x40)  # + UNSHARE_RANGE
CHUNK = 1 << 16
MAX_OFFSET = (1 << 63) - 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
_libc.tee.restype = ctypes.c_ssize_t
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)


def _host_call(task: Task, call, nonblock: bool, waits: tuple[tuple[int, int], ...]) -> int:  # noqa: ANN001
    """Make a non-blocking host call; while it would block, wait interruptibly for the
    fds it needs (EAGAIN at once for a non-blocking call)."""
    while True:
        try:
            return call()
        except OSError as err:
            if err.errno != errno.EAGAIN or nonblock:
                raise write_error(task, err) from None  # SIGPIPE with EPIPE, as a write
        if task.signal_pending():
            raise Interrupted
        task.waker.wait(None, waits)


def _offset_arg(task: Task, ptr: int, file: OpenFile) -> int | None:
    if not ptr:
        return None
    if file.is_pipe:
        raise SyscallError(errno.ESPIPE)
    off = s64(task.mem.read_u64(ptr))
    if off < 0:
        raise SyscallError(errno.EINVAL)
    return off


def sys_splice(task: Task, fd_in: int, off_in: int, fd_out: int, off_out: int, length: int,
               flags: int) -> int:
    src, dst = readable(task, fd_in), writable(task, fd_out)
    flags = u32(flags)
    if flags & ~SPLICE_FLAGS:
        raise SyscallError(errno.EINVAL)
    if not (src.is_pipe or dst.is_pipe):
        raise SyscallError(errno.EINVAL)
    if src.is_dir or dst.is_dir:
        raise SyscallError(errno.EISDIR if src.is_dir else errno.EINVAL)
    if dst.flags & OFlag.APPEND and not dst.is_pipe:
        raise SyscallError(errno.EINVAL)
    pos_in, pos_out = _offset_arg(task, off_in, src), _offset_arg(task, off_out, dst)
    count = min(length, MAX_RW)
    if count == 0:
        return 0
    nonblock = bool(flags & SPLICE_F_NONBLOCK)
    host_in, host_out = src.host_fd(), dst.host_fd()
    if host_in is not None and host_out is not None:
        moved = _host_splice(task, src, dst, host_in, host_out, pos_in, pos_out, count,
                             nonblock)
    else:
        moved = _copy(task, src, dst, pos_in, pos_out, count, nonblock)
    if pos_in is not None:
        task.mem.write_u64(off_in, pos_in + moved)
    if pos_out is not None:
        task.mem.write_u64(off_out, pos_out + moved)
    return moved


def _host_splice(task: Task, src: OpenFile, dst: OpenFile, host_in: int, host_out: int,
                 pos_in: int | None, pos_out: int | None, count: int, nonblock: bool) -> int:
    if not nonblock:
        wait_until_ready(task, src, select.POLLIN, copying=True)
        wait_until_ready(task, dst, select.POLLOUT, copying=True)
    waits = tuple((fd, ev) for fd, ev, f in ((host_in, select.POLLIN, src),
                                             (host_out, select.POLLOUT, dst)) if f.is_pipe)
    return _host_call(
        task,
        lambda: os.splice(host_in, host_out, count, pos_in, pos_out,
                          SPLICE_F_NONBLOCK | SPLICE_F_MOVE),
        nonblock or any(f.is_pipe and f.flags & OFlag.NONBLOCK for f in (src, dst)), waits)


def _copy(task: Task, src: OpenFile, dst: OpenFile, pos_in: int | None, pos_out: int | None,
          count: int, nonblock: bool) -> int:
    """One side is a tmpfs file (the other a pipe): the data goes through the monitor,
    taking from a file no more than the pipe accepted, so nothing is lost."""
    if not nonblock:
        wait_until_ready(task, src, select.POLLIN, copying=True)
        wait_until_ready(task, dst, select.POLLOUT, copying=True)
    elif src.is_pipe and not _ready(src, select.POLLIN) or (
            dst.is_pipe and not _ready(dst, select.POLLOUT)):
        raise SyscallError(errno.EAGAIN)
    buf = bytearray(min(count, CHUNK))
    view = memoryview(buf)
    if src.is_pipe:  # into a file: its write takes everything
        n = src.readinto(task, view)
        return _write_file(task, dst, view[:n], pos_out)
    start = src.lseek(0, SEEK_CUR) if pos_in is None else pos_in
    n = src.pread_into(view, start)
    if n == 0:
        return 0
    written = dst.write(task, view[:n])
    if pos_in is None:
        src.lseek(start + written, SEEK_SET)
    return written


def _write_file(task: Task, dst: OpenFile, data: memoryview, pos: int | None) -> int:
    if pos is not None:
        return dst.pwrite(data, pos)
    return dst.write(task, data)


def _ready(file: OpenFile, events: int) -> bool:
    host = file.host_fd()
    if host is None:
        return True
    probe = select.poll()
    probe.register(host, events)
    return bool(probe.poll(0))


def sys_tee(task: Task, fd_in: int, fd_out: int, length: int, flags: int) -> int:
    src, dst = readable(task, fd_in), writable(task, fd_out)
    flags = u32(flags)
    if flags & ~SPLICE_FLAGS:
        raise SyscallError(errno.EINVAL)
    host_in, host_out = src.host_fd(), dst.host_fd()
    if not (src.is_pipe and dst.is_pipe) or host_in is None or host_out is None:
        raise SyscallError(errno.EINVAL)
    if os.fstat(host_in).st_ino == os.fstat(host_out).st_ino:
        raise SyscallError(errno.EINVAL)  # both ends of one pipe
    count = min(length, MAX_RW)
    nonblock = bool(flags & SPLICE_F_NONBLOCK)

    def call() -> int:
        n = _libc.tee(host_in, host_out, count, SPLICE_F_NONBLOCK)
        if n < 0:
            raise OSError(ctypes.get_errno(), "tee")
        return n

    if not nonblock:
        wait_until_ready(task, src, select.POLLIN, copying=True)
    return _host_call(task, call, nonblock,
                      ((host_in, select.POLLIN), (host_out, select.POLLOUT)))


def sys_vmsplice(task: Task, fd: int, iov: int, nr_segs: int, flags: int) -> int:
    """Guest memory into a pipe (its write end), or out of one (its read end)."""
    file = task.process.fds.get(s32(fd))
    if not file.is_pipe:
        raise SyscallError(errno.EBADF)
    if u32(flags) & ~SPLICE_FLAGS:
        raise SyscallError(errno.EINVAL)
    views = iovecs(task, iov, nr_segs)
    if not views:
        return 0
    nonblock = bool(u32(flags) & SPLICE_F_NONBLOCK)
    if file.writable:
        if nonblock and not _ready(file, select.POLLOUT):
            raise SyscallError(errno.EAGAIN)
        wait_until_ready(task, file, select.POLLOUT)
        return file.writev(task, views)
    if nonblock and not _ready(file, select.POLLIN):
        raise SyscallError(errno.EAGAIN)
    wait_until_ready(task, file, select.POLLIN)
    return file.readv_into(task, views)


def sys_copy_file_range(task: Task, fd_in: int, off_in: int, fd_out: int, off_out: int,
                        length: int, flags: int) -> int:
    src, dst = readable(task, fd_in), writable(task, fd_out)
    if u32(flags):
        raise SyscallError(errno.EINVAL)
    if src.is_dir or dst.is_dir:
        raise SyscallError(errno.EISDIR)
    if not (src.is_regular and dst.is_regular):
        raise SyscallError(errno.EINVAL)
    if dst.flags & OFlag.APPEND:
        raise SyscallError(errno.EBADF)
    pos_in, pos_out = _offset_arg(task, off_in, src), _offset_arg(task, off_out, dst)
    count = min(length, MAX_RW)
    host_in, host_out = src.host_fd(), dst.host_fd()
    if host_in is not None and host_out is not None:
        try:
            moved = os.copy_file_range(host_in, host_out, count, pos_in, pos_out)
        except OSError as err:
            raise host_error(err) from None
    else:
        moved = _copy_tmpfs(src, dst, pos_in, pos_out, count)
    if pos_in is not None:
        task.mem.write_u64(off_in, pos_in + moved)
    if pos_out is not None:
        task.mem.write_u64(off_out, pos_out + moved)
    return moved


def _copy_tmpfs(src: OpenFile, dst: OpenFile, pos_in: int | None, pos_out: int | None,
                count: int) -> int:
    """Within one tmpfs (Linux: EXDEV between filesystems without a copy_file_range of
    their own, which tmpfs lacks)."""
    if not (isinstance(src, TmpFile) and isinstance(dst, TmpFile)) or src.fs is not dst.fs:
        raise SyscallError(errno.EXDEV)
    start_in = src.pos if pos_in is None else pos_in
    start_out = dst.pos if pos_out is None else pos_out
    if src.node is dst.node and start_in < start_out + count and start_out < start_in + count:
        raise SyscallError(errno.EINVAL)  # overlapping ranges of one file
    if start_out + count > MAX_OFFSET:
        raise SyscallError(errno.EFBIG)
    data = bytes(src.node.data or b"")[start_in : start_in + count]
    moved = dst.pwrite(data, start_out) if data else 0
    if pos_in is None:
        src.pos += moved
    if pos_out is None:
        dst.pos += moved
    return moved


def sys_fallocate(task: Task, fd: int, mode: int, offset: int, length: int) -> int:
    file = task.process.fds.get(s32(fd))
    mode, offset, length = s32(mode), s64(offset), s64(length)
    if offset < 0 or length <= 0 or mode & ~FALLOC_MODES:
        raise SyscallError(errno.EINVAL)
    if mode & FALLOC_FL_PUNCH_HOLE and not mode & FALLOC_FL_KEEP_SIZE:
        raise SyscallError(errno.EOPNOTSUPP)
    if not file.writable:
        raise SyscallError(errno.EBADF)
    if file.is_dir:
        raise SyscallError(errno.EISDIR)
    if file.is_pipe:
        raise SyscallError(errno.ESPIPE)
    if not file.is_regular:
        raise SyscallError(errno.ENODEV)
    if offset + length > MAX_OFFSET:
        raise SyscallError(errno.EFBIG)
    host = file.host_fd()
    if host is not None:  # the host filesystem's modes and answers
        if _libc.fallocate(host, mode, offset, length) < 0:
            raise SyscallError(ctypes.get_errno() or errno.EIO)
        return 0
    if not isinstance(file, TmpFile):
        raise SyscallError(errno.EOPNOTSUPP)
    _tmpfs_fallocate(file, mode, offset, length)
    return 0


def _tmpfs_fallocate(file: TmpFile, mode: int, offset: int, length: int) -> None:
    """tmpfs's: allocation (which holds no pages here, as a file's data is its size) and
    punching holes; other modes EOPNOTSUPP, as shmem_fallocate."""
    if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE):
        raise SyscallError(errno.EOPNOTSUPP)
    node = file.node
    data = node.data
    assert data is not None
    if mode & FALLOC_FL_PUNCH_HOLE:
        if node.seals & WRITE_SEALS:
            raise SyscallError(errno.EPERM)
        end = min(offset + length, len(data))
        if end > offset:
            data[offset:end] = bytes(end - offset)
            node.touch()
        return
    if offset + length > file.fs.max_file_size:
        raise SyscallError(errno.EFBIG)
    if not mode & FALLOC_FL_KEEP_SIZE and offset + length > len(data):
        file.fs.resize(node, offset + length)


HANDLERS = {
    "splice": sys_splice,
    "tee": sys_tee,
    "vmsplice": sys_vmsplice,
    "copy_file_range": sys_copy_file_range,
    "fallocate": sys_fallocate,
}
NOTES = {
    "splice": "Between host fds (pipes, sockets, volume files) the host splices; a tmpfs "
    "file's side is copied (at most 64 KiB a call).",
    "vmsplice": "Copies (as a write to, or a read from, the pipe): no pages are gifted.",
    "copy_file_range": "The host's between volume files; within one tmpfs a copy; EXDEV "
    "between filesystems, as Linux for filesystems without their own copy_file_range.",
    "fallocate": "tmpfs: modes 0, KEEP_SIZE and PUNCH_HOLE|KEEP_SIZE (others EOPNOTSUPP, "
    "as Linux's tmpfs); allocation reserves nothing. Volumes: the host filesystem's.",
}
