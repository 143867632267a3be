"""Pseudo-terminals of the guest: /dev/ptmx, /dev/pts/N and /dev/tty, each on a real
host pty, so termios, echo, line editing and the signal characters are the host kernel's.

Opening /dev/ptmx opens the host's /dev/ptmx; N is the host pty's number (TIOCGPTN), so
the terminal of `karn run -t` (karn/kernel/tty.py) and the guest's own ptys share one
numbering. The host pty is unlocked at once; the guest's lock (TIOCSPTLCK, which
unlockpt clears) is kept here and checked when /dev/pts/N is opened, which opens the
host slave through the master (TIOCGPTPEER: no host path is looked up).

A session leader may make one of its ptys its controlling terminal (TIOCSCTTY: login_tty,
forkpty, Python's pty.fork): it is then the process's /dev/tty, kept across fork and
execve and dropped by setsid and TIOCNOTTY (without the SIGHUP Linux then sends a session
leader's foreground group). A monitor serves one process, so this is the monitor's own
record. There is no job control on such a pty: the signal characters the host's line
discipline sends reach no guest process group, and TIOCSPGRP is refused.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import threading

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING
from karn.kernel.fs.constants import O_ACCMODE, OFlag
from karn.kernel.fs.file import HostFile, host_error
from karn.kernel.fs.stat import Stat
from karn.kernel.tty import SESSION, TERMINAL, TIOCGSID, TIOCNOTTY, TIOCSCTTY, own_session

if TYPE_CHECKING:
    from karn.kernel.process import Task

TIOCGPTN, TIOCSPTLCK, TIOCGPTLCK, TIOCGPTPEER = 0x80045430, 0x40045431, 0x80045439, 0x5441
PTY_MAJOR_FIRST, PTY_MAJOR_LAST = 136, 143  # Unix98 pty slaves


def pty_number(rdev: int) -> int | None:
    """The N of /dev/pts/N from a slave's device number; None for any other device."""
    major = os.major(rdev)
    if not PTY_MAJOR_FIRST <= major <= PTY_MAJOR_LAST:
        return None
    return (major - PTY_MAJOR_FIRST) * 256 + os.minor(rdev)


