"""A host directory as a guest filesystem (root directory, --volume mounts).

Every host access starts from a held O_PATH fd of the host root and goes through
openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS), so neither a
symlink nor a concurrent rename by another guest thread can lead outside the mount; the
VFS has already resolved symlinks in guest terms, so none is left to follow here.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import threading
from types import ModuleType

from karn.abi.errno import SyscallError
from karn.kernel.fs.constants import (
    EXT4_SUPER_MAGIC,
    O_ACCMODE,
    O_OPEN_ONLY,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    S_IFIFO,
    S_IFMT,
    ST_RDONLY,
    ST_VALID,
    OFlag,
)
from karn.kernel.fs.fifo import FifoState, PendingFifo
from karn.kernel.fs.file import HostFile, OpenFile, host_error
from karn.kernel.fs.filesystem import Filesystem, Rel
from karn.kernel.fs.stat import Stat, StatFs
from karn.kernel.fs.xattr import HostStore, XattrStore

# The C binding (_hostcalls.c; optional: built by `pip install` with a compiler), loaded
# at the first open that needs it: ~0.3 ms that a run opening no path of two names or more
# (a static hello) does not pay.
_hostcalls: ModuleType | None = None
_hostcalls_looked_for = False


def _load_hostcalls() -> ModuleType | None:
    global _hostcalls, _hostcalls_looked_for
    try:  # (not importlib.import_module: the importlib package, with warnings, costs more)
        _hostcalls = __import__("karn.kernel.fs._hostcalls", fromlist=("openat2",))
    except ImportError:
        _hostcalls = None
    _hostcalls_looked_for = True
    return _hostcalls


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
SYS_openat2 = 437
SYS_renameat2 = 316
_RESOLVE = 0x02 | 0x04 | 0x08  # NO_MAGICLINKS | NO_SYMLINKS | BENEATH


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


# Guest open flags passed to the host unchanged: karn runs only on x86-64 Linux, where the
# guest's and the host's O_* values are the same numbers.
_PASS_FLAGS = (
    O_ACCMODE
    | OFlag.CREAT
    | OFlag.EXCL
    | OFlag.TRUNC
    | OFlag.APPEND
    | OFlag.NONBLOCK
    | OFlag.DSYNC
    | OFlag.SYNC
    | OFlag.DIRECTORY
    | OFlag.NOATIME
    | OFlag.PATH
)


def openat2(dirfd: int, path: str, flags: int, mode: int = 0) -> int:
    """path opened below dirfd, no symlink followed (a trailing one: ELOOP, or with
    O_PATH the link itself). A single name other than '..' is opened by a plain openat,
    which then cannot leave dirfd or follow anything either (os.open: a little cheaper
    than the C binding, ~2 µs cheaper than ctypes where that is not built). A web
    server's every request opens one or the other (nginx's /site/index.html, or
    html/index.html below a volume at /site)."""
    if path and path != ".." and "/" not in path:
        try:
            return os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, mode, dir_fd=dirfd)
        except OSError as err:
            raise host_error(err) from None
    flags |= os.O_CLOEXEC | os.O_NOFOLLOW
    binding = _hostcalls if _hostcalls_looked_for else _load_hostcalls()
    if binding is not None:
        try:
            return binding.openat2(dirfd, path or ".", flags, mode, _RESOLVE)
        except OSError as err:
            code = err.errno or errno.EIO
    else:
        how = _OpenHow(flags, mode, _RESOLVE)
        fd = _libc.syscall(
            SYS_openat2, dirfd, os.fsencode(path or "."), ctypes.byref(how), ctypes.sizeof(how)
        )
        if fd >= 0:
            return fd
        code = ctypes.get_errno()
    raise SyscallError(errno.ELOOP if code == errno.EXDEV else code)


def host_syncfs(fd: int) -> None:
    """syncfs(2) of the host filesystem holding fd (an error: SyscallError, EIO as a rule)."""
    if _libc.syncfs(fd) < 0:
        raise SyscallError(ctypes.get_errno())


def host_statfs(fd: int, readonly: bool) -> StatFs:
    """statfs of the host filesystem holding fd, as a karn host mount reports it."""
    v = os.statvfs(f"/proc/self/fd/{fd}")
    flags = ST_VALID | (ST_RDONLY if readonly else 0)
    return StatFs(EXT4_SUPER_MAGIC, v.f_bsize, v.f_blocks, v.f_bfree, v.f_bavail, v.f_files,
                  v.f_ffree, v.f_namemax, flags)


def _mkdir_exact(dir_fd: int, name: str, mode: int) -> None:
    """mkdir with exactly the guest's mode (its umask already applied): the monitor's own
    umask must not take more bits away (guest umask 002 made 0755, not 0775). Made
    owner-accessible; when the result differs from mode, opened without following a
    symlink (another process may have replaced it by now) and given its mode. (Reading
    the monitor's umask would mean setting it, for every thread at once.)"""
    os.mkdir(name, mode | 0o700, dir_fd=dir_fd)
    have = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode & 0o7777
    want = mode & 0o1777 | have & 0o2000  # as Linux: set-group-ID from the parent
    if have == want:
        return
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                 dir_fd=dir_fd)
    try:
        os.fchmod(fd, want)
    finally:
        os.close(fd)


