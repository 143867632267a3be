"""pidfds (man 2 pidfd_open, pidfd_send_signal): a file that names a guest process.

A pidfd polls readable once its process has ended: it is a host eventfd that this
monitor's link sets when the process table says so (link.py, exit_event), so poll,
select and epoll wait on it as on any host fd. waitid(P_PIDFD) is in sys_wait.py.
"""

from __future__ import annotations

import errno
import select
import struct

from karn.abi.errno import SyscallError
from karn.abi.registers import s32, u32
from karn.abi.signals import SI_TKILL, SI_USER
from karn.kernel.fs.constants import OFlag
from karn.kernel.fs.file import Buffer, HostFile
from karn.kernel.fs.procfs import ProcPidDir
from karn.kernel.process import Task
from karn.kernel.signals import SigInfo, check_signal

PIDFD_NONBLOCK = OFlag.NONBLOCK
PIDFD_THREAD = OFlag.EXCL  # a pidfd to one thread (Linux 6.9): not served


class PidFd(HostFile):
    """A process's pidfd: reads and writes fail as Linux's (EINVAL), at once."""

    waits_itself = True  # read and write never wait for the eventfd

    def __init__(self, fd: int, pid: int, flags: int) -> None:
        super().__init__(fd, "anon_inode:[pidfd]", OFlag.RDWR | flags)
        self.pid = pid
        self.is_regular = False

    def link_name(self) -> str:
        return "anon_inode:[pidfd]"

    def readinto(self, task: Task, view: memoryview) -> int:
        raise SyscallError(errno.EINVAL)

    def readv_into(self, task: Task, views: list[memoryview]) -> int:
        raise SyscallError(errno.EINVAL)

    def write(self, task: Task, data: Buffer) -> int:
        raise SyscallError(errno.EINVAL)

    def writev(self, task: Task, bufs: list[memoryview]) -> int:
        raise SyscallError(errno.EINVAL)

    def ended(self) -> bool:
        """Whether the process has ended (the eventfd has been set)."""
        return bool(select.select([self.fd], [], [], 0)[0])


def pidfd_of(task: Task, fd: int) -> PidFd:
    """The pidfd at fd: EBADF for no file or a file that is not a pidfd."""
    file = task.process.fds.get(fd)
    if not isinstance(file, PidFd):
        raise SyscallError(errno.EBADF)
    return file


def sys_pidfd_open(task: Task, pid: int, flags: int) -> int:
    pid, flags = s32(pid), u32(flags)
    if flags & ~PIDFD_NONBLOCK or pid <= 0:
        raise SyscallError(errno.EINVAL)
    proc = task.process
    if pid != proc.pid and pid in proc.tasks:
        raise SyscallError(errno.EINVAL)  # a thread, not a process: no PIDFD_THREAD
    from karn.kernel.fork import link_of  # the table is made at the first need

    event = link_of(proc).exit_event(pid)
    file = PidFd(event, pid, flags & PIDFD_NONBLOCK)
    try:
        return proc.fds.install(file, cloexec=True)  # pidfds are always close-on-exec
    except SyscallError:
        file.close()
        raise


def sys_pidfd_send_signal(task: Task, pidfd: int, sig: int, info: int, flags: int) -> int:
    sig, flags = check_signal(s32(sig), allow_zero=True), u32(flags)
    if flags:
        raise SyscallError(errno.EINVAL)
    file = task.process.fds.get(s32(pidfd))
    if isinstance(file, PidFd):
        if file.ended():
            raise SyscallError(errno.ESRCH)
    elif not isinstance(file, ProcPidDir):  # /proc/PID is a pidfd too, as on Linux
        raise SyscallError(errno.EBADF)
    proc = task.process
    code = SI_USER
    if info:
        data = task.mem.read(info, 128)
        signo, _errno, code = struct.unpack_from("<iii", data)
        if signo != sig:
            raise SyscallError(errno.EINVAL)
        if file.pid != proc.pid and (code >= 0 or code == SI_TKILL):
            raise SyscallError(errno.EPERM)  # only SI_QUEUE-like codes may be forged
    if file.pid == proc.pid:
        if sig:
            fields = data[16:] if info else None
            proc.signal_process(SigInfo(sig, code, fields) if fields is not None
                                else SigInfo.from_sender(sig, code, proc.pid))
        return 0
    link = proc.link
    if link is None:  # another process's pidfd made the link; /proc lists none without
        raise SyscallError(errno.ESRCH)
    link.call("tgkill", file.pid, 0, sig, code)  # to the process (thread 0: any)
    return 0


HANDLERS = {
    "pidfd_open": sys_pidfd_open,
    "pidfd_send_signal": sys_pidfd_send_signal,
}

NOTES = {
    "pidfd_open": "Processes only (no PIDFD_THREAD); readable once the process has ended, "
    "while the monitor that opened it runs.",
    "pidfd_send_signal": "Another process gets the signal with the given si_code but "
    "si_value is not carried across processes.",
}
