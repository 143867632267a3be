"""Handlers: changing the namespace and metadata (mkdir, unlink, rename, chmod, ...)."""

from __future__ import annotations

import errno

from karn.abi.errno import SyscallError
from karn.abi.registers import s32, s64, u32
from karn.hints import TYPE_CHECKING
from karn.kernel.fs.constants import (
    AT_EMPTY_PATH,
    AT_REMOVEDIR,
    AT_SYMLINK_FOLLOW,
    AT_SYMLINK_NOFOLLOW,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    S_IFBLK,
    S_IFCHR,
    S_IFDIR,
    S_IFIFO,
    S_IFMT,
    S_IFREG,
    S_IFSOCK,
    UTIME_NOW,
    UTIME_OMIT,
)
from karn.kernel.fs.file import OpenFile
from karn.kernel.fs.stat import StatFs, now_ns
from karn.kernel.fs.sysutil import ctx, file_or_path, path_arg, resolve_at
from karn.kernel.fs.vfs import Resolved

if TYPE_CHECKING:
    from karn.kernel.process import Task

PIPEFS_MAGIC = 0x50495045


def _last_name(task: Task, pathname: int) -> str:
    path = path_arg(task, pathname).rstrip("/")
    return path.rsplit("/", 1)[-1]


def _changeable(r: Resolved) -> Resolved:
    """The target of a namespace change: it must be a real entry, not a mount point."""
    if not r.rel or r.virtual or r.magic is not None:
        raise SyscallError(errno.EBUSY)
    return r


def sys_mkdirat(task: Task, dirfd: int, pathname: int, mode: int) -> int:
    r = resolve_at(task, dirfd, pathname, follow=False)
    if r.stat is not None:
        raise SyscallError(errno.EEXIST)
    r.fs.mkdir(r.rel, u32(mode) & 0o7777 & ~ctx(task).umask)
    return 0


def sys_mkdir(task: Task, pathname: int, mode: int) -> int:
    return sys_mkdirat(task, -100, pathname, mode)


def sys_mknodat(task: Task, dirfd: int, pathname: int, mode: int, dev: int) -> int:
    mode = u32(mode)
    kind = mode & S_IFMT or S_IFREG  # no type: a regular file
    if kind in (S_IFCHR, S_IFBLK):
        raise SyscallError(errno.EPERM)  # device nodes: not in a unikernel (no CAP_MKNOD)
    if kind not in (S_IFREG, S_IFIFO, S_IFSOCK):
        raise SyscallError(errno.EINVAL)
    r = resolve_at(task, dirfd, pathname, follow=False)
    if r.stat is not None:
        raise SyscallError(errno.EEXIST)
    r.fs.mknod(r.rel, kind | (mode & 0o7777 & ~ctx(task).umask))
    return 0


def sys_mknod(task: Task, pathname: int, mode: int, dev: int) -> int:
    return sys_mknodat(task, -100, pathname, mode, dev)


def _rmdir(task: Task, dirfd: int, pathname: int) -> int:
    last = _last_name(task, pathname)
    if last == ".":
        raise SyscallError(errno.EINVAL)
    if last == "..":
        raise SyscallError(errno.ENOTEMPTY)
    r = resolve_at(task, dirfd, pathname, follow=False)
    if r.require().mode & S_IFMT != S_IFDIR:
        raise SyscallError(errno.ENOTDIR)
    _changeable(r).fs.rmdir(r.rel)
    return 0


def sys_rmdir(task: Task, pathname: int) -> int:
    return _rmdir(task, -100, pathname)


def sys_unlinkat(task: Task, dirfd: int, pathname: int, flags: int) -> int:
    flags = s32(flags)
    if flags & ~AT_REMOVEDIR:
        raise SyscallError(errno.EINVAL)
    if flags & AT_REMOVEDIR:
        return _rmdir(task, dirfd, pathname)
    r = resolve_at(task, dirfd, pathname, follow=False)
    if r.require().mode & S_IFMT == S_IFDIR:
        raise SyscallError(errno.EISDIR)
    _changeable(r).fs.unlink(r.rel)
    return 0