class _Parent:
    """(dirfd, name) of a path's last component, its parent opened (beneath the mount's
    root, openat2) for the `with` block and closed after. A class of its own: contextlib
    is not otherwise imported by a run (~0.5 ms)."""

    __slots__ = ("_root", "_rel", "_fd")

    def __init__(self, root: int, rel: Rel) -> None:
        self._root, self._rel, self._fd = root, rel, -1

    def __enter__(self) -> tuple[int, str]:
        rel = self._rel
        if len(rel) == 1:
            return self._root, rel[0]
        self._fd = openat2(self._root, "/".join(rel[:-1]), os.O_PATH | os.O_DIRECTORY)
        return self._fd, rel[-1]

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class HostDirFs(Filesystem):
    fstype = "hostfs"
    whole_lookups = opens_whole = True  # host lookups with RESOLVE_NO_SYMLINKS

    def __init__(self, host_root: str, readonly: bool = False) -> None:
        super().__init__()
        self.host_root = host_root
        self.readonly = readonly
        self.root_fd = os.open(host_root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self._fifos: dict[tuple[int, int], FifoState] = {}  # by host (dev, ino)
        self._fifos_lock = threading.Lock()

    def _at(self, rel: Rel) -> _Parent:
        """`with self._at(rel) as (dirfd, name)`: the last component of rel, its parent
        opened safely."""
        if not rel:
            raise SyscallError(errno.EBUSY)  # the mount root itself cannot be changed
        return _Parent(self.root_fd, rel)

    def _check_writable(self) -> None:
        if self.readonly:
            raise SyscallError(errno.EROFS)

    def sync(self) -> None:
        """Write what the guest changed here to the host's disk (sync(2) in the guest):
        syncfs of the host filesystem holding the mount (O_PATH fds are refused)."""
        fd = os.open(self.host_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            host_syncfs(fd)
        finally:
            os.close(fd)

    def lstat(self, rel: Rel) -> Stat:
        try:
            if not rel:
                return Stat.from_host(os.fstat(self.root_fd))
            binding = None if len(rel) == 1 else \
                _hostcalls if _hostcalls_looked_for else _load_hostcalls()
            if binding is not None:  # the three host calls below in one C call (~1.5 µs)
                return Stat(*binding.lstat_beneath(self.root_fd, "/".join(rel[:-1]), rel[-1],
                                                   _RESOLVE))
            with self._at(rel) as (d, name):
                return Stat.from_host(os.stat(name, dir_fd=d, follow_symlinks=False))
        except OSError as err:  # EXDEV: openat2's "leaves the mount", as openat2() says it
            raise (SyscallError(errno.ELOOP) if err.errno == errno.EXDEV else host_error(err)
                   ) from None

    def plain_dirs(self, rel: Rel) -> bool:
        try:  # (O_DIRECTORY: a symlink at the end is ENOTDIR, on the way ELOOP)
            os.close(openat2(self.root_fd, "/".join(rel), os.O_PATH | os.O_DIRECTORY))
        except SyscallError:
            return False
        return True

    def readlink(self, rel: Rel) -> str:
        if not rel:
            raise SyscallError(errno.EINVAL)
        try:
            with self._at(rel) as (d, name):
                return os.readlink(name, dir_fd=d)
        except OSError as err:
            raise host_error(err) from None

    def open(self, rel: Rel, flags: int, mode: int, path: str) -> OpenFile:
        host_flags = flags & _PASS_FLAGS
        created = False
        if flags & OFlag.CREAT:
            try:
                self.lstat(rel)
            except SyscallError as err:
                if err.errno != errno.ENOENT:
                    raise
                self._check_writable()
                created = True
            host_flags = host_flags if created else host_flags & ~int(OFlag.CREAT)
        if self.readonly and ((flags & O_ACCMODE) != OFlag.RDONLY or flags & OFlag.TRUNC):
            raise SyscallError(errno.EROFS)
        # Non-blocking, so that a FIFO's open never blocks the monitor (fifo.py waits
        # for its partner); cleared again for anything else unless the guest asked.
        # openat2 refuses O_PATH with any flag but O_DIRECTORY (EINVAL; open ignores them).
        host_flags = host_flags & (OFlag.PATH | OFlag.DIRECTORY) if flags & OFlag.PATH \
            else host_flags | os.O_NONBLOCK
        try:
            # (a mode without O_CREAT: EINVAL from openat2, where the file appeared
            # since the lstat above and Linux would open it)
            fd = openat2(self.root_fd, "/".join(rel), host_flags,
                         mode if host_flags & OFlag.CREAT else 0)
        except SyscallError as err:
            if err.errno == errno.ENXIO and self.lstat(rel).mode & S_IFMT == S_IFIFO:
                return self._fifo(rel, flags, path)  # a writer before any reader
            raise
        if created:
            try:
                os.fchmod(fd, mode)  # the guest's umask applied, not the monitor's
            except OSError:
                pass
        file = self._host_file(fd, path, flags & ~O_OPEN_ONLY)
        if file.is_pipe:  # this end becomes the FIFO end: a host partner may have seen it
            return self._fifo(rel, flags, path, fd)
        if not flags & (OFlag.NONBLOCK | OFlag.PATH):
            try:  # one call: F_SETFL sets only these of the flags the file was opened with
                fcntl.fcntl(fd, fcntl.F_SETFL, host_flags & (os.O_APPEND | os.O_NOATIME))
            except OSError as err:
                file.close()
                raise host_error(err) from None
        return file

    def _host_file(self, fd: int, path: str, flags: int) -> HostFile:
        """The description of a file this mount opened."""
        return HostFile(fd, path, flags)

    def _fifo(self, rel: Rel, flags: int, path: str, opened: int | None = None) -> OpenFile:
        """A FIFO of the volume: one FifoState per host FIFO, shared by its openers."""
        st = self.lstat(rel)
        name = "/".join(rel)
        with self._fifos_lock:
            state = self._fifos.get((st.dev, st.ino))
            if state is None:
                state = FifoState(lambda host_flags: openat2(self.root_fd, name, host_flags),
                                  host_poll=True)
                self._fifos[(st.dev, st.ino)] = state
        return PendingFifo(path, flags & ~O_OPEN_ONLY, state, lambda: self.lstat(rel), opened)

    def xattrs(self, rel: Rel) -> XattrStore:
        name = "/".join(rel) or "."
        return HostStore(lambda: openat2(self.root_fd, name, os.O_PATH), self.readonly)

    def mknod(self, rel: Rel, mode: int) -> None:
        self._do(rel, lambda d, n: os.mknod(n, mode, dir_fd=d))

    def statfs(self) -> StatFs:
        return host_statfs(self.root_fd, self.readonly)

    def _do(self, rel: Rel, fn) -> None:  # noqa: ANN001 - small local adaptor
        self._check_writable()
        try:
            with self._at(rel) as (d, name):
                fn(d, name)
        except OSError as err:
            raise host_error(err) from None

    def mkdir(self, rel: Rel, mode: int) -> None:
        self._do(rel, lambda d, n: _mkdir_exact(d, n, mode))

    def rmdir(self, rel: Rel) -> None:
        self._do(rel, lambda d, n: os.rmdir(n, dir_fd=d))

    def unlink(self, rel: Rel) -> None:
        self._do(rel, lambda d, n: os.unlink(n, dir_fd=d))

    def symlink(self, target: str, rel: Rel) -> None:
        self._do(rel, lambda d, n: os.symlink(target, n, dir_fd=d))

    def link(self, src: Rel, dst: Rel) -> None:
        self._check_writable()
        with self._at(src) as (sd, sn), self._at(dst) as (dd, dn):
            try:
                os.link(sn, dn, src_dir_fd=sd, dst_dir_fd=dd, follow_symlinks=False)
            except OSError as err:
                raise host_error(err) from None

    def rename(self, src: Rel, dst: Rel, flags: int) -> None:
        self._check_writable()
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise SyscallError(errno.EINVAL)
        with self._at(src) as (sd, sn), self._at(dst) as (dd, dn):
            res = _libc.syscall(
                SYS_renameat2, sd, os.fsencode(sn), dd, os.fsencode(dn), ctypes.c_uint(flags)
            )
            if res < 0:
                raise SyscallError(ctypes.get_errno())

    def _via_fd(self, rel: Rel, flags: int) -> int:
        return openat2(self.root_fd, "/".join(rel), flags)

    def chmod(self, rel: Rel, mode: int) -> None:
        self._check_writable()
        fd = self._via_fd(rel, os.O_PATH)
        try:
            os.chmod(f"/proc/self/fd/{fd}", mode & 0o7777)
        except OSError as err:
            raise host_error(err) from None
        finally:
            os.close(fd)

    def utimens(self, rel: Rel, atime_ns: int | None, mtime_ns: int | None) -> None:
        self._check_writable()
        st = self.lstat(rel)
        times = (
            st.atime_ns if atime_ns is None else atime_ns,
            st.mtime_ns if mtime_ns is None else mtime_ns,
        )
        if not rel:
            fd = os.open(f"/proc/self/fd/{self.root_fd}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.utime(fd, ns=times)
            finally:
                os.close(fd)
            return
        self._do(rel, lambda d, n: os.utime(n, ns=times, dir_fd=d, follow_symlinks=False))

    def truncate(self, rel: Rel, size: int) -> None:
        self._check_writable()
        fd = self._via_fd(rel, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
        except OSError as err:
            raise host_error(err) from None
        finally:
            os.close(fd)
