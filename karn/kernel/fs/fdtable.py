"""The fd table: small integers -> shared open file descriptions, plus FD_CLOEXEC."""

from __future__ import annotations

import errno
import fcntl
import os
import threading

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING
from karn.kernel import tty
from karn.kernel.fs.file import HostFile, OpenFile

if TYPE_CHECKING:
    from karn.kernel.process import Task

DEFAULT_LIMIT = 1024  # RLIMIT_NOFILE soft limit, as on most distributions


class StdioFile(HostFile):
    """The monitor's own stdin/stdout/stderr, dup'ed: guest writes go straight out."""

    def before_read(self, task: Task) -> None:
        if tty.is_terminal(self.fd):
            tty.check_background_read(task)

    def before_write(self, task: Task) -> None:
        if tty.is_terminal(self.fd):
            tty.check_background_write(task, self.fd)

    def link_name(self) -> str:
        if self.is_pipe:
            return f"pipe:[{self._ino}]"
        if not os.isatty(self.fd):
            return f"anon_inode:[stdio{self.path[-1:]}]"
        from karn.kernel.fs.pty import pty_number  # a console that is no pty: /dev/pts/0

        return f"/dev/pts/{pty_number(os.fstat(self.fd).st_rdev) or 0}"


class FdTable:
    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._files: dict[int, OpenFile] = {}
        self._cloexec: set[int] = set()
        self._lock = threading.Lock()  # vCPU threads share the table

    @classmethod
    def with_stdio(
        cls, limit: int = DEFAULT_LIMIT, host_fds: tuple[int, ...] = (0, 1, 2)
    ) -> FdTable:
        """Guest fds 0, 1, 2 on duplicates of the monitor's host fds (closing the guest's
        copy leaves the monitor's own stdio alone). A closed host fd is left closed."""
        table = cls(limit)
        for guest_fd, host_fd in enumerate(host_fds):
            try:
                fd = os.dup(host_fd)
            except OSError:
                continue
            flags = fcntl.fcntl(fd, fcntl.F_GETFL) & (os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK)
            table.install_at(guest_fd, StdioFile(fd, f"/dev/fd/{guest_fd}", flags))
        return table

    # -- lookups -----------------------------------------------------------------------
    def get(self, fd: int) -> OpenFile:
        try:
            return self._files[fd]
        except KeyError:
            raise SyscallError(errno.EBADF) from None

    def fds(self) -> list[int]:
        return sorted(self._files)

    def items(self) -> list[tuple[int, OpenFile]]:
        return sorted(self._files.items())

    def get_cloexec(self, fd: int) -> bool:
        self.get(fd)
        return fd in self._cloexec

    def set_cloexec(self, fd: int, on: bool) -> None:
        self.get(fd)
        if on:
            self._cloexec.add(fd)
        else:
            self._cloexec.discard(fd)

    # -- changes -----------------------------------------------------------------------
    def install(self, file: OpenFile, cloexec: bool = False, lowest: int = 0) -> int:
        """Put file at the lowest free fd >= lowest; EMFILE when none is below the limit."""
        with self._lock:
            fd = lowest
            while fd in self._files:
                fd += 1
            if fd >= self.limit:
                raise SyscallError(errno.EMFILE)
            self._set(fd, file, cloexec)
            return fd

    def install_at(self, fd: int, file: OpenFile, cloexec: bool = False) -> None:
        """dup2-style: put file at fd, closing what was there."""
        if not 0 <= fd < self.limit:
            raise SyscallError(errno.EBADF)
        with self._lock:
            old = self._files.get(fd)
            self._set(fd, file, cloexec)
        if old is not None:
            self.unref(old)

    def _set(self, fd: int, file: OpenFile, cloexec: bool) -> None:
        file.refs += 1
        self._files[fd] = file
        if cloexec:
            self._cloexec.add(fd)
        else:
            self._cloexec.discard(fd)

    def close(self, fd: int) -> None:
        with self._lock:
            file = self._files.pop(fd, None)
            self._cloexec.discard(fd)
        if file is None:
            raise SyscallError(errno.EBADF)
        self.unref(file)

    def close_range(self, first: int, last: int, cloexec_only: bool = False) -> None:
        with self._lock:
            targets = [fd for fd in self._files if first <= fd <= last]
            if cloexec_only:
                self._cloexec.update(targets)
                return
            files = [self._files.pop(fd) for fd in targets]
            self._cloexec.difference_update(targets)
        for file in files:
            self.unref(file)

    def close_all(self) -> None:
        self.close_range(0, 1 << 31)

    @staticmethod
    def unref(file: OpenFile) -> None:
        """Drop one reference to an open file description; the last one closes it."""
        file.refs -= 1
        if file.refs <= 0:
            file.close()
