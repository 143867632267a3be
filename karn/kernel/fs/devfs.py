"""/dev: the character devices programs expect, with no host device behind any of them."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from karn.abi.errno import SyscallError
from karn.kernel.fs.constants import (
    DT_CHR,
    DT_LNK,
    O_OPEN_ONLY,
    S_IFCHR,
    S_IFDIR,
    S_IFLNK,
    ST_VALID,
    TMPFS_MAGIC,
    OFlag,
)
from karn.kernel.fs.file import Buffer, DirEntry, DirListFile, OpenFile
from karn.kernel.fs.filesystem import Filesystem, Rel
from karn.kernel.fs.stat import Stat, StatFs, now_ns

if TYPE_CHECKING:
    from karn.kernel.process import Task

# name -> (major, minor) as on Linux
DEVICES: dict[str, tuple[int, int]] = {
    "null": (1, 3),
    "zero": (1, 5),
    "full": (1, 7),
    "random": (1, 8),
    "urandom": (1, 9),
}
LINKS: dict[str, str] = {
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
    "fd": "/proc/self/fd",
}
_RANDOM_CHUNK = 1 << 20  # a read of /dev/urandom may be short; it never allocates more
_ZEROS = bytes(1 << 16)


class DeviceFile(OpenFile):
    def __init__(self, name: str, path: str, flags: int, st: Stat) -> None:
        super().__init__(path, flags)
        self.name = name
        self._stat = st

    def readinto(self, task: Task, view: memoryview) -> int:
        return self.pread_into(view, 0)

    def pread_into(self, view: memoryview, offset: int) -> int:
        if self.name == "null":
            return 0
        if self.name in ("random", "urandom"):
            n = min(len(view), _RANDOM_CHUNK)
            view[:n] = os.urandom(n)
            return n
        n = len(view)  # zero, full: the whole buffer, in fixed chunks
        for start in range(0, n, len(_ZEROS)):
            end = min(n, start + len(_ZEROS))
            view[start:end] = _ZEROS[: end - start]
        return n

    def write(self, task: Task, data: Buffer) -> int:
        if self.name == "full":  # not through pwrite: writes to /dev/null are hot
            raise SyscallError(errno.ENOSPC)
        return len(data)

    def pwrite(self, data: Buffer, offset: int) -> int:
        if self.name == "full":
            raise SyscallError(errno.ENOSPC)
        return len(data)

    def lseek(self, offset: int, whence: int) -> int:
        return 0

    def available(self) -> int:
        return 0

    def stat(self) -> Stat:
        return self._stat

    def reopen(self, flags: int) -> OpenFile:
        return DeviceFile(self.name, self.path, flags, self._stat)


class DevFs(Filesystem):
    fstype = "devtmpfs"

    def __init__(self) -> None:
        super().__init__()
        self._inos = {name: i for i, name in enumerate([*DEVICES, *LINKS], start=2)}
        self._t = now_ns()

    def _stat(self, name: str) -> Stat:
        if name in DEVICES:
            st = Stat(
                mode=S_IFCHR | 0o666,
                ino=self._inos[name],
                dev=self.dev,
                rdev=os.makedev(*DEVICES[name]),
            )
        else:
            st = Stat(
                mode=S_IFLNK | 0o777, ino=self._inos[name], dev=self.dev, size=len(LINKS[name])
            )
        st.atime_ns = st.mtime_ns = st.ctime_ns = self._t
        return st

    def lstat(self, rel: Rel) -> Stat:
        if not rel:
            return Stat(
                mode=S_IFDIR | 0o755,
                ino=1,
                dev=self.dev,
                nlink=2,
                size=4096,
                atime_ns=self._t,
                mtime_ns=self._t,
                ctime_ns=self._t,
            )
        if len(rel) == 1 and rel[0] in self._inos:
            return self._stat(rel[0])
        raise SyscallError(errno.ENOTDIR if len(rel) > 1 and rel[0] in self._inos else errno.ENOENT)

    def readlink(self, rel: Rel) -> str:
        if len(rel) == 1 and rel[0] in LINKS:
            return LINKS[rel[0]]
        self.lstat(rel)
        raise SyscallError(errno.EINVAL)

    def open(self, rel: Rel, flags: int, mode: int, path: str) -> OpenFile:
        st = self.lstat(rel)
        kept = flags & ~O_OPEN_ONLY
        if flags & OFlag.CREAT and flags & OFlag.EXCL:
            raise SyscallError(errno.EEXIST)
        if not rel:
            if flags & (OFlag.WRONLY | OFlag.RDWR):
                raise SyscallError(errno.EISDIR)
            entries = [
                DirEntry(n, self._inos[n], DT_CHR if n in DEVICES else DT_LNK) for n in self._inos
            ]
            return DirListFile(path, kept, entries, st)
        if rel[0] in LINKS:
            raise SyscallError(errno.ELOOP)
        if flags & OFlag.DIRECTORY:
            raise SyscallError(errno.ENOTDIR)
        return DeviceFile(rel[0], path, kept, st)

    def statfs(self) -> StatFs:
        return StatFs(TMPFS_MAGIC, files=len(self._inos), flags=ST_VALID)
