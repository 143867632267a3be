"""timerfd_create/settime/gettime: a guest timerfd is a host timerfd.

Reads, poll/epoll readiness and expirations counting are the host kernel's; blocking
reads wait interruptibly like other host fds (fs/sysutil.wait_until_ready).
"""

from __future__ import annotations

import ctypes
import errno
import os

from karn.abi.errno import SyscallError
from karn.abi.registers import s32
from karn.kernel.fs.constants import OFlag
from karn.kernel.fs.file import HostFile
from karn.kernel.process import Task
from karn.kernel.timers import ITIMERSPEC

CLOCKS = {0, 1, 7, 8, 9}  # REALTIME, MONOTONIC, BOOTTIME, REALTIME_ALARM, BOOTTIME_ALARM
TFD_NONBLOCK, TFD_CLOEXEC = 0o4000, 0o2000000
TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET = 1, 2
_libc = ctypes.CDLL(None, use_errno=True)
_Spec = ctypes.c_byte * ITIMERSPEC.size


class TimerFdFile(HostFile):
    def link_name(self) -> str:
        return "anon_inode:[timerfd]"


def _check(result: int) -> int:
    if result < 0:
        raise SyscallError(ctypes.get_errno() or errno.EINVAL)
    return result


def sys_timerfd_create(task: Task, clockid: int, flags: int) -> int:
    clock, flags = s32(clockid), s32(flags)
    if flags & ~(TFD_NONBLOCK | TFD_CLOEXEC):
        raise SyscallError(errno.EINVAL)
    if clock not in CLOCKS:
        raise SyscallError(errno.EINVAL)
    if clock in (8, 9):
        raise SyscallError(errno.EPERM)  # alarm clocks need CAP_WAKE_ALARM: not granted
    fd = _check(_libc.timerfd_create(clock, os.O_CLOEXEC | os.O_NONBLOCK))
    status = OFlag.NONBLOCK if flags & TFD_NONBLOCK else 0
    file = TimerFdFile(fd, "anon_inode:[timerfd]", OFlag.RDWR | status)
    file.is_regular = False
    try:
        return task.process.fds.install(file, bool(flags & TFD_CLOEXEC))
    except SyscallError:
        file.close()
        raise


def _timerfd(task: Task, fd: int) -> TimerFdFile:
    file = task.process.fds.get(s32(fd))
    if not isinstance(file, TimerFdFile):
        raise SyscallError(errno.EINVAL)
    return file


def sys_timerfd_settime(task: Task, fd: int, flags: int, new: int, old: int) -> int:
    file = _timerfd(task, fd)
    flags = s32(flags)
    if flags & ~(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET):
        raise SyscallError(errno.EINVAL)
    spec = _Spec.from_buffer_copy(task.mem.read(new, ITIMERSPEC.size))
    out = _Spec()
    _check(_libc.timerfd_settime(file.fd, flags, spec, out))
    if old:
        task.mem.write(old, bytes(out))
    return 0


def sys_timerfd_gettime(task: Task, fd: int, cur: int) -> int:
    file = _timerfd(task, fd)
    out = _Spec()
    _check(_libc.timerfd_gettime(file.fd, out))
    task.mem.write(cur, bytes(out))
    return 0


HANDLERS = {
    "timerfd_create": sys_timerfd_create,
    "timerfd_settime": sys_timerfd_settime,
    "timerfd_gettime": sys_timerfd_gettime,
}
NOTES = {
    "timerfd_create": "a host timerfd; the *_ALARM clocks are EPERM (no CAP_WAKE_ALARM)",
}
