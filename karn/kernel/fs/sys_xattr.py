"""Handlers: extended attributes (fs/xattr.py stores) and ownership."""

from __future__ import annotations

import errno

from karn.abi.errno import SyscallError
from karn.abi.registers import s32, u32
from karn.hints import TYPE_CHECKING
from karn.kernel.fs.constants import AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW
from karn.kernel.fs.file import OpenFile
from karn.kernel.fs.sysutil import ctx, file_or_path, resolve_at
from karn.kernel.fs.tmpfs import TmpFile
from karn.kernel.fs.vfs import Resolved
from karn.kernel.fs.xattr import (
    NAMESPACES,
    XATTR_CREATE,
    XATTR_LIST_MAX,
    XATTR_NAME_MAX,
    XATTR_REPLACE,
    XATTR_SIZE_MAX,
    NodeStore,
    XattrStore,
)

if TYPE_CHECKING:
    from karn.kernel.process import Task

UNCHANGED = 0xFFFFFFFF  # chown's -1


def _store_of(task: Task, target: OpenFile | Resolved) -> XattrStore:
    if isinstance(target, TmpFile):
        return NodeStore(target.fs, target.node)  # memfds too, which have no path
    if isinstance(target, OpenFile):
        if not target.path.startswith("/"):
            return XattrStore()  # pipes, sockets: no attributes
        target = ctx(task).resolve(target.path, None, follow=False)
    if target.magic is not None:
        return _store_of(task, target.magic)
    target.require()
    return target.fs.xattrs(target.rel)


def _by_path(task: Task, path: int, follow: bool) -> XattrStore:
    return _store_of(task, resolve_at(task, -100, path, follow))


def _by_fd(task: Task, fd: int) -> XattrStore:
    return _store_of(task, task.process.fds.get(s32(fd)))


def _name(task: Task, ptr: int) -> str:
    """An attribute name, checked as Linux's VFS does: ERANGE if empty or too long,
    EOPNOTSUPP outside the known namespaces."""
    try:
        raw = task.mem.read_cstring(ptr, XATTR_NAME_MAX + 1)
    except SyscallError as err:
        raise SyscallError(errno.ERANGE if err.errno == errno.ENAMETOOLONG else err.errno
                           ) from None
    if not raw:
        raise SyscallError(errno.ERANGE)
    name = raw.decode(errors="surrogateescape")
    if not name.startswith(NAMESPACES):
        raise SyscallError(errno.EOPNOTSUPP)
    return name


def _get(task: Task, store: XattrStore, name: int, value: int, size: int) -> int:
    data = store.get(_name(task, name))
    if size:
        if len(data) > size:
            raise SyscallError(errno.ERANGE)
        task.mem.write(value, data)
    return len(data)


def _list(task: Task, store: XattrStore, buf: int, size: int) -> int:
    data = b"".join(n.encode(errors="surrogateescape") + b"\0" for n in store.names())
    if size:
        if len(data) > size:
            raise SyscallError(errno.ERANGE)
        task.mem.write(buf, data)
    return len(data)


def _set(task: Task, name: int, value: int, size: int, flags: int
         ) -> tuple[str, bytes, int]:
    """setxattr's arguments, checked: flags, then the name, then the size."""
    flags = s32(flags)
    if flags & ~(XATTR_CREATE | XATTR_REPLACE):
        raise SyscallError(errno.EINVAL)
    attr = _name(task, name)
    if size > XATTR_SIZE_MAX:
        raise SyscallError(errno.E2BIG)
    data = task.mem.read(value, size) if size else b""
    return attr, data, flags


def sys_getxattr(task: Task, path: int, name: int, value: int, size: int) -> int:
    return _get(task, _by_path(task, path, True), name, value, size)


def sys_lgetxattr(task: Task, path: int, name: int, value: int, size: int) -> int:
    return _get(task, _by_path(task, path, False), name, value, size)


def sys_fgetxattr(task: Task, fd: int, name: int, value: int, size: int) -> int:
    return _get(task, _by_fd(task, fd), name, value, size)


