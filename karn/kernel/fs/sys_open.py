"""Handlers: opening files, metadata and the current directory."""

from __future__ import annotations

import errno
from functools import partial

from karn.abi.errno import SyscallError
from karn.abi.registers import s32, u32
from karn.hints import TYPE_CHECKING
from karn.kernel.blocking import WouldBlock, waits_forbidden
from karn.kernel.fs.constants import (
    AT_EACCESS,
    AT_EMPTY_PATH,
    AT_NO_AUTOMOUNT,
    AT_STATX_SYNC_TYPE,
    AT_SYMLINK_NOFOLLOW,
    OFlag,
)
from karn.kernel.fs.fifo import PendingFifo
from karn.kernel.fs.file import OpenFile
from karn.kernel.fs.stat import Stat
from karn.kernel.fs.sysutil import base_of, ctx, file_or_path, path_arg, resolve_at
from karn.kernel.fs.vfs import Resolved, split_path

if TYPE_CHECKING:
    from karn.kernel.process import Task

_VALID_OPEN = 0
for _name, _flag in vars(OFlag).items():  # O_SYNC, O_TMPFILE are multi-bit
    if _name.isupper():
        _VALID_OPEN |= _flag  # any other bit: Linux ignores it on open
_STAT_FLAGS = AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT
STATX_RESERVED = 0x80000000


def sys_openat(task: Task, dirfd: int, pathname: int, flags: int, mode: int) -> int:
    flags = u32(flags) & _VALID_OPEN
    path = path_arg(task, pathname)
    fs = ctx(task)
    file = fs.open(path, flags, u32(mode) & 0o7777, base_of(task, dirfd, path))
    if isinstance(file, PendingFifo) and waits_forbidden():  # the fast server: the rest,
        # which may wait for the other end, on the exit path (a host FIFO's end is open
        # already: opened again, the other end would see an open and a close)
        raise WouldBlock(partial(_finish_open, task, file, flags), file.close)
    return _finish_open(task, file, flags)


def _finish_open(task: Task, file: OpenFile, flags: int) -> int:
    if isinstance(file, PendingFifo):
        file = file.finish_open(task)  # may wait for the other end, as Linux's open
    try:
        return task.process.fds.install(file, cloexec=bool(flags & OFlag.CLOEXEC))
    except SyscallError:
        file.close()
        raise


def sys_open(task: Task, pathname: int, flags: int, mode: int) -> int:
    return sys_openat(task, -100, pathname, flags, mode)


def sys_creat(task: Task, pathname: int, mode: int) -> int:
    return sys_openat(task, -100, pathname, OFlag.CREAT | OFlag.WRONLY | OFlag.TRUNC, mode)


def _stat_of(target: OpenFile | Resolved) -> Stat:
    return target.stat() if isinstance(target, OpenFile) else target.require()


def sys_fstat(task: Task, fd: int, statbuf: int) -> int:
    st = task.process.fds.get(s32(fd)).stat()
    task.mem.write(statbuf, st.pack())
    return 0


def sys_newfstatat(task: Task, dirfd: int, pathname: int, statbuf: int, flags: int) -> int:
    flags = s32(flags)
    if flags & ~_STAT_FLAGS:
        raise SyscallError(errno.EINVAL)
    target = file_or_path(task, dirfd, pathname, flags, not flags & AT_SYMLINK_NOFOLLOW)
    task.mem.write(statbuf, _stat_of(target).pack())
    return 0


def sys_stat(task: Task, pathname: int, statbuf: int) -> int:
    return sys_newfstatat(task, -100, pathname, statbuf, 0)


def sys_lstat(task: Task, pathname: int, statbuf: int) -> int:
    return sys_newfstatat(task, -100, pathname, statbuf, AT_SYMLINK_NOFOLLOW)


def sys_statx(task: Task, dirfd: int, pathname: int, flags: int, mask: int, buf: int) -> int:
    flags = s32(flags)
    if (
        flags & ~(_STAT_FLAGS | AT_STATX_SYNC_TYPE)
        or flags & AT_STATX_SYNC_TYPE == AT_STATX_SYNC_TYPE
        or u32(mask) & STATX_RESERVED
    ):
        raise SyscallError(errno.EINVAL)
    target = file_or_path(task, dirfd, pathname, flags, not flags & AT_SYMLINK_NOFOLLOW)
    task.mem.write(buf, _stat_of(target).pack_statx())
    return 0


def sys_readlinkat(task: Task, dirfd: int, pathname: int, buf: int, bufsiz: int) -> int:
    size = s32(bufsiz)
    if size <= 0:
        raise SyscallError(errno.EINVAL)
    r = resolve_at(task, dirfd, pathname, follow=False)
    r.require()
    target = r.fs.readlink(r.rel).encode(errors="surrogateescape")[:size]
    task.mem.write(buf, target)
    return len(target)


def sys_readlink(task: Task, pathname: int, buf: int, bufsiz: int) -> int:
    return sys_readlinkat(task, -100, pathname, buf, bufsiz)


def sys_faccessat2(task: Task, dirfd: int, pathname: int, mode: int, flags: int) -> int:
    mode, flags = s32(mode), s32(flags)
    if mode & ~7 or flags & ~(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL)
    target = file_or_path(task, dirfd, pathname, flags, not flags & AT_SYMLINK_NOFOLLOW)
    if isinstance(target, OpenFile) or target.magic is not None or target.virtual:
        return 0  # an open file, a /proc/self/fd link or a mount-point directory
    target.require()
    target.fs.access(target.rel, mode)
    return 0


def sys_faccessat(task: Task, dirfd: int, pathname: int, mode: int) -> int:
    return sys_faccessat2(task, dirfd, pathname, mode, 0)


def sys_access(task: Task, pathname: int, mode: int) -> int:
    return sys_faccessat2(task, -100, pathname, mode, 0)


def sys_getcwd(task: Task, buf: int, size: int) -> int:
    cwd = ctx(task).cwd.encode(errors="surrogateescape") + b"\0"
    if size < len(cwd):
        raise SyscallError(errno.ERANGE)
    task.mem.write(buf, cwd)
    return len(cwd)


def sys_chdir(task: Task, pathname: int) -> int:
    path = path_arg(task, pathname)
    ctx(task).chdir(path)
    return 0


def sys_fchdir(task: Task, fd: int) -> int:
    file = task.process.fds.get(s32(fd))
    if not file.is_dir:
        raise SyscallError(errno.ENOTDIR)
    fs = ctx(task)
    fs.set_cwd(fs.resolve("/" + "/".join(split_path(file.path))))
    return 0


HANDLERS = {
    "openat": sys_openat,
    "open": sys_open,
    "creat": sys_creat,
    "fstat": sys_fstat,
    "newfstatat": sys_newfstatat,
    "stat": sys_stat,
    "lstat": sys_lstat,
    "statx": sys_statx,
    "readlinkat": sys_readlinkat,
    "readlink": sys_readlink,
    "faccessat2": sys_faccessat2,
    "faccessat": sys_faccessat,
    "access": sys_access,
    "getcwd": sys_getcwd,
    "chdir": sys_chdir,
    "fchdir": sys_fchdir,
}
NOTES = {
    "openat": "O_TMPFILE gives EOPNOTSUPP; O_PATH on a symlink itself gives ELOOP",
    "statx": "returns STATX_BASIC_STATS; btime is ctime; no mount id",
    "faccessat2": "the guest is root: only W_OK on read-only mounts and X_OK are checked",
}