class PtyMaster(HostFile):
    """The guest's end of /dev/ptmx."""

    def __init__(self, fd: int, flags: int) -> None:
        super().__init__(fd, "/dev/ptmx", flags)
        self.locked = True  # as Linux: the slave cannot be opened before unlockpt
        self.number = struct.unpack("I", fcntl.ioctl(fd, TIOCGPTN, bytes(4)))[0]
        peer = self.open_peer(os.O_RDONLY)
        try:
            self.slave_stat = Stat.from_host(os.fstat(peer))
        finally:
            os.close(peer)

    def open_peer(self, flags: int) -> int:
        try:
            return fcntl.ioctl(self.fd, TIOCGPTPEER, flags | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as err:
            raise host_error(err, errno.EIO) from None

    def own_ioctl(self, task: Task, request: int, arg: int) -> int | None:
        """The master's own ioctls; None for one the caller passes on."""
        if request == TIOCGPTN:
            task.mem.write_u32(arg, self.number)
        elif request == TIOCSPTLCK:
            self.locked = task.mem.read_u32(arg) != 0
        elif request == TIOCGPTLCK:
            task.mem.write_u32(arg, int(self.locked))
        elif request == TIOCGPTPEER:
            return self.open_slave(task, arg & (O_ACCMODE | OFlag.NONBLOCK | OFlag.CLOEXEC))
        else:
            return None
        return 0

    def open_slave(self, task: Task, flags: int) -> int:
        if self.locked:
            raise SyscallError(errno.EIO)
        slave = PtySlave(self.open_peer(flags & (O_ACCMODE | OFlag.NONBLOCK)), self.number,
                         flags & ~OFlag.CLOEXEC)
        return task.process.fds.install(slave, bool(flags & OFlag.CLOEXEC))

    def reopen(self, flags: int) -> HostFile:
        raise SyscallError(errno.ENXIO)

    def close(self) -> None:
        PTYS.forget(self)
        super().close()


class PtySlave(HostFile):
    def __init__(self, fd: int, number: int, flags: int) -> None:
        super().__init__(fd, f"/dev/pts/{number}", flags)
        self.number = number

    def own_ioctl(self, task: Task, request: int, arg: int) -> int | None:
        """The pty as the caller's controlling terminal (see the module docstring); None
        for the ioctls the caller passes on."""
        if request == TIOCSCTTY:
            if PTYS.controlling == self.number:
                return 0  # its own already
            proc = task.process
            session = own_session(proc)
            # EPERM, as Linux: not a session leader, or its session has a terminal
            if session != proc.pid or PTYS.controlling is not None or (
                    TERMINAL.active and session == SESSION):
                raise SyscallError(errno.EPERM)
            PTYS.take_controlling(self.number, self.fd)
            return 0
        if request in (TIOCNOTTY, TIOCGSID):
            if PTYS.controlling != self.number:
                raise SyscallError(errno.ENOTTY)
            if request == TIOCGSID:
                task.mem.write_u32(arg, own_session(task.process))
            else:
                PTYS.drop_controlling()
            return 0
        return None


class PtyRegistry:
    """The host ptys this monitor's guest opened (/dev/ptmx), by number; the terminal's
    number stands for itself."""

    def __init__(self) -> None:
        self._masters: dict[int, PtyMaster] = {}
        self._lock = threading.Lock()
        self.controlling: int | None = None  # this process's controlling pty, if it set one
        self._controlling_fd = -1  # a copy of its slave: /dev/tty (the master may be closed)

    def open_master(self, flags: int) -> PtyMaster:
        host_flags = os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open("/dev/ptmx", host_flags | (flags & os.O_NONBLOCK))
        except OSError as err:
            raise host_error(err, errno.ENOSPC) from None
        try:
            fcntl.ioctl(fd, TIOCSPTLCK, struct.pack("i", 0))
            master = PtyMaster(fd, flags)
        except OSError as err:
            os.close(fd)
            raise host_error(err) from None
        except SyscallError:
            os.close(fd)
            raise
        with self._lock:
            self._masters[master.number] = master
        return master

    def take_controlling(self, number: int, slave_fd: int) -> None:
        held = os.dup(slave_fd)  # not inheritable (os.dup): no host child gets it
        self.drop_controlling()
        self.controlling, self._controlling_fd = number, held

    def drop_controlling(self) -> None:
        if self._controlling_fd >= 0:
            os.close(self._controlling_fd)
        self.controlling, self._controlling_fd = None, -1

    def open_controlling(self, flags: int) -> PtySlave:
        """/dev/tty when this process set a pty as its controlling terminal (the same
        open file as the slave it used: O_NONBLOCK is shared)."""
        assert self.controlling is not None
        return PtySlave(os.dup(self._controlling_fd), self.controlling, flags)

    def forget(self, master: PtyMaster) -> None:
        with self._lock:
            if self._masters.get(master.number) is master:
                del self._masters[master.number]

    def numbers(self) -> list[int]:
        with self._lock:
            found = set(self._masters)
        if TERMINAL.active and TERMINAL.number is not None:
            found.add(TERMINAL.number)
        return sorted(found)

    def stat(self, number: int) -> Stat:
        if TERMINAL.active and number == TERMINAL.number:
            return Stat.from_host(os.fstat(TERMINAL.fd))
        with self._lock:
            master = self._masters.get(number)
        if master is None:
            raise SyscallError(errno.ENOENT)
        return master.slave_stat

    def open_slave(self, number: int, flags: int) -> HostFile:
        if TERMINAL.active and number == TERMINAL.number:
            return open_terminal(flags)
        with self._lock:
            master = self._masters.get(number)
        if master is None:
            raise SyscallError(errno.ENOENT)
        if master.locked:
            raise SyscallError(errno.EIO)
        return PtySlave(master.open_peer(flags & (O_ACCMODE | OFlag.NONBLOCK)), number, flags)


def open_terminal(flags: int) -> HostFile:
    """/dev/tty: the controlling terminal, ENXIO without one (as Linux)."""
    if PTYS.controlling is not None:
        return PTYS.open_controlling(flags)
    if not TERMINAL.active:
        raise SyscallError(errno.ENXIO)
    from karn.kernel.fs.fdtable import StdioFile

    return StdioFile(os.dup(TERMINAL.fd), f"/dev/pts/{TERMINAL.number}", flags)


PTYS = PtyRegistry()