def sys_unlink(task: Task, pathname: int) -> int:
    return sys_unlinkat(task, -100, pathname, 0)


def sys_renameat2(
    task: Task, olddirfd: int, oldpath: int, newdirfd: int, newpath: int, flags: int
) -> int:
    flags = u32(flags)
    if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == (
        RENAME_NOREPLACE | RENAME_EXCHANGE
    ):
        raise SyscallError(errno.EINVAL)
    for ptr in (oldpath, newpath):
        if _last_name(task, ptr) in (".", ".."):
            raise SyscallError(errno.EBUSY)
    src = resolve_at(task, olddirfd, oldpath, follow=False)
    dst = resolve_at(task, newdirfd, newpath, follow=False)
    src.require()
    if src.fs is not dst.fs:
        raise SyscallError(errno.EXDEV)
    _changeable(src)
    _changeable(dst)
    src.fs.rename(src.rel, dst.rel, flags)
    return 0


def sys_renameat(task: Task, olddirfd: int, oldpath: int, newdirfd: int, newpath: int) -> int:
    return sys_renameat2(task, olddirfd, oldpath, newdirfd, newpath, 0)


def sys_rename(task: Task, oldpath: int, newpath: int) -> int:
    return sys_renameat2(task, -100, oldpath, -100, newpath, 0)


def sys_linkat(
    task: Task, olddirfd: int, oldpath: int, newdirfd: int, newpath: int, flags: int
) -> int:
    flags = s32(flags)
    if flags & ~(AT_SYMLINK_FOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL)
    src = resolve_at(task, olddirfd, oldpath, follow=bool(flags & AT_SYMLINK_FOLLOW))
    if src.require().mode & S_IFMT == S_IFDIR:
        raise SyscallError(errno.EPERM)
    dst = resolve_at(task, newdirfd, newpath, follow=False)
    if dst.stat is not None:
        raise SyscallError(errno.EEXIST)
    if src.fs is not dst.fs:
        raise SyscallError(errno.EXDEV)
    src.fs.link(_changeable(src).rel, dst.rel)
    return 0


def sys_link(task: Task, oldpath: int, newpath: int) -> int:
    return sys_linkat(task, -100, oldpath, -100, newpath, 0)


def sys_symlinkat(task: Task, target: int, newdirfd: int, linkpath: int) -> int:
    text = path_arg(task, target)
    if not text:
        raise SyscallError(errno.ENOENT)
    r = resolve_at(task, newdirfd, linkpath, follow=False)
    if r.stat is not None:
        raise SyscallError(errno.EEXIST)
    r.fs.symlink(text, r.rel)
    return 0


def sys_symlink(task: Task, target: int, linkpath: int) -> int:
    return sys_symlinkat(task, target, -100, linkpath)


def _path_of_file(task: Task, file: OpenFile) -> Resolved:
    """Metadata changes through an fd go to the file's path (filesystems are path-based)."""
    if not file.path.startswith("/"):
        raise SyscallError(errno.EPERM)  # pipes and stdio have no changeable inode here
    return ctx(task).resolve(file.path, None, follow=False)


def _target(task: Task, dirfd: int, pathname: int, flags: int) -> Resolved:
    target = file_or_path(task, dirfd, pathname, flags, not flags & AT_SYMLINK_NOFOLLOW)
    r = _path_of_file(task, target) if isinstance(target, OpenFile) else target
    if r.magic is not None:
        r = _path_of_file(task, r.magic)
    r.require()
    return r


def sys_fchmodat(task: Task, dirfd: int, pathname: int, mode: int) -> int:
    r = _target(task, dirfd, pathname, 0)
    r.fs.chmod(r.rel, u32(mode) & 0o7777)
    return 0


