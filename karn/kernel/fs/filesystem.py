"""The interface every mounted filesystem implements.

The VFS calls these with `rel`: the path inside the filesystem as a tuple of plain
components (no "", ".", ".." and, except possibly the last one, no symlinks: the VFS has
already resolved them in guest terms). A filesystem never follows a symlink itself.
"""

from __future__ import annotations

import errno
import itertools
import os

from karn.abi.errno import SyscallError
from karn.kernel.fs.constants import S_IFDIR, S_IFMT, W_OK, X_OK
from karn.kernel.fs.file import OpenFile
from karn.kernel.fs.stat import Stat, StatFs
from karn.kernel.fs.xattr import ReadOnlyStore, XattrStore

Rel = tuple[str, ...]

_next_minor = itertools.count(20)


def new_dev() -> int:
    """A device number for a synthetic filesystem (anonymous major 0, like tmpfs)."""
    return os.makedev(0, next(_next_minor))


class Filesystem:
    readonly = False
    fstype = "none"  # what /proc/mounts would call it
    # A host directory where every guest process of the run binds the AF_UNIX sockets of
    # this filesystem's socket files, by their (dev, ino): a filesystem the processes
    # share (net/unix.py). None: names are this process's own.
    sockets_dir: str | None = None
    # lstat(rel) of a path of several components succeeds only where every component
    # but the last is a directory (no symlink followed on the way): the VFS may then
    # look a whole path up at once (Vfs.whole) instead of step by step.
    whole_lookups = False
    # open(rel, flags) without O_CREAT or O_PATH fails (ELOOP) where a symlink is on the
    # way or at the end, and otherwise opens what the walk would: the VFS may then open a
    # whole path without looking it up first (Vfs.open_whole).
    opens_whole = False

    def __init__(self) -> None:
        self.dev = new_dev()

    def socket_host_path(self, key: tuple[int, int]) -> str | None:
        """Where the socket of this filesystem's socket file key = (dev, ino) is bound on
        the host, if the filesystem is shared by processes: a name made of numbers, never
        a guest path (and short enough for sun_path)."""
        if self.sockets_dir is None:
            return None
        return os.path.join(self.sockets_dir, f"{key[0]:x}-{key[1]:x}")

    # -- lookups -------------------------------------------------------------------
    def lstat(self, rel: Rel) -> Stat:
        raise NotImplementedError

    def plain_dirs(self, rel: Rel) -> bool:
        """Whether rel and each step above it here is a directory, no symlink, now, told
        by one lookup (Vfs.whole: the way to a mount point through a writable
        filesystem). False where a filesystem cannot tell so: the walk decides."""
        return False

    def readlink(self, rel: Rel) -> str:
        raise SyscallError(errno.EINVAL)

    def magic_link(self, rel: Rel) -> OpenFile | None:
        """For /proc/self/fd/N: the file a magic link stands for, else None."""
        return None

    def open(self, rel: Rel, flags: int, mode: int, path: str) -> OpenFile:
        raise NotImplementedError

    def access(self, rel: Rel, mode: int) -> None:
        st = self.lstat(rel)
        if mode & W_OK and self.readonly:
            raise SyscallError(errno.EROFS)
        # The guest runs as root: only execute needs a bit set (or a directory).
        if mode & X_OK and (st.mode & S_IFMT) != S_IFDIR and not st.mode & 0o111:
            raise SyscallError(errno.EACCES)

    def statfs(self) -> StatFs:
        raise NotImplementedError

    # -- changes (read-only filesystems inherit EROFS) ------------------------------
    def _refuse(self) -> SyscallError:
        return SyscallError(errno.EROFS if self.readonly else errno.EPERM)

    def mkdir(self, rel: Rel, mode: int) -> None:
        raise self._refuse()

    def rmdir(self, rel: Rel) -> None:
        raise self._refuse()

    def unlink(self, rel: Rel) -> None:
        raise self._refuse()

    def symlink(self, target: str, rel: Rel) -> None:
        raise self._refuse()

    def chown(self, rel: Rel, uid: int | None, gid: int | None) -> None:
        """Record an owner (None: unchanged); by default not stored, as on volumes."""
        if self.readonly:
            raise SyscallError(errno.EROFS)

    def xattrs(self, rel: Rel) -> XattrStore:
        """The extended attributes of the file at rel (none by default)."""
        self.lstat(rel)
        return ReadOnlyStore() if self.readonly else XattrStore()

    def mknod(self, rel: Rel, mode: int) -> None:
        """A FIFO, socket or empty regular file (mode has its type; never a device)."""
        raise self._refuse()

    def link(self, src: Rel, dst: Rel) -> None:
        raise self._refuse()

    def rename(self, src: Rel, dst: Rel, flags: int) -> None:
        raise self._refuse()

    def chmod(self, rel: Rel, mode: int) -> None:
        raise self._refuse()

    def utimens(self, rel: Rel, atime_ns: int | None, mtime_ns: int | None) -> None:
        """None leaves a time unchanged (UTIME_OMIT); callers resolve UTIME_NOW."""
        raise self._refuse()

    def truncate(self, rel: Rel, size: int) -> None:
        raise self._refuse()
