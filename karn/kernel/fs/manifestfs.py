"""A read-only root made of individual host files that karn collected for a program.

Directories are implied by the file paths, so `ls /` in the guest lists them.
"""

from __future__ import annotations

import errno
import itertools
import os

from karn.abi.errno import SyscallError
from karn.kernel.fs.constants import (
    DT_DIR,
    DT_LNK,
    DT_REG,
    EXT4_SUPER_MAGIC,
    O_ACCMODE,
    O_OPEN_ONLY,
    S_IFDIR,
    S_IFLNK,
    S_IFREG,
    ST_RDONLY,
    ST_VALID,
    OFlag,
)
from karn.kernel.fs.file import DirEntry, DirListFile, HostFile, OpenFile, host_error
from karn.kernel.fs.filesystem import Filesystem, Rel
from karn.kernel.fs.stat import Stat, StatFs, now_ns


def split_guest(path: str) -> Rel:
    return tuple(c for c in path.split("/") if c and c != ".")


class _ManifestFile(HostFile):
    """A host file shown with the manifest's identity (inode, device, owner)."""

    def __init__(self, fd: int, path: str, flags: int, fs: ManifestFs, rel: Rel) -> None:
        super().__init__(fd, path, flags)
        self._fs, self._rel = fs, rel

    def stat(self) -> Stat:
        return self._fs.lstat(self._rel)


class ManifestFs(Filesystem):
    fstype = "rootfs"
    whole_lookups = True  # every prefix of an entry is one of its directories
    readonly = True

    def __init__(self, files: dict[str, str], symlinks: dict[str, str] | None = None) -> None:
        super().__init__()
        ino = itertools.count(2)
        self._files: dict[Rel, tuple[str, int]] = {}
        self._links: dict[Rel, tuple[str, int]] = {}
        self._dirs: dict[Rel, tuple[dict[str, int], int]] = {(): ({}, 1)}
        for guest, host in files.items():
            self._files[self._add(split_guest(guest), ino)] = (host, 0)
        for guest, target in (symlinks or {}).items():
            self._links[self._add(split_guest(guest), ino)] = (target, 0)
        # Give leaves their inode numbers and d_types now that the tree is complete.
        for table, dt in ((self._files, DT_REG), (self._links, DT_LNK)):
            for rel, (value, _) in list(table.items()):
                number = next(ino)
                table[rel] = (value, number)
                self._dirs[rel[:-1]][0][rel[-1]] = dt
        self._inos = {rel: number for rel, (_, number) in self._dirs.items()}
        self._built = now_ns()  # implied directories and links date from the build

    def _add(self, rel: Rel, ino: itertools.count) -> Rel:
        if not rel:
            raise ValueError("manifest entry for '/' must be a directory")
        for i in range(len(rel)):
            parent = rel[:i]
            if parent in self._files or parent in self._links:
                raise ValueError(f"manifest: /{'/'.join(parent)} is both a file and a directory")
            if parent not in self._dirs:
                self._dirs[parent] = ({}, next(ino))
                self._dirs[parent[:-1]][0][parent[-1]] = DT_DIR
        if rel in self._dirs or rel in self._files or rel in self._links:
            raise ValueError(f"manifest: /{'/'.join(rel)} listed twice")
        return rel

    def _missing(self, rel: Rel) -> SyscallError:
        # ENOTDIR if some proper prefix is a file, like a real lookup.
        for i in range(1, len(rel)):
            if rel[:i] in self._files or rel[:i] in self._links:
                return SyscallError(errno.ENOTDIR)
        return SyscallError(errno.ENOENT)

    def lstat(self, rel: Rel) -> Stat:
        if rel in self._dirs:
            children, number = self._dirs[rel]
            nlink = 2 + sum(1 for dt in children.values() if dt == DT_DIR)
            t = self._built
            return Stat(
                mode=S_IFDIR | 0o755,
                ino=number,
                dev=self.dev,
                nlink=nlink,
                size=4096,
                atime_ns=t,
                mtime_ns=t,
                ctime_ns=t,
            )
        if rel in self._links:
            target, number = self._links[rel]
            t = self._built
            return Stat(
                mode=S_IFLNK | 0o777,
                ino=number,
                dev=self.dev,
                size=len(target),
                atime_ns=t,
                mtime_ns=t,
                ctime_ns=t,
            )
        if rel in self._files:
            host, number = self._files[rel]
            try:
                st = Stat.from_host(os.stat(host))
            except OSError as err:
                raise host_error(err) from None
            st.mode = S_IFREG | (st.mode & 0o7777)
            st.ino, st.dev, st.nlink, st.uid, st.gid = number, self.dev, 1, 0, 0
            return st
        raise self._missing(rel)

    def readlink(self, rel: Rel) -> str:
        if rel in self._links:
            return self._links[rel][0]
        self.lstat(rel)
        raise SyscallError(errno.EINVAL)

    def open(self, rel: Rel, flags: int, mode: int, path: str) -> OpenFile:
        exists = rel in self._dirs or rel in self._files or rel in self._links
        if not exists:
            raise SyscallError(errno.EROFS) if flags & OFlag.CREAT else self._missing(rel)
        if (flags & O_ACCMODE) != OFlag.RDONLY or flags & OFlag.TRUNC:
            raise SyscallError(errno.EISDIR if rel in self._dirs else errno.EROFS)
        kept = flags & ~O_OPEN_ONLY
        if rel in self._dirs:
            entries = [
                DirEntry(n, self._ino_of(rel + (n,)), dt) for n, dt in self._dirs[rel][0].items()
            ]
            return DirListFile(path, kept, entries, self.lstat(rel))
        if rel in self._links:
            raise SyscallError(errno.ELOOP)
        if flags & OFlag.DIRECTORY:
            raise SyscallError(errno.ENOTDIR)
        try:
            fd = os.open(self._files[rel][0], os.O_RDONLY | os.O_CLOEXEC)
        except OSError as err:
            raise host_error(err) from None
        return _ManifestFile(fd, path, kept, self, rel)

    def _ino_of(self, rel: Rel) -> int:
        for table in (self._files, self._links):
            if rel in table:
                return table[rel][1]
        return self._inos[rel]

    def statfs(self) -> StatFs:
        n = len(self._files) + len(self._links) + len(self._dirs)
        return StatFs(EXT4_SUPER_MAGIC, files=n, flags=ST_VALID | ST_RDONLY)