def sys_listxattr(task: Task, path: int, buf: int, size: int) -> int:
    return _list(task, _by_path(task, path, True), buf, min(size, XATTR_LIST_MAX))


def sys_llistxattr(task: Task, path: int, buf: int, size: int) -> int:
    return _list(task, _by_path(task, path, False), buf, min(size, XATTR_LIST_MAX))


def sys_flistxattr(task: Task, fd: int, buf: int, size: int) -> int:
    return _list(task, _by_fd(task, fd), buf, min(size, XATTR_LIST_MAX))


def sys_setxattr(task: Task, path: int, name: int, value: int, size: int, flags: int) -> int:
    store = _by_path(task, path, True)
    store.set(*_set(task, name, value, size, flags))
    return 0


def sys_lsetxattr(task: Task, path: int, name: int, value: int, size: int, flags: int) -> int:
    store = _by_path(task, path, False)
    store.set(*_set(task, name, value, size, flags))
    return 0


def sys_fsetxattr(task: Task, fd: int, name: int, value: int, size: int, flags: int) -> int:
    store = _by_fd(task, fd)
    store.set(*_set(task, name, value, size, flags))
    return 0


def sys_removexattr(task: Task, path: int, name: int) -> int:
    _by_path(task, path, True).remove(_name(task, name))
    return 0


def sys_lremovexattr(task: Task, path: int, name: int) -> int:
    _by_path(task, path, False).remove(_name(task, name))
    return 0


def sys_fremovexattr(task: Task, fd: int, name: int) -> int:
    _by_fd(task, fd).remove(_name(task, name))
    return 0


def _chown(task: Task, target: OpenFile | Resolved, owner: int, group: int) -> None:
    uid = None if u32(owner) == UNCHANGED else u32(owner)
    gid = None if u32(group) == UNCHANGED else u32(group)
    if isinstance(target, OpenFile) and not isinstance(target, TmpFile):
        if not target.path.startswith("/"):
            return  # pipes, sockets: nothing to record
        target = ctx(task).resolve(target.path, None, follow=False)
    if isinstance(target, Resolved) and target.magic is not None:
        return _chown(task, target.magic, owner, group)
    st = target.stat() if isinstance(target, OpenFile) else target.require()
    ident = task.process.identity
    # Linux's rules: root changes anything; the owner may only change the group, to its
    # own group.
    if ident.euid != 0 and (ident.euid != st.uid or (uid is not None and uid != st.uid)
                            or (gid is not None and gid != ident.egid)):
        raise SyscallError(errno.EPERM)
    if isinstance(target, TmpFile):
        target.fs.chown_node(target.node, uid, gid)
    else:
        target.fs.chown(target.rel, uid, gid)


def sys_fchownat(task: Task, dirfd: int, path: int, owner: int, group: int, flags: int) -> int:
    flags = s32(flags)
    if flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH):
        raise SyscallError(errno.EINVAL)
    target = file_or_path(task, dirfd, path, flags, not flags & AT_SYMLINK_NOFOLLOW)
    _chown(task, target, owner, group)
    return 0


def sys_chown(task: Task, path: int, owner: int, group: int) -> int:
    return sys_fchownat(task, -100, path, owner, group, 0)


def sys_lchown(task: Task, path: int, owner: int, group: int) -> int:
    return sys_fchownat(task, -100, path, owner, group, AT_SYMLINK_NOFOLLOW)


def sys_fchown(task: Task, fd: int, owner: int, group: int) -> int:
    _chown(task, task.process.fds.get(s32(fd)), owner, group)
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
_XATTR_NOTE = ("tmpfs keeps them (user.* on files and directories, trusted.*, security.*; "
               "no system.* ACLs); volumes pass them to the host file; other filesystems "
               "have none (EROFS to change on read-only ones)")
NOTES = {name: _XATTR_NOTE for name in HANDLERS if "xattr" in name}
NOTES.update(
    {
        name: "recorded on tmpfs (and shown by stat); accepted and not stored on volumes "
        "(files keep the host's owner); EROFS on read-only filesystems"
        for name in ("fchownat", "chown", "lchown", "fchown")
    }
)
