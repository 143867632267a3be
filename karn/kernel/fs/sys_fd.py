"""Handlers: the fd table itself (close, dup, fcntl, pipes, ioctl)."""

from __future__ import annotations

import errno
import fcntl
import os

from karn import log
from karn.abi.errno import SyscallError
from karn.abi.registers import s32, u32
from karn.hints import TYPE_CHECKING
from karn.kernel import tty
from karn.kernel.fs.constants import OFlag
from karn.kernel.fs.file import HostFile, OpenFile, host_error
from karn.kernel.fs.tmpfs import TmpFile
from karn.kernel.limits import PIPE_DEF_SIZE, PIPE_MAX_SIZE, PIPE_MIN_SIZE, Charge, buffer_budget
from karn.kernel.tty import TIOCGSID, TIOCNOTTY, TIOCSCTTY

if TYPE_CHECKING:
    from karn.kernel.process import Task

F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL = 0, 1, 2, 3, 4
F_GETLK, F_SETLK, F_SETLKW, F_SETOWN, F_GETOWN = 5, 6, 7, 8, 9
F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 36, 37, 38
F_DUPFD_CLOEXEC, F_SETPIPE_SZ, F_GETPIPE_SZ = 1030, 1031, 1032
F_ADD_SEALS, F_GET_SEALS = 1033, 1034
F_SETSIG, F_GETSIG, F_SETLEASE, F_GETLEASE, F_NOTIFY = 10, 11, 1024, 1025, 1026
F_UNLCK = 2
_NSIG = 64
FD_CLOEXEC = 1
CLOSE_RANGE_UNSHARE, CLOSE_RANGE_CLOEXEC = 2, 4

TCGETS, TCSETS, TCSETSW, TCSETSF = 0x5401, 0x5402, 0x5403, 0x5404
TIOCGPGRP, TIOCSPGRP, TIOCGWINSZ, TIOCSWINSZ = 0x540F, 0x5410, 0x5413, 0x5414
FIONREAD, FIONBIO, FIONCLEX, FIOCLEX = 0x541B, 0x5421, 0x5450, 0x5451
FIOASYNC = 0x5452
# tty ioctls passed to the host tty: request -> (bytes copied in, bytes copied out)
_TTY_PASS = {
    TCGETS: (0, 36),
    TCSETS: (36, 0),
    TCSETSW: (36, 0),
    TCSETSF: (36, 0),
    TIOCGWINSZ: (0, 8),
    TIOCSWINSZ: (8, 0),
}


def sys_close(task: Task, fd: int) -> int:
    task.process.fds.close(s32(fd))
    return 0


def sys_dup(task: Task, oldfd: int) -> int:
    fds = task.process.fds
    return fds.install(fds.get(s32(oldfd)))


def sys_dup3(task: Task, oldfd: int, newfd: int, flags: int) -> int:
    old, new, flags = s32(oldfd), s32(newfd), s32(flags)
    if flags & ~OFlag.CLOEXEC or old == new:
        raise SyscallError(errno.EINVAL)
    fds = task.process.fds
    fds.install_at(new, fds.get(old), cloexec=bool(flags & OFlag.CLOEXEC))
    return new


def sys_dup2(task: Task, oldfd: int, newfd: int) -> int:
    old, new = s32(oldfd), s32(newfd)
    file = task.process.fds.get(old)
    if old == new:
        return new
    task.process.fds.install_at(new, file)
    return new