def sys_chmod(task: Task, pathname: int, mode: int) -> int:
    return sys_fchmodat(task, -100, pathname, mode)


def sys_fchmod(task: Task, fd: int, mode: int) -> int:
    r = _path_of_file(task, task.process.fds.get(s32(fd)))
    r.fs.chmod(r.rel, u32(mode) & 0o7777)
    return 0


def _timespec(task: Task, addr: int) -> int | None:
    sec, nsec = s64(task.mem.read_u64(addr)), s64(task.mem.read_u64(addr + 8))
    if nsec == UTIME_NOW:
        return now_ns()
    if nsec == UTIME_OMIT:
        return None
    if not 0 <= nsec < 10**9:
        raise SyscallError(errno.EINVAL)
    return sec * 10**9 + nsec


def sys_utimensat(task: Task, dirfd: int, pathname: int, times: int, flags: int) -> int:
    flags = s32(flags)
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL)
    if times:
        atime, mtime = _timespec(task, times), _timespec(task, times + 16)
    else:
        atime = mtime = now_ns()
    if pathname == 0:  # futimens(fd, times)
        r = _path_of_file(task, task.process.fds.get(s32(dirfd)))
    else:
        r = _target(task, dirfd, pathname, flags)
    if atime is None and mtime is None:
        return 0
    r.fs.utimens(r.rel, atime, mtime)
    return 0


def sys_truncate(task: Task, pathname: int, length: int) -> int:
    size = s64(length)
    if size < 0:
        raise SyscallError(errno.EINVAL)
    r = _target(task, -100, pathname, 0)
    if r.require().mode & S_IFMT == S_IFDIR:
        raise SyscallError(errno.EISDIR)
    r.fs.truncate(r.rel, size)
    return 0


def _statfs(r: Resolved | None) -> bytes:
    return (r.fs.statfs() if r is not None else StatFs(PIPEFS_MAGIC, flags=0x20)).pack()


def sys_statfs(task: Task, pathname: int, buf: int) -> int:
    r = resolve_at(task, -100, pathname, follow=True)
    r.require()
    task.mem.write(buf, _statfs(r))
    return 0


def sys_fstatfs(task: Task, fd: int, buf: int) -> int:
    file = task.process.fds.get(s32(fd))
    try:
        r: Resolved | None = _path_of_file(task, file)
    except SyscallError:
        r = None  # pipes and stdio
    task.mem.write(buf, _statfs(r))
    return 0


def sys_umask(task: Task, mask: int) -> int:
    fs = ctx(task)
    old, fs.umask = fs.umask, u32(mask) & 0o777
    return old


HANDLERS = {
    "mkdirat": sys_mkdirat,
    "mkdir": sys_mkdir,
    "mknodat": sys_mknodat,
    "mknod": sys_mknod,
    "rmdir": sys_rmdir,
    "unlinkat": sys_unlinkat,
    "unlink": sys_unlink,
    "renameat2": sys_renameat2,
    "renameat": sys_renameat,
    "rename": sys_rename,
    "linkat": sys_linkat,
    "link": sys_link,
    "symlinkat": sys_symlinkat,
    "symlink": sys_symlink,
    "fchmodat": sys_fchmodat,
    "chmod": sys_chmod,
    "fchmod": sys_fchmod,
    "utimensat": sys_utimensat,
    "truncate": sys_truncate,
    "statfs": sys_statfs,
    "fstatfs": sys_fstatfs,
    "umask": sys_umask,
}
_MKNOD = ("FIFOs, sockets and regular files; device nodes EPERM (no CAP_MKNOD). A FIFO "
          "on tmpfs is a host pipe while open; on a volume, the host FIFO.")
NOTES = {
    "mknod": _MKNOD,
    "mknodat": _MKNOD,
    "renameat2": "RENAME_WHITEOUT gives EINVAL",
    "fchmod": "EPERM on pipes and stdio",
    "utimensat": "EPERM through fds of pipes and stdio",
}
