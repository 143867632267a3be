"""Open file descriptions: what an fd points to (shared across dup, with one offset).

Handlers talk to every kind of file through OpenFile; subclasses are host-backed files
(host directories, volumes, stdio, pipes), tmpfs files, devices and synthetic content.

The stream operations (readinto, readv_into, write, writev) take the calling task first:
they may block, and a wait belongs to a task (its signals, its waker), as may a signal
the operation raises (SIGPIPE). Positional operations (pread_into, preadv_into, pwrite,
pwritev) exist only on seekable files, which never block: they take no task, so the
kernel (the loader, shared mappings) uses them too. Metadata operations take no task.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat as pystat

from karn import log
from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING
from karn.kernel.fs.constants import (
    DT_DIR,
    DT_LNK,
    DT_REG,
    DT_UNKNOWN,
    O_ACCMODE,
    O_OPEN_ONLY,
    S_IFDIR,
    S_IFMT,
    S_IFREG,
    SEEK_CUR,
    SEEK_END,
    SEEK_SET,
    OFlag,
)
from karn.kernel.fs.stat import Stat

if TYPE_CHECKING:
    from karn.kernel.process import Task

Buffer = bytes | bytearray | memoryview
FIONREAD = 0x541B  # (not from the termios module: ~0.3 ms of every start-up to import)


class DirEntry:
    """One entry of a directory listing (getdents)."""

    __slots__ = ("name", "ino", "dtype")

    def __init__(self, name: str, ino: int, dtype: int) -> None:
        self.name = name
        self.ino = ino
        self.dtype = dtype


def host_error(err: OSError, fallback: int = errno.EIO) -> SyscallError:
    """A failed host call as the guest sees it: the host's errno (fallback if it has none)."""
    return SyscallError(err.errno or fallback)


def write_error(task: Task, err: OSError) -> SyscallError:
    """A failed host write as the guest sees it. EPIPE (a pipe, FIFO or terminal nobody
    reads any more) also sends the writer SIGPIPE, as Linux does: the monitor ignores its
    own SIGPIPE, so the host only says EPIPE."""
    if err.errno == errno.EPIPE:
        from karn.abi.signals import SI_USER, SIGPIPE
        from karn.kernel.signals import SigInfo

        proc = task.process
        proc.signal_thread(task, SigInfo.from_sender(SIGPIPE, SI_USER, proc.pid))
    return host_error(err)


def read_prefix(file: OpenFile, size: int) -> bytearray:
    """The first `size` bytes of a file (fewer if it is shorter), for the loader and
    execve, in the buffer they were read into: a program is never copied on its way to
    guest memory. (A bytearray: a 33 MiB cc1 read into one takes ~6 ms here, where the
    same read into a bytes object, or a bytes copy, takes ~20 ms.)"""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    try:
        while got < size:
            n = file.pread_into(view[got:], got)  # a host file's: os.preadv into buf
            if n <= 0:
                break
            got += n
    finally:
        view.release()
    if got < size:
        del buf[got:]
    return buf


WHOLE_FILE_LIMIT = 1 << 30  # a file read whole (a program that is no host file): at most


def read_whole(file: OpenFile) -> bytearray:
    """A whole file, as read_prefix reads it: EISDIR for a directory, EFBIG past
    WHOLE_FILE_LIMIT."""
    st = file.stat()
    if st.mode & S_IFMT == S_IFDIR:
        raise SyscallError(errno.EISDIR)
    if st.size > WHOLE_FILE_LIMIT:
        raise SyscallError(errno.EFBIG)
    return read_prefix(file, st.size)


