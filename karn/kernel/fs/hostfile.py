"""One host file mounted at a guest path: a single-file volume (`-v ./app.conf:/etc/app.conf`)
or a generated /etc file over an image root that has none.

The file is held by an O_PATH fd taken when the mount is made and reopened through
/proc/self/fd, so a later rename or symlink swap of the host path changes nothing.
"""

from __future__ import annotations

import errno
import os
import stat

from karn.abi.errno import SyscallError
from karn.kernel.fs.constants import (
    O_ACCMODE,
    O_OPEN_ONLY,
    OFlag,
)
from karn.kernel.fs.file import HostFile, OpenFile, host_error
from karn.kernel.fs.filesystem import Filesystem, Rel
from karn.kernel.fs.hostfs import host_statfs
from karn.kernel.fs.stat import Stat, StatFs

# What a reopen passes on (the file exists: no O_CREAT/O_EXCL; never a directory).
_PASS_FLAGS = O_ACCMODE | OFlag.TRUNC | OFlag.APPEND | OFlag.NONBLOCK | OFlag.DSYNC \
    | OFlag.SYNC | OFlag.NOATIME


class HostFileFs(Filesystem):
    fstype = "hostfs"

    def __init__(self, host_path: str, readonly: bool = False) -> None:
        super().__init__()
        self.host_path = host_path
        self.readonly = readonly
        self.fd = os.open(host_path, os.O_PATH | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(self.fd).st_mode):
            os.close(self.fd)
            raise ValueError(f"{host_path} is not a regular file")

    def _reopen(self, flags: int) -> int:
        try:
            return os.open(f"/proc/self/fd/{self.fd}", flags | os.O_CLOEXEC)
        except OSError as err:
            raise host_error(err) from None

    @staticmethod
    def _only_root(rel: Rel) -> None:
        if rel:
            raise SyscallError(errno.ENOTDIR)  # a path below a file

    def lstat(self, rel: Rel) -> Stat:
        self._only_root(rel)
        return Stat.from_host(os.fstat(self.fd))

    def open(self, rel: Rel, flags: int, mode: int, path: str) -> OpenFile:
        self._only_root(rel)
        if flags & OFlag.DIRECTORY:
            raise SyscallError(errno.ENOTDIR)
        if self.readonly and ((flags & O_ACCMODE) != OFlag.RDONLY or flags & OFlag.TRUNC):
            raise SyscallError(errno.EROFS)
        return HostFile(self._reopen(flags & _PASS_FLAGS), path, flags & ~O_OPEN_ONLY)

    def statfs(self) -> StatFs:
        return host_statfs(self.fd, self.readonly)

    def truncate(self, rel: Rel, size: int) -> None:
        self._only_root(rel)
        if self.readonly:
            raise SyscallError(errno.EROFS)
        fd = self._reopen(os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
        except OSError as err:
            raise host_error(err) from None
        finally:
            os.close(fd)