def sys_fcntl(task: Task, fd: int, cmd: int, arg: int) -> int:
    fd, cmd = s32(fd), s32(cmd)
    fds = task.process.fds
    file = fds.get(fd)
    if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
        lowest = s32(arg)
        if not 0 <= lowest < fds.limit:
            raise SyscallError(errno.EINVAL)
        return fds.install(file, cloexec=cmd == F_DUPFD_CLOEXEC, lowest=lowest)
    if cmd == F_GETFD:
        return FD_CLOEXEC if fds.get_cloexec(fd) else 0
    if cmd == F_SETFD:
        fds.set_cloexec(fd, bool(arg & FD_CLOEXEC))
        return 0
    if cmd == F_GETFL:
        return file.flags
    if cmd == F_SETFL:
        file.set_status_flags(u32(arg) & (OFlag.APPEND | OFlag.NONBLOCK))
        return 0
    if cmd in (F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW):
        from karn.kernel.fs.locks import fcntl_lock  # loaded by the first lock

        return fcntl_lock(task, file, cmd, arg)
    if cmd == F_GETOWN:
        return 0
    if cmd == F_SETOWN:
        return 0
    if cmd in (F_GETPIPE_SZ, F_SETPIPE_SZ):
        host = file.host_fd()
        if host is None or not file.is_pipe:
            raise SyscallError(errno.EBADF)
        if cmd == F_GETPIPE_SZ:
            return fcntl.fcntl(host, cmd)
        return _set_pipe_size(file, host, u32(arg))
    if cmd in (F_ADD_SEALS, F_GET_SEALS):
        return _seals(task, file, cmd, u32(arg))
    if cmd == F_GETSIG:
        return file.io_signal
    if cmd == F_SETSIG:
        if not 0 <= arg <= _NSIG:
            raise SyscallError(errno.EINVAL)
        file.io_signal = arg
        return 0
    if cmd == F_GETLEASE:
        return F_UNLCK  # no lease is ever held: F_SETLEASE is not supported
    name = {F_SETLEASE: "F_SETLEASE", F_NOTIFY: "F_NOTIFY"}.get(cmd)
    if name is not None:
        log.warning_once(name, "fcntl %s is not supported; returning EINVAL", name)
    raise SyscallError(errno.EINVAL)


def _seals(task: Task, file: OpenFile, cmd: int, seals: int) -> int:
    """File seals: tmpfs files (memfds among them) only, EINVAL for any other file."""
    if not isinstance(file, TmpFile):
        raise SyscallError(errno.EINVAL)
    if cmd == F_GET_SEALS:
        if file.node.data is None:
            raise SyscallError(errno.EINVAL)
        return file.node.seals
    mapped = any(isinstance(f, TmpFile) and f.node is file.node
                 for f, _, _ in list(task.process.mm.shared_files.values()))
    file.add_seals(seals, mapped)
    return 0


class PipeEnd(HostFile):
    """An end of a guest pipe: the pipe's buffer is charged to the guest's memory limit
    (karn/kernel/limits.py BufferBudget) until both ends are closed."""

    def __init__(self, fd: int, flags: int, charge: Charge) -> None:
        super().__init__(fd, "", flags)
        self.charge = charge

    def close(self) -> None:
        super().close()
        self.charge.drop()