class OpenFile:
    """Base class: every operation fails as Linux fails it for a file that lacks it."""

    is_dir = False
    is_regular = False  # reads return the full count when the data is there
    waits_itself = False  # its stream operations block on their own (sockets: timeouts)
    is_pipe = False  # a pipe or FIFO (F_GETPIPE_SZ, fadvise's ESPIPE)
    io_signal = 0  # F_SETSIG's (sent by no I/O event: O_ASYNC is not supported)

    def __init__(self, path: str, flags: int) -> None:
        self.path = path  # guest path, for /proc/self/fd, fchdir and getcwd
        self.flags = flags  # O_ACCMODE | status flags (O_APPEND, O_NONBLOCK, ...)
        self.refs = 0  # fd-table references; the description closes when it drops to 0
        self.dir_entries: list[DirEntry] | None = None  # getdents snapshot
        self.dir_pos = 0

    @property
    def readable(self) -> bool:
        return not self.flags & OFlag.PATH and (self.flags & O_ACCMODE) != OFlag.WRONLY

    @property
    def writable(self) -> bool:
        return not self.flags & OFlag.PATH and (self.flags & O_ACCMODE) in (1, 2)  # WRONLY, RDWR

    # -- stream operations: at the file offset, on behalf of a task --------------------
    def before_read(self, task: Task) -> None:
        """Checks before a read that may wait (the terminal's job control: tty.py)."""

    def before_write(self, task: Task) -> None:
        """Checks before a write that may wait (the terminal's job control: tty.py)."""

    def readinto(self, task: Task, view: memoryview) -> int:
        raise SyscallError(errno.EINVAL)

    def write(self, task: Task, data: Buffer) -> int:
        raise SyscallError(errno.EINVAL)

    def readv_into(self, task: Task, views: list[memoryview]) -> int:
        """readv: fill views in order, stopping at the first short read; a stream (pipe,
        tty) is read once so a second read cannot block after data came."""
        total = 0
        for view in views:
            n = self.readinto(task, view)
            total += n
            if n < len(view) or (n and not self.is_regular):
                break
        return total

    def writev(self, task: Task, bufs: list[memoryview]) -> int:
        total = 0
        for buf in bufs:
            n = self.write(task, buf)
            total += n
            if n < len(buf):
                break
        return total

    # -- positional operations: seekable files only ------------------------------------
    def pread_into(self, view: memoryview, offset: int) -> int:
        raise SyscallError(errno.ESPIPE)

    def pwrite(self, data: Buffer, offset: int) -> int:
        raise SyscallError(errno.ESPIPE)

    def preadv_into(self, views: list[memoryview], offset: int) -> int:
        total = 0
        for view in views:
            n = self.pread_into(view, offset + total)
            total += n
            if n < len(view) or (n and not self.is_regular):  # as readv_into
                break
        return total

    def pwritev(self, bufs: list[memoryview], offset: int) -> int:
        total = 0
        for buf in bufs:
            n = self.pwrite(buf, offset + total)
            total += n
            if n < len(buf):
                break
        return total

    # -- metadata and the rest ----------------------------------------------------------

    def lseek(self, offset: int, whence: int) -> int:
        if self.is_dir:
            # Directory offsets are getdents cookies (telldir/seekdir).
            if whence == SEEK_SET and offset >= 0:
                self.dir_pos = offset
                if offset == 0:
                    self.dir_entries = None  # rewinddir sees new entries
                return offset
            if whence == SEEK_CUR and offset == 0:
                return self.dir_pos
            raise SyscallError(errno.EINVAL)
        raise SyscallError(errno.ESPIPE)

    def stat(self) -> Stat:
        raise NotImplementedError

    def list_dir(self) -> list[DirEntry]:
        raise SyscallError(errno.ENOTDIR)

    def truncate(self, size: int) -> None:
        raise SyscallError(errno.EINVAL)

    def fsync(self) -> None:
        return None

    def available(self) -> int:
        """Bytes readable without blocking (FIONREAD)."""
        raise SyscallError(errno.ENOTTY)

    def set_status_flags(self, flags: int) -> None:
        self.flags = (self.flags & ~int(OFlag.APPEND | OFlag.NONBLOCK)) | flags

    def host_fd(self) -> int | None:
        """The host fd behind this file, if any (tty ioctls, polling)."""
        return None

    def ready_soon(self, events: int) -> bool:
        """Before a wait for `events` blocks: wait a little without sleeping in the host,
        where the file has a way to (a channel port spins on its ring); True if they may
        have come. Most files have none and answer False at once."""
        return False

    def reopen(self, flags: int) -> OpenFile:
        """A new description of the same file (opening /proc/self/fd/N)."""
        raise SyscallError(errno.ENXIO)

    def link_name(self) -> str:
        """What readlink(/proc/self/fd/N) shows."""
        return self.path

    def device_mapping(self, offset: int, length: int, prot: int, shared: bool
                       ) -> tuple[int, int, bool] | None:
        """For a device whose mappings are host memory of its own (a channel's port):
        (host fd, offset in it, writable), or an error; None for a file mapped as files
        are."""
        return None

    def map_shared_writable(self) -> None:
        """A writable MAP_SHARED mapping of the file is about to be made (sealed memfds
        refuse it)."""
        return None

    def close(self) -> None:
        return None


