"""File locks between the guest's processes: fcntl record locks (F_SETLK, F_SETLKW,
F_GETLK and the F_OFD_* variants, man 2 fcntl) and flock(2).

A file with a host fd (a volume's, and every /tmp and /dev/shm file once the run has
forked: kernel/fs/sharedtmp.py) is locked on the host. Each guest process is a monitor
process of its own, so the host kernel keeps Linux's rules for us: POSIX locks belong to
the process (one monitor: all its guest threads; not inherited by a fork; dropped when
the process closes any fd of the file), OFD and flock locks to the open file description
(which forked monitors share, as forked guest processes do). A host process locking a
volume's file sees the guest's locks, as with a container.

A blocking request (F_SETLKW, F_OFD_SETLKW, flock without LOCK_NB) is tried without
blocking and retried, waiting on the task's waker in between, so a signal interrupts it
(restart or EINTR) and the monitor's thread is never stuck in the host kernel; Linux's
deadlock detection (EDEADLK) is not done. F_GETLK reports the guest pid of a holder that
is one of the run's processes (each records its host pid when it first takes a lock),
else 0, as for a holder outside the caller's pid namespace.

A file with no host fd (tmpfs before the first fork, /proc, pipes' peers) belongs to one
process: its POSIX locks never conflict and are granted, F_GETLK says F_UNLCK.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import time
from collections.abc import Callable

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING
from karn.kernel.blocking import Interrupted
from karn.kernel.fs.constants import O_ACCMODE, OFlag
from karn.kernel.fs.sys_fd import (
    F_GETLK,
    F_OFD_GETLK,
    F_OFD_SETLK,
    F_OFD_SETLKW,
    F_SETLK,
    F_SETLKW,
)

if TYPE_CHECKING:
    from karn.kernel.fs.file import OpenFile
    from karn.kernel.process import Task

F_RDLCK, F_WRLCK, F_UNLCK = 0, 1, 2
LOCK_SH, LOCK_EX, LOCK_NB, LOCK_UN = 1, 2, 4, 8
FLOCK = struct.Struct("<hh4xqqi4x")  # struct flock: type, whence, start, len, pid
BLOCKING = {F_SETLKW: F_SETLK, F_OFD_SETLKW: F_OFD_SETLK}
# A blocked request looks again after this long, doubling up to the cap: a lock held
# for a moment is taken soon, a long wait costs a few wake-ups a second.
RETRY_FIRST, RETRY_MAX = 0.001, 0.1
OWNERS_DIR = ".lock-owners"  # in the run's shared directory: host pid -> guest pid
_recorded_by = 0  # the monitor (host pid) that recorded its guest pid there
_posix_locked: set[int] = set()  # host fds this process has taken POSIX locks through
_file_locked: set[int] = set()  # host fds it has taken OFD or flock locks through


def fcntl_lock(task: Task, file: OpenFile, cmd: int, arg: int) -> int:
    raw = task.mem.read(arg, FLOCK.size)
    kind, whence, _start, _length, pid = FLOCK.unpack(raw)
    if kind not in (F_RDLCK, F_WRLCK, F_UNLCK) or whence not in (0, 1, 2):
        raise SyscallError(errno.EINVAL)
    if cmd in (F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW) and pid != 0:
        raise SyscallError(errno.EINVAL)
    host = _host_fd(file)
    if cmd in (F_GETLK, F_OFD_GETLK):
        if kind == F_UNLCK:
            raise SyscallError(errno.EINVAL)
        if host is None:
            task.mem.write(arg, F_UNLCK.to_bytes(2, "little"))  # nothing else holds it
            return 0
        found = _host_fcntl(host, cmd, raw)
        kind, whence, start, length, holder = FLOCK.unpack(found)
        if kind != F_UNLCK and cmd == F_GETLK:
            holder = _guest_pid(task, holder)
        task.mem.write(arg, FLOCK.pack(kind, whence, start, length, holder))
        return 0
    accmode = file.flags & O_ACCMODE
    if (kind == F_RDLCK and accmode == OFlag.WRONLY) or \
            (kind == F_WRLCK and accmode == OFlag.RDONLY):
        raise SyscallError(errno.EBADF)
    if host is None:
        return 0  # one process holds the file: its locks never conflict
    if cmd == F_SETLK or cmd == F_OFD_SETLK:
        _host_fcntl(host, cmd, raw)
    else:
        _retry(task, lambda: _host_fcntl(host, BLOCKING[cmd], raw))
    if kind != F_UNLCK and cmd in (F_SETLK, F_SETLKW):
        _posix_locked.add(host)
        _record_owner(task)
    elif kind != F_UNLCK:
        _file_locked.add(host)
    return 0


def release_at_exit() -> None:
    """A process ends: its locks go before its parent can hear of the end, as Linux
    drops them in exit (the monitor's own exit, which closes its fds, comes later): its
    POSIX locks, and its fds of the open files it took OFD or flock locks through (those
    locks go if no other process shares the open file). Unlocking a file this process
    holds no lock on (an fd reused since) changes nothing."""
    unlock = FLOCK.pack(F_UNLCK, 0, 0, 0, 0)
    for host in _posix_locked:
        try:
            fcntl.fcntl(host, F_SETLK, unlock)
        except OSError:
            pass  # closed since: its locks went with it
    for host in _file_locked:
        try:
            os.close(host)
        except OSError:
            pass
    _posix_locked.clear()
    _file_locked.clear()


def flock(task: Task, file: OpenFile, operation: int) -> int:
    if operation & ~(LOCK_SH | LOCK_EX | LOCK_NB | LOCK_UN) or \
            not operation & (LOCK_SH | LOCK_EX | LOCK_UN):
        raise SyscallError(errno.EINVAL)
    host = _host_fd(file)
    if host is None:
        return 0
    try:
        fcntl.flock(host, operation | LOCK_NB)
    except BlockingIOError:
        if operation & LOCK_NB:
            raise SyscallError(errno.EWOULDBLOCK) from None
        _retry(task, lambda: fcntl.flock(host, operation | LOCK_NB))
    except OSError as err:
        raise SyscallError(err.errno or errno.EINVAL) from None
    if not operation & LOCK_UN:
        _file_locked.add(host)
    return 0


def _host_fd(file: OpenFile) -> int | None:
    """The host fd to lock: a regular file's or a directory's (flock takes both)."""
    if not (file.is_regular or file.is_dir):
        return None
    return file.host_fd()


def _host_fcntl(host: int, cmd: int, raw: bytes) -> bytes:
    try:
        return fcntl.fcntl(host, cmd, raw)
    except OSError as err:
        if err.errno == errno.EACCES:
            raise SyscallError(errno.EAGAIN) from None  # Linux says either; glibc, EAGAIN
        raise SyscallError(err.errno or errno.EINVAL) from None


def _retry(task: Task, attempt: Callable[[], object]) -> None:
    """Try a lock that would block until it is granted; a signal interrupts the wait."""
    pause = RETRY_FIRST
    while True:
        try:
            attempt()
            return
        except SyscallError as err:
            if err.errno != errno.EAGAIN:
                raise
        except BlockingIOError:
            pass
        except OSError as err:
            raise SyscallError(err.errno or errno.EINVAL) from None
        if task.signal_pending():
            raise Interrupted()
        task.waker.wait(time.monotonic() + pause)
        pause = min(pause * 2, RETRY_MAX)


def _owners_dir(task: Task) -> str | None:
    proc = task.process
    if proc.link is None:
        return None  # one process: no other guest process can hold a lock
    return os.path.join(proc.fs.shared_tmp.path(), OWNERS_DIR)


def _record_owner(task: Task) -> None:
    """Once per monitor: the guest pid its host pid stands for, for other processes'
    F_GETLK (written as a file named by the host pid)."""
    global _recorded_by
    me = os.getpid()
    if _recorded_by == me:
        return
    proc = task.process
    where = _owners_dir(task)
    if where is None:
        return
    os.makedirs(where, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(where, str(me)), os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
                 os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, str(proc.pid).encode())
    finally:
        os.close(fd)
    _recorded_by = me


def _guest_pid(task: Task, host_pid: int) -> int:
    where = _owners_dir(task)
    if where is None or host_pid <= 0:
        return 0
    try:
        with open(os.path.join(where, str(host_pid)), "rb") as f:
            return int(f.read() or b"0")
    except (OSError, ValueError):
        return 0  # a host process's lock (a volume's file)
