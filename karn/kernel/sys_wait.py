"""wait4 and waitid (man 2 wait): a child's end, from the process table (link.py)."""

from __future__ import annotations

import errno
import struct

from karn.abi.errno import SyscallError
from karn.abi.registers import s32
from karn.abi.signals import SIGCHLD
from karn.kernel.process import Task
from karn.kernel.proctable import (
    P_ALL,
    P_PGID,
    P_PID,
    WALL,
    WCLONE,
    WCONTINUED,
    WEXITED,
    WNOHANG,
    WNOTHREAD,
    WNOWAIT,
    WSTOPPED,
    Reaped,
    child_code,
)
from karn.kernel.sys_pidfd import PIDFD_NONBLOCK, pidfd_of

P_PIDFD = 3

RUSAGE_SIZE = 144  # struct rusage: two timevals and fourteen longs
SIGINFO_SIZE = 128
WAIT4_OPTIONS = WNOHANG | WSTOPPED | WCONTINUED | WNOTHREAD | WALL | WCLONE
WAITID_OPTIONS = WNOHANG | WSTOPPED | WEXITED | WCONTINUED | WNOWAIT | WNOTHREAD | WALL | WCLONE


def _find(task: Task, idtype: int, ident: int, options: int) -> Reaped | None:
    link = task.process.link
    if link is None:  # never forked: no children
        raise SyscallError(errno.ECHILD)
    return link.wait_child(task, idtype, ident, options, block=not options & WNOHANG)


def _rusage(task: Task, addr: int) -> None:
    """The child's resource usage is not collected: zeros, as for a child that used none."""
    if addr:
        task.mem.write(addr, bytes(RUSAGE_SIZE))


def sys_wait4(task: Task, pid: int, wstatus: int, options: int, rusage: int) -> int:
    pid, options = s32(pid), options & 0xFFFFFFFF
    if options & ~WAIT4_OPTIONS:
        raise SyscallError(errno.EINVAL)
    if pid == -1:
        idtype, ident = P_ALL, 0
    elif pid < -1:
        idtype, ident = P_PGID, -pid
    elif pid == 0:
        idtype, ident = P_PGID, 0  # the caller's group
    else:
        idtype, ident = P_PID, pid
    found = _find(task, idtype, ident, options | WEXITED)
    if found is None:
        return 0
    if wstatus:
        task.mem.write_u32(wstatus, found.wstatus)
    _rusage(task, rusage)
    return found.pid


def sys_waitid(task: Task, idtype: int, ident: int, infop: int, options: int,
               rusage: int) -> int:
    idtype, ident, options = s32(idtype), s32(ident), options & 0xFFFFFFFF
    if options & ~WAITID_OPTIONS or not options & (WEXITED | WSTOPPED | WCONTINUED):
        raise SyscallError(errno.EINVAL)
    nonblocking_pidfd = False
    if idtype == P_PIDFD:  # the pidfd's process; its O_NONBLOCK makes a wait EAGAIN
        pidfd = pidfd_of(task, ident)
        idtype, ident = P_PID, pidfd.pid
        nonblocking_pidfd = bool(pidfd.flags & PIDFD_NONBLOCK) and not options & WNOHANG
        if nonblocking_pidfd:
            options |= WNOHANG
    if idtype not in (P_ALL, P_PID, P_PGID) or (idtype == P_PID and ident <= 0) or ident < 0:
        raise SyscallError(errno.EINVAL)
    found = _find(task, idtype, ident, options)
    if found is None and nonblocking_pidfd:
        raise SyscallError(errno.EAGAIN)
    if infop:
        if found is None:
            task.mem.write(infop, bytes(SIGINFO_SIZE))  # si_pid 0: none has ended
        else:
            code, status = child_code(found.wstatus)
            info = struct.pack("<iii4xiIi", SIGCHLD, 0, code, found.pid, 0, status)
            task.mem.write(infop, info.ljust(SIGINFO_SIZE, b"\0"))
    _rusage(task, rusage)
    return 0


HANDLERS = {
    "wait4": sys_wait4,
    "waitid": sys_waitid,
}

NOTES = {
    "wait4": "Exited and killed children, job-control stops (WUNTRACED) and continues "
    "(WCONTINUED); rusage is zeros.",
    "waitid": "WEXITED, WSTOPPED, WCONTINUED, WNOWAIT; P_PIDFD; rusage is zeros.",
}