class HostFile(OpenFile):
    """A host fd: files and directories of host-backed mounts, stdio, pipes."""

    def __init__(self, fd: int, path: str, flags: int) -> None:
        super().__init__(path, flags)
        self.fd = fd
        st = os.fstat(fd)
        self.is_dir = pystat.S_ISDIR(st.st_mode)
        self.is_regular = pystat.S_ISREG(st.st_mode)
        self._ino = st.st_ino
        self._dev = st.st_dev
        self.is_pipe = pystat.S_ISFIFO(st.st_mode)
        self._log_shared: bool | None = None  # shares_log(), once asked

    def shares_log(self) -> bool:
        """Whether this is the file karn's own log lines go to (log.py holds them while a
        line is open): asked at the first write, not at every open (an fstat of stderr,
        for a static web server's every request)."""
        shared = self._log_shared
        if shared is None:
            shared = self._log_shared = (self._dev, self._ino) == log.stderr_identity()
        return shared

    def readinto(self, task: Task, view: memoryview) -> int:
        if self.is_dir:
            raise SyscallError(errno.EISDIR)
        try:
            return os.readv(self.fd, [view])
        except OSError as err:
            raise host_error(err) from None

    def write(self, task: Task, data: Buffer) -> int:
        try:
            n = os.write(self.fd, data)
        except OSError as err:
            raise write_error(task, err) from None
        if n and self.shares_log():
            log.guest_wrote(data[n - 1])
        return n

    def readv_into(self, task: Task, views: list[memoryview]) -> int:
        if self.is_dir:
            raise SyscallError(errno.EISDIR)
        try:
            return os.readv(self.fd, views)
        except OSError as err:
            raise host_error(err) from None

    def writev(self, task: Task, bufs: list[memoryview]) -> int:
        try:
            n = os.writev(self.fd, bufs)
        except OSError as err:
            raise write_error(task, err) from None
        if n and self.shares_log():
            log.guest_wrote(_byte_at(bufs, n - 1))
        return n

    def pread_into(self, view: memoryview, offset: int) -> int:
        return self.preadv_into([view], offset)

    def preadv_into(self, views: list[memoryview], offset: int) -> int:
        if self.is_dir:
            raise SyscallError(errno.EISDIR)
        try:
            return os.preadv(self.fd, views, offset)
        except OSError as err:
            raise host_error(err) from None

    def pwritev(self, bufs: list[memoryview], offset: int) -> int:
        try:
            return os.pwritev(self.fd, bufs, offset)
        except OSError as err:
            raise host_error(err) from None

    def pwrite(self, data: Buffer, offset: int) -> int:
        try:
            return os.pwrite(self.fd, data, offset)
        except OSError as err:
            raise host_error(err) from None

    def lseek(self, offset: int, whence: int) -> int:
        if self.is_dir:
            return super().lseek(offset, whence)
        try:
            return os.lseek(self.fd, offset, whence)
        except OSError as err:
            raise host_error(err) from None

    def stat(self) -> Stat:
        try:
            return Stat.from_host(os.fstat(self.fd))
        except OSError as err:
            raise host_error(err) from None

    def list_dir(self) -> list[DirEntry]:
        if not self.is_dir:
            raise SyscallError(errno.ENOTDIR)
        out = []
        try:
            with os.scandir(self.fd) as it:
                for e in it:
                    # d_type from the host's dirent: no extra stat per entry.
                    if e.is_symlink():
                        dt = DT_LNK
                    elif e.is_dir(follow_symlinks=False):
                        dt = DT_DIR
                    elif e.is_file(follow_symlinks=False):
                        dt = DT_REG
                    else:
                        dt = DT_UNKNOWN
                    out.append(DirEntry(e.name, e.inode(), dt))
        except OSError as err:
            raise host_error(err) from None
        return out

    def truncate(self, size: int) -> None:
        try:
            os.ftruncate(self.fd, size)
        except OSError as err:
            raise host_error(err) from None

    def fsync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as err:
            raise host_error(err) from None

    def available(self) -> int:
        if self.is_regular:
            return max(0, os.fstat(self.fd).st_size - os.lseek(self.fd, 0, SEEK_CUR))
        buf = bytearray(4)
        try:
            fcntl.ioctl(self.fd, FIONREAD, buf)
        except OSError as err:
            raise host_error(err) from None
        return int.from_bytes(buf, "little")

    def set_status_flags(self, flags: int) -> None:
        host = fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~(os.O_APPEND | os.O_NONBLOCK)
        host |= (os.O_APPEND if flags & OFlag.APPEND else 0) | (
            os.O_NONBLOCK if flags & OFlag.NONBLOCK else 0
        )
        fcntl.fcntl(self.fd, fcntl.F_SETFL, host)
        super().set_status_flags(flags)

    def host_fd(self) -> int | None:
        return self.fd

    def reopen(self, flags: int) -> OpenFile:
        if (flags & O_ACCMODE) != OFlag.RDONLY and not self.writable:
            raise SyscallError(errno.EACCES)  # never widen access through /proc/self/fd
        if self.is_regular or self.is_dir:
            host_flags = (flags & (O_ACCMODE | OFlag.APPEND)) | os.O_CLOEXEC
            try:
                fd = os.open(f"/proc/self/fd/{self.fd}", host_flags)
            except OSError as err:
                raise host_error(err) from None
        else:
            fd = os.dup(self.fd)  # pipes and ttys: the same channel
        return HostFile(fd, self.path, flags & ~O_OPEN_ONLY)

    def link_name(self) -> str:
        if self.is_pipe and not self.path:
            return f"pipe:[{self._ino}]"
        return self.path

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def _byte_at(bufs: list[memoryview], index: int) -> int:
    for buf in bufs:
        if index < len(buf):
            return buf[index]
        index -= len(buf)
    return 0