def _set_pipe_size(file: object, host: int, size: int) -> int:
    """F_SETPIPE_SZ as for an unprivileged Linux user: EPERM beyond pipe-max-size, or
    beyond what the guest's buffer budget has left."""
    pages = max(1, -(-size // 4096))
    rounded = (1 << (pages - 1).bit_length()) * 4096  # the kernel's power-of-two pages
    if rounded > PIPE_MAX_SIZE:
        raise SyscallError(errno.EPERM)
    charge = file.charge if isinstance(file, PipeEnd) else None
    if charge is not None and charge.resize(0, rounded, rounded, exact=True) is None:
        raise SyscallError(errno.EPERM)
    try:
        return fcntl.fcntl(host, F_SETPIPE_SZ, size)
    except OSError as err:
        raise host_error(err, errno.EINVAL) from None
    finally:
        if charge is not None:
            charge.settle(0, fcntl.fcntl(host, F_GETPIPE_SZ))


def sys_pipe2(task: Task, pipefd: int, flags: int) -> int:
    flags = s32(flags)
    if flags & ~(OFlag.CLOEXEC | OFlag.NONBLOCK | OFlag.DIRECT):
        raise SyscallError(errno.EINVAL)
    task.mem.read(pipefd, 8)  # EFAULT before anything is created
    try:
        r, w = os.pipe2(os.O_CLOEXEC | (os.O_NONBLOCK if flags & OFlag.NONBLOCK else 0))
    except OSError as err:  # the monitor's own limits (EMFILE, ENFILE)
        raise host_error(err) from None
    charge = Charge(buffer_budget(task.process), users=2)
    size = charge.resize(0, PIPE_DEF_SIZE, PIPE_MIN_SIZE)
    assert size is not None  # only an exact resize can fail
    if size != PIPE_DEF_SIZE:  # past the budget: a small pipe, as Linux past its soft limit
        fcntl.fcntl(w, F_SETPIPE_SZ, size)
        charge.settle(0, fcntl.fcntl(w, F_GETPIPE_SZ))
    status = flags & OFlag.NONBLOCK
    fds = task.process.fds
    cloexec = bool(flags & OFlag.CLOEXEC)
    rfile = PipeEnd(r, OFlag.RDONLY | status, charge)
    wfile = PipeEnd(w, OFlag.WRONLY | status, charge)
    try:
        rfd = fds.install(rfile, cloexec)
    except SyscallError:
        rfile.close()
        wfile.close()
        raise
    try:
        wfd = fds.install(wfile, cloexec)
    except SyscallError:
        wfile.close()
        fds.close(rfd)
        raise
    task.mem.write(pipefd, rfd.to_bytes(4, "little") + wfd.to_bytes(4, "little"))
    return 0


def sys_pipe(task: Task, pipefd: int) -> int:
    return sys_pipe2(task, pipefd, 0)


def sys_ioctl(task: Task, fd: int, request: int, arg: int) -> int:
    fd, req = s32(fd), u32(request)
    fds = task.process.fds
    file = fds.get(fd)
    if req == FIOCLEX or req == FIONCLEX:
        fds.set_cloexec(fd, req == FIOCLEX)
        return 0
    if req == FIONBIO:
        on = task.mem.read_u32(arg) != 0
        file.set_status_flags((file.flags & OFlag.APPEND) | (OFlag.NONBLOCK if on else 0))
        return 0
    if req == FIOASYNC:  # signal-driven I/O is not sent, as F_SETFL's O_ASYNC is ignored
        task.mem.read_u32(arg)
        return 0
    if req == FIONREAD:
        if file.is_dir:
            raise SyscallError(errno.ENOTTY)
        task.mem.write_u32(arg, min(file.available(), 0x7FFFFFFF))
        return 0
    # a file with ioctls of its own (a pty master, a channel's port) answers them first
    own_ioctl = getattr(file, "own_ioctl", None)
    if own_ioctl is not None:
        done = own_ioctl(task, req, arg)
        if done is not None:
            return done
    host = file.host_fd()
    if host is None or not os.isatty(host):
        raise SyscallError(errno.ENOTTY)
    if tty.is_terminal(host):
        if req in tty.CHANGES:
            tty.check_background_change(task)
        return _terminal_ioctl(task, req, arg) if req in _TERMINAL_OWN else _tty_pass(
            task, host, req, arg)
    if req == TIOCGPGRP:
        task.mem.write_u32(arg, task.process.pid)
        return 0
    return _tty_pass(task, host, req, arg)


_TERMINAL_OWN = (TIOCSCTTY, TIOCGPGRP, TIOCSPGRP, TIOCNOTTY, TIOCGSID)


def _terminal_ioctl(task: Task, req: int, arg: int) -> int:
    """The controlling terminal's job control, on the guest's groups (karn/kernel/tty.py)."""
    proc = task.process
    if req == TIOCGPGRP:
        task.mem.write_u32(arg, tty.foreground(proc))
    elif req == TIOCSPGRP:
        tty.set_foreground(proc, s32(task.mem.read_u32(arg)))
    elif req == TIOCSCTTY:
        tty.check_controlling(proc)
    elif req == TIOCGSID:
        if tty.own_session(proc) != tty.SESSION:
            raise SyscallError(errno.ENOTTY)
        task.mem.write_u32(arg, tty.SESSION)
    elif tty.own_session(proc) != tty.SESSION:  # TIOCNOTTY
        raise SyscallError(errno.ENOTTY)
    return 0


def _tty_pass(task: Task, host: int, req: int, arg: int) -> int:
    if req not in _TTY_PASS:
        raise SyscallError(errno.ENOTTY)
    size_in, size_out = _TTY_PASS[req]
    buf = bytearray(task.mem.read(arg, size_in) if size_in else bytes(size_out))
    try:
        fcntl.ioctl(host, req, buf)
    except OSError as err:
        raise host_error(err, errno.ENOTTY) from None
    if size_out:
        task.mem.write(arg, bytes(buf[:size_out]))
    return 0


def sys_close_range(task: Task, first: int, last: int, flags: int) -> int:
    first, last, flags = u32(first), u32(last), u32(flags)
    if flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC) or first > last:
        raise SyscallError(errno.EINVAL)
    task.process.fds.close_range(first, last, cloexec_only=bool(flags & CLOSE_RANGE_CLOEXEC))
    return 0


def sys_flock(task: Task, fd: int, operation: int) -> int:
    from karn.kernel.fs.locks import flock

    return flock(task, task.process.fds.get(s32(fd)), s32(operation))


def sys_fadvise64(task: Task, fd: int, offset: int, length: int, advice: int) -> int:
    file = task.process.fds.get(s32(fd))
    if file.is_pipe:
        raise SyscallError(errno.ESPIPE)
    if not 0 <= s32(advice) <= 5:
        raise SyscallError(errno.EINVAL)
    return 0


HANDLERS = {
    "close": sys_close,
    "dup": sys_dup,
    "dup2": sys_dup2,
    "dup3": sys_dup3,
    "fcntl": sys_fcntl,
    "pipe": sys_pipe,
    "pipe2": sys_pipe2,
    "ioctl": sys_ioctl,
    "close_range": sys_close_range,
    "flock": sys_flock,
    "fadvise64": sys_fadvise64,
}
NOTES = {
    "fcntl": "record locks (F_SETLK, F_OFD_*) on host-backed files (volumes, tmpfs once "
    "the run has forked) are host locks, so they hold between the guest's processes; "
    "F_SETLKW is polled (no EDEADLK); on in-memory tmpfs (one process) they are granted; "
    "F_SETOWN/F_GETOWN are no-ops; F_SETFL changes only O_APPEND and O_NONBLOCK (no "
    "O_ASYNC, so F_SETSIG's signal, kept per open file description for F_GETSIG, is never "
    "sent); F_GETLEASE is F_UNLCK; F_SETLEASE and F_NOTIFY are EINVAL, logged once",
    "ioctl": "FIONREAD, FIONBIO, FIOCLEX, FIONCLEX, FIOASYNC (accepted, no SIGIO); "
    "TCGETS/TCSETS*/TIOC[GS]WINSZ reach the host only when the fd is a host tty; with "
    "`karn run -t`, TIOC[GS]PGRP, TIOCSCTTY, TIOCGSID, TIOCNOTTY on the terminal act on the "
    "guest's process groups; TIOCGPTN/TIOCSPTLCK/TIOCGPTLCK/TIOCGPTPEER on /dev/ptmx; "
    "TIOCSCTTY/TIOCGSID/TIOCNOTTY on the guest's own ptys make, report and drop its "
    "controlling terminal (no job control on those); anything else ENOTTY",
    "close_range": "CLOSE_RANGE_UNSHARE is accepted (one fd table)",
    "flock": "host flock on host-backed files (volumes, tmpfs once the run has forked), "
    "shared by forked processes as Linux shares the open file; a blocking lock is polled; "
    "granted on in-memory tmpfs (one process)",
    "fadvise64": "advice is accepted and ignored",
}
