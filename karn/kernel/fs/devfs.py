"""/dev: the character devices programs expect, with no host device behind any of them,
and the terminals (tty, ptmx, pts/N), each a host pty (karn/kernel/fs/pty.py)."""

from __future__ import annotations

import errno
import os

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING
from karn.kernel.fs.constants import (
    DT_CHR,
    DT_DIR,
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
from karn.kernel.fs.pty import PTYS, open_terminal
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
TERMINALS: dict[str, tuple[int, int]] = {"tty": (5, 0), "ptmx": (5, 2)}
PTS = "pts"
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
        names = [*DEVICES, *LINKS, *TERMINALS, PTS]
        self._inos = {name: i for i, name in enumerate(names, start=2)}
        self._t = now_ns()

    def _stat(self, name: str) -> Stat:
        if name == PTS:
            return self._dir_stat(self._inos[name])
        if name in DEVICES or name in TERMINALS:
            st = Stat(
                mode=S_IFCHR | 0o666,
                ino=self._inos[name],
                dev=self.dev,
                rdev=os.makedev(*(DEVICES.get(name) or TERMINALS[name])),
            )
        else:
            st = Stat(
                mode=S_IFLNK | 0o777, ino=self._inos[name], dev=self.dev, size=len(LINKS[name])
            )
        st.atime_ns = st.mtime_ns = st.ctime_ns = self._t
        return st

    def _dir_stat(self, ino: int) -> Stat:
        return Stat(mode=S_IFDIR | 0o755, ino=ino, dev=self.dev, nlink=2, size=4096,
                    atime_ns=self._t, mtime_ns=self._t, ctime_ns=self._t)

    def lstat(self, rel: Rel) -> Stat:
        if not rel:
            return self._dir_stat(1)
        if len(rel) == 1 and rel[0] in self._inos:
            return self._stat(rel[0])
        if len(rel) == 2 and rel[0] == PTS:
            return PTYS.stat(_pty_number(rel[1]))
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
            entries = [DirEntry(n, self._inos[n], _dtype(n)) for n in self._inos]
            return DirListFile(path, kept, entries, st)
        if tuple(rel) == (PTS,):
            if flags & (OFlag.WRONLY | OFlag.RDWR):
                raise SyscallError(errno.EISDIR)
            ptys = [DirEntry(str(n), PTYS.stat(n).ino, DT_CHR) for n in PTYS.numbers()]
            return DirListFile(path, kept, ptys, st)
        if rel[0] in LINKS:
            raise SyscallError(errno.ELOOP)
        if flags & OFlag.DIRECTORY:
            raise SyscallError(errno.ENOTDIR)
        if rel[0] == PTS:
            return PTYS.open_slave(int(rel[1]), kept)
        if rel[0] == "tty":
            return open_terminal(kept)
        if rel[0] == "ptmx":
            return PTYS.open_master(kept)
        return DeviceFile(rel[0], path, kept, st)

    def statfs(self) -> StatFs:
        return StatFs(TMPFS_MAGIC, files=len(self._inos), flags=ST_VALID)


def _dtype(name: str) -> int:
    if name == PTS:
        return DT_DIR
    return DT_LNK if name in LINKS else DT_CHR


def _pty_number(name: str) -> int:
    if not name.isdigit() or (name != "0" and name.startswith("0")):
        raise SyscallError(errno.ENOENT)
    return int(name)