class MemoryFile(OpenFile):
    """Positioned access to an in-memory byte buffer (synthetic content, tmpfs data)."""

    def _data(self) -> bytes | bytearray:
        raise NotImplementedError

    def __init__(self, path: str, flags: int) -> None:
        super().__init__(path, flags)
        self.pos = 0

    is_regular = True

    def pread_into(self, view: memoryview, offset: int) -> int:
        data = self._data()
        n = max(0, min(len(view), len(data) - offset))
        if n:
            with memoryview(data) as src:  # no intermediate copy of the slice
                view[:n] = src[offset : offset + n]
        return n

    def readinto(self, task: Task, view: memoryview) -> int:
        n = self.pread_into(view, self.pos)
        self.pos += n
        return n

    def available(self) -> int:
        return max(0, len(self._data()) - self.pos)

    def lseek(self, offset: int, whence: int) -> int:
        if whence == SEEK_SET:
            new = offset
        elif whence == SEEK_CUR:
            new = self.pos + offset
        elif whence == SEEK_END:
            new = len(self._data()) + offset
        else:
            size = len(self._data())  # SEEK_DATA/SEEK_HOLE: no holes in memory
            if offset >= size:
                raise SyscallError(errno.ENXIO)
            new = offset if whence == 3 else size
        if new < 0:
            raise SyscallError(errno.EINVAL)
        self.pos = new
        return new


class SyntheticFile(MemoryFile):
    """Read-only content generated at open time (procfs)."""

    def __init__(self, path: str, flags: int, content: bytes, ino: int, dev: int) -> None:
        super().__init__(path, flags)
        self.content = content
        self._stat = Stat(mode=S_IFREG | 0o444, ino=ino, dev=dev, size=0)

    def _data(self) -> bytes:
        return self.content

    def write(self, task: Task, data: Buffer) -> int:
        raise SyscallError(errno.EBADF)

    def stat(self) -> Stat:
        return self._stat

    def reopen(self, flags: int) -> OpenFile:
        return SyntheticFile(self.path, flags, self.content, self._stat.ino, self._stat.dev)


class DirListFile(OpenFile):
    """A directory whose entries are computed (virtual and synthetic directories)."""

    is_dir = True

    def __init__(self, path: str, flags: int, entries: list[DirEntry], st: Stat) -> None:
        super().__init__(path, flags)
        self._entries = entries
        self._stat = st

    def readinto(self, task: Task, view: memoryview) -> int:
        raise SyscallError(errno.EISDIR)

    def pread_into(self, view: memoryview, offset: int) -> int:
        raise SyscallError(errno.EISDIR)

    def stat(self) -> Stat:
        return self._stat

    def list_dir(self) -> list[DirEntry]:
        return list(self._entries)

    def reopen(self, flags: int) -> OpenFile:
        return DirListFile(self.path, flags, self._entries, self._stat)
