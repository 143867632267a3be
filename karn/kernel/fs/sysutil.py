"""Argument decoding shared by the file syscall handlers."""

from __future__ import annotations

import errno
import os
import select

from karn.abi.errno import SyscallError
from karn.abi.registers import s32
from karn.hints import TYPE_CHECKING
from karn.kernel.blocking import Interrupted
from karn.kernel.fs.constants import AT_EMPTY_PATH, AT_FDCWD, PATH_MAX, OFlag
from karn.kernel.fs.file import OpenFile
from karn.kernel.fs.vfs import Comps, Resolved, split_path

if TYPE_CHECKING:
    from karn.kernel.fs.context import FsContext
    from karn.kernel.process import Task

MAX_RW = 0x7FFFF000  # Linux's MAX_RW_COUNT: the most one read/write moves
IOV_MAX = 1024


def ctx(task: Task) -> FsContext:
    """The task's filesystem view (its /proc bound to the process when it was made)."""
    return task.process.fs


def path_arg(task: Task, ptr: int) -> str:
    raw = task.mem.read_cstring(ptr, PATH_MAX)
    return os.fsdecode(raw)


def base_of(task: Task, dirfd: int, path: str) -> Comps | None:
    """The starting directory for a *at call (None: the cwd); dirfd ignored for /paths."""
    fd = s32(dirfd)
    if fd == AT_FDCWD or path.startswith("/"):
        return None
    file = task.process.fds.get(fd)
    if not file.is_dir:
        raise SyscallError(errno.ENOTDIR)
    return tuple(split_path(file.path))


def resolve_at(task: Task, dirfd: int, path_ptr: int, follow: bool) -> Resolved:
    path = path_arg(task, path_ptr)
    return ctx(task).resolve(path, base_of(task, dirfd, path), follow)


def file_or_path(
    task: Task, dirfd: int, path_ptr: int, flags: int, follow: bool
) -> OpenFile | Resolved:
    """For calls taking AT_EMPTY_PATH: the dirfd's own file when the path is empty."""
    path = path_arg(task, path_ptr) if path_ptr else ""
    if not path and flags & AT_EMPTY_PATH:
        fd = s32(dirfd)
        if fd == AT_FDCWD:
            return ctx(task).resolve(".", None, True)
        return task.process.fds.get(fd)
    return ctx(task).resolve(path, base_of(task, dirfd, path), follow)


def readable(task: Task, fd: int) -> OpenFile:
    file = task.process.fds.get(s32(fd))
    if not file.readable:
        raise SyscallError(errno.EBADF)
    return file


def writable(task: Task, fd: int) -> OpenFile:
    file = task.process.fds.get(s32(fd))
    if not file.writable:
        raise SyscallError(errno.EBADF)
    return file


def wait_until_ready(task: Task, file: OpenFile, events: int, copying: bool = False) -> None:
    """Before a blocking read or write on a pipe, tty or eventfd: wait on the host fd and
    the task's waker together, so a signal interrupts the wait (the call then restarts or
    fails with EINTR) instead of leaving the thread stuck in a host read. A file that
    waits itself (a socket, honouring its timeouts) is waited for only when copying
    (sendfile: bytes it read could not be given back if the write then waited)."""
    if events & select.POLLIN:
        file.before_read(task)
    else:
        file.before_write(task)
    if file.flags & OFlag.NONBLOCK or file.is_regular or file.is_dir or (
            file.waits_itself and not copying):
        return
    host = file.host_fd()
    if host is None:
        return
    probe = select.poll()
    probe.register(host, events)
    while not probe.poll(0):
        if task.signal_pending():
            raise Interrupted
        task.waker.wait(None, ((host, events),))


def iovecs(task: Task, iov: int, iovcnt: int) -> list[memoryview]:
    """Guest iovec array -> views of guest memory (no copies)."""
    cnt = s32(iovcnt)
    if cnt < 0 or cnt > IOV_MAX:
        raise SyscallError(errno.EINVAL)
    raw = task.mem.read(iov, 16 * cnt) if cnt else b""
    views, total = [], 0
    for i in range(cnt):
        base = int.from_bytes(raw[16 * i : 16 * i + 8], "little")
        length = int.from_bytes(raw[16 * i + 8 : 16 * i + 16], "little")
        if length >> 63:
            raise SyscallError(errno.EINVAL)
        length = min(length, MAX_RW - total)
        total += length
        if length:
            views.append(task.mem.view(base, length))
    return views


def guest_view(task: Task, file: OpenFile, buf: int, count: int) -> memoryview:
    """A view for a read of count bytes; a regular file's read needs only what it holds
    (a program may pass a count larger than its mapped buffer)."""
    count = min(count, MAX_RW)
    try:
        return task.mem.view(buf, count)
    except SyscallError as err:
        if err.errno != errno.EFAULT or not file.is_regular:
            raise
        return task.mem.view(buf, min(count, file.available()))
