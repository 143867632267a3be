"""Extended attributes: kept on tmpfs nodes, passed through to the host on volumes.

A store answers for one file. The handlers (sys_xattr.py) check names, sizes and flags as
Linux's VFS does before a store is asked; stores apply their filesystem's rules.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING, TypeVar
from karn.kernel.fs.constants import S_IFDIR, S_IFMT, S_IFREG
from karn.kernel.fs.file import host_error

if TYPE_CHECKING:
    from karn.kernel.fs.tmpfs import Node, TmpFs

T = TypeVar("T")
XATTR_CREATE, XATTR_REPLACE = 1, 2
XATTR_NAME_MAX = 255
XATTR_SIZE_MAX = 65536
XATTR_LIST_MAX = 65536
NAMESPACES = ("user.", "trusted.", "security.", "system.")
# tmpfs keeps user.* xattrs within a budget per inode, as Linux 6.6+ (its ispace)
TMPFS_USER_XATTR_BUDGET = 128 << 10


class XattrStore:
    """A file without extended attributes (and that cannot have any)."""

    def get(self, name: str) -> bytes:
        raise SyscallError(errno.ENODATA)

    def names(self) -> list[str]:
        return []

    def set(self, name: str, value: bytes, flags: int) -> None:
        raise SyscallError(errno.EOPNOTSUPP)

    def remove(self, name: str) -> None:
        raise SyscallError(errno.ENODATA)


class ReadOnlyStore(XattrStore):
    def set(self, name: str, value: bytes, flags: int) -> None:
        raise SyscallError(errno.EROFS)

    def remove(self, name: str) -> None:
        raise SyscallError(errno.EROFS)


class NodeStore(XattrStore):
    """A tmpfs node's attributes: user.* on regular files and directories only (EPERM
    elsewhere, as Linux), trusted.* and security.* on any; no system.* (ACLs)."""

    def __init__(self, fs: TmpFs, node: Node) -> None:
        self.fs, self.node = fs, node

    def _check(self, name: str) -> None:
        if name.startswith("system."):
            raise SyscallError(errno.EOPNOTSUPP)
        if name.startswith("user.") and self.node.mode & S_IFMT not in (S_IFREG, S_IFDIR):
            raise SyscallError(errno.EPERM)

    def get(self, name: str) -> bytes:
        self._check(name)
        value = (self.node.xattrs or {}).get(name)
        if value is None:
            raise SyscallError(errno.ENODATA)
        return value

    def names(self) -> list[str]:
        return list(self.node.xattrs or ())

    def set(self, name: str, value: bytes, flags: int) -> None:
        self._check(name)
        attrs = self.node.xattrs or {}
        old = attrs.get(name)
        if flags & XATTR_CREATE and old is not None:
            raise SyscallError(errno.EEXIST)
        if flags & XATTR_REPLACE and old is None:
            raise SyscallError(errno.ENODATA)
        cost = len(name) + len(value) - (0 if old is None else len(name) + len(old))
        if name.startswith("user.") and _user_bytes(attrs) + cost > TMPFS_USER_XATTR_BUDGET:
            raise SyscallError(errno.ENOSPC)
        self.fs.charge_metadata(cost)
        attrs[name] = value
        self.node.xattrs = attrs
        self.node.touch_meta()

    def remove(self, name: str) -> None:
        self._check(name)
        attrs = self.node.xattrs or {}
        old = attrs.pop(name, None)
        if old is None:
            raise SyscallError(errno.ENODATA)
        self.fs.charge_metadata(-(len(name) + len(old)))
        self.node.touch_meta()


def _user_bytes(attrs: dict[str, bytes]) -> int:
    return sum(len(n) + len(v) for n, v in attrs.items() if n.startswith("user."))


class HostStore(XattrStore):
    """A host file's attributes (a volume): the host filesystem's rules, EROFS for
    changes on a read-only volume. `open_path` opens an O_PATH fd on the file, which
    the calls reach through /proc/self/fd (the xattr calls take no O_PATH fds)."""

    def __init__(self, open_path: Callable[[], int], readonly: bool) -> None:
        self.open_path = open_path
        self.readonly = readonly

    def _call(self, op: Callable[[str], T]) -> T:
        fd = self.open_path()
        try:
            return op(f"/proc/self/fd/{fd}")
        except OSError as err:
            raise host_error(err) from None
        finally:
            os.close(fd)

    def get(self, name: str) -> bytes:
        return self._call(lambda path: os.getxattr(path, name))

    def names(self) -> list[str]:
        return self._call(os.listxattr)

    def set(self, name: str, value: bytes, flags: int) -> None:
        if self.readonly:
            raise SyscallError(errno.EROFS)
        self._call(lambda path: os.setxattr(path, name, value, flags))

    def remove(self, name: str) -> None:
        if self.readonly:
            raise SyscallError(errno.EROFS)
        self._call(lambda path: os.removexattr(path, name))
