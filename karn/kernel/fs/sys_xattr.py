"""Handlers: extended attributes and ownership (no filesystem here stores either)."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from karn.abi.errno import SyscallError
from karn.abi.registers import s32
from karn.kernel.fs.constants import AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW
from karn.kernel.fs.sysutil import file_or_path, resolve_at
from karn.kernel.fs.vfs import Resolved

if TYPE_CHECKING:
    from karn.kernel.process import Task


def _exists(task: Task, path: int, follow: bool) -> None:
    resolve_at(task, -100, path, follow).require()


def _fd(task: Task, fd: int) -> None:
    task.process.fds.get(s32(fd))


def sys_getxattr(task: Task, path: int, name: int, value: int, size: int) -> int:
    _exists(task, path, True)
    raise SyscallError(errno.ENODATA)


def sys_lgetxattr(task: Task, path: int, name: int, value: int, size: int) -> int:
    _exists(task, path, False)
    raise SyscallError(errno.ENODATA)


def sys_fgetxattr(task: Task, fd: int, name: int, value: int, size: int) -> int:
    _fd(task, fd)
    raise SyscallError(errno.ENODATA)


def sys_listxattr(task: Task, path: int, buf: int, size: int) -> int:
    _exists(task, path, True)
    return 0


def sys_llistxattr(task: Task, path: int, buf: int, size: int) -> int:
    _exists(task, path, False)
    return 0


def sys_flistxattr(task: Task, fd: int, buf: int, size: int) -> int:
    _fd(task, fd)
    return 0


def sys_setxattr(task: Task, path: int, name: int, value: int, size: int, flags: int) -> int:
    _exists(task, path, True)
    raise SyscallError(errno.EOPNOTSUPP)


def sys_lsetxattr(task: Task, path: int, name: int, value: int, size: int, flags: int) -> int:
    _exists(task, path, False)
    raise SyscallError(errno.EOPNOTSUPP)


def sys_fsetxattr(task: Task, fd: int, name: int, value: int, size: int, flags: int) -> int:
    _fd(task, fd)
    raise SyscallError(errno.EOPNOTSUPP)


def sys_removexattr(task: Task, path: int, name: int) -> int:
    _exists(task, path, True)
    raise SyscallError(errno.ENODATA)


def sys_lremovexattr(task: Task, path: int, name: int) -> int:
    _exists(task, path, False)
    raise SyscallError(errno.ENODATA)


def sys_fremovexattr(task: Task, fd: int, name: int) -> int:
    _fd(task, fd)
    raise SyscallError(errno.ENODATA)


def sys_fchownat(task: Task, dirfd: int, path: int, owner: int, group: int, flags: int) -> int:
    flags = s32(flags)
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL)
    target = file_or_path(task, dirfd, path, flags, not flags & AT_SYMLINK_NOFOLLOW)
    if isinstance(target, Resolved):
        target.require()
        if target.fs.readonly:
            raise SyscallError(errno.EROFS)
    return 0


def sys_chown(task: Task, path: int, owner: int, group: int) -> int:
    return sys_fchownat(task, -100, path, owner, group, 0)


def sys_lchown(task: Task, path: int, owner: int, group: int) -> int:
    return sys_fchownat(task, -100, path, owner, group, AT_SYMLINK_NOFOLLOW)


def sys_fchown(task: Task, fd: int, owner: int, group: int) -> int:
    _fd(task, fd)
    return 0


HANDLERS = {
    "getxattr": sys_getxattr,
    "lgetxattr": sys_lgetxattr,
    "fgetxattr": sys_fgetxattr,
    "listxattr": sys_listxattr,
    "llistxattr": sys_llistxattr,
    "flistxattr": sys_flistxattr,
    "setxattr": sys_setxattr,
    "lsetxattr": sys_lsetxattr,
    "fsetxattr": sys_fsetxattr,
    "removexattr": sys_removexattr,
    "lremovexattr": sys_lremovexattr,
    "fremovexattr": sys_fremovexattr,
    "fchownat": sys_fchownat,
    "chown": sys_chown,
    "lchown": sys_lchown,
    "fchown": sys_fchown,
}
# getxattr, setxattr, removexattr and their l/f kin always fail: syscalls.ERRORS says how.
NOTES = {
    name: "no filesystem stores extended attributes: the list is always empty"
    for name in ("listxattr", "llistxattr", "flistxattr")
}
NOTES.update(
    {
        name: "ownership is not stored: accepted (EROFS on read-only mounts, by path), "
        "files keep showing their owner"
        for name in ("fchownat", "chown", "lchown")
    }
)
NOTES["fchown"] = "ownership is not stored: accepted, files keep showing their owner"
