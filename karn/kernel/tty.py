"""The controlling terminal of `karn run -t`: the guest's stdio is a host pty's slave
(karn/run/terminal.py), and session 1 (pid 1's) has it as its controlling terminal.

The host pty's line discipline does the terminal's work (echo, line editing, termios) and
sends its signals (Ctrl-C, Ctrl-\\, Ctrl-Z, a resize) to the host process group of the pty:
every guest process's monitor. Guest process groups are the process table's, not the
host's, so each monitor passes such a signal to its own guest process only when that
process is in the terminal's guest foreground group (tcsetpgrp): the group the line
discipline would have chosen. The foreground group lives in the first monitor, with the
table (coordinator.py ops "tcgetpgrp", "tcsetpgrp"); before the first fork pid 1 keeps it.
For the same reason the host kernel's own job-control checks never fire (every monitor is
in the host's foreground group): a read or a change of the terminal from a guest
background group is checked here, and stops that group (SIGTTIN, SIGTTOU) as Linux would.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading

from karn.abi.errno import ERESTARTSYS, SyscallError
from karn.abi.signals import SI_KERNEL, SIGTTIN, SIGTTOU
from karn.hints import TYPE_CHECKING
from karn.kernel import jobcontrol
from karn.kernel.signals import SIG_IGN, SigInfo, bit

if TYPE_CHECKING:
    import signal

    from karn.kernel.process import Process, Task
    from karn.kernel.proctable import ProcTable
else:  # the C module: `signal` makes enums of its names at import, ~0.5 ms of start-up
    import _signal as signal

# tcgetattr's ioctl, without the termios module (~0.3 ms of every start-up to import):
# the kernel's struct termios is 36 bytes, c_lflag the fourth 32-bit word
TCGETS, TERMIOS_SIZE, C_LFLAG, TOSTOP = 0x5401, 36, 12, 0o400
# the controlling terminal's ioctls (fs/sys_fd.py on -t's terminal, fs/pty.py on a guest pty)
TIOCSCTTY, TIOCNOTTY, TIOCGSID = 0x540E, 0x5422, 0x5429

# What the line discipline sends. The monitors catch SIGTSTP (Ctrl-Z) with a handler: left
# at SIG_DFL, the host kernel would discard it for their orphaned host process group.
TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGWINCH, signal.SIGTSTP)
SESSION = 1  # pid 1's session holds the terminal from the start, as docker's -t


class Terminal:
    """Whether this run has a terminal, and (in the first monitor) its foreground group."""

    def __init__(self) -> None:
        self.active = False
        self.fd = -1  # the monitor's own copy of the pty's slave
        self.rdev = 0
        self.number: int | None = None  # its N in /dev/pts
        self.foreground = SESSION


TERMINAL = Terminal()


def activate(slave: int) -> None:
    """This run's guest stdio is the pty whose slave is `slave` (called in the monitor
    before the guest is built)."""
    from karn.kernel.fs.pty import pty_number

    TERMINAL.fd = os.dup(slave)
    os.set_inheritable(TERMINAL.fd, False)
    TERMINAL.rdev = os.fstat(slave).st_rdev
    TERMINAL.number = pty_number(TERMINAL.rdev)
    TERMINAL.active = True


def is_terminal(host_fd: int) -> bool:
    """Whether a guest file's host fd is the controlling terminal."""
    if not TERMINAL.active:
        return False
    try:
        return os.fstat(host_fd).st_rdev == TERMINAL.rdev
    except OSError:
        return False


def host_signals() -> tuple[int, ...]:
    """Host signals a monitor must catch for the terminal, beyond those it forwards."""
    return (signal.SIGWINCH, signal.SIGTSTP) if TERMINAL.active else ()


def is_terminal_signal(signum: int) -> bool:
    return TERMINAL.active and signum in TERMINAL_SIGNALS


def deliver_terminal_signal(proc: Process, signum: int) -> None:
    """From a monitor's host signal handler: the signal goes to the guest process if it is
    in the foreground group. Asking the table may wait for its lock, so not in the handler."""
    def deliver() -> None:
        try:
            if own_group(proc) != foreground(proc):
                return
        except (SyscallError, OSError):
            return  # the table is gone: the run is ending
        if not proc.done.is_set():
            proc.signal_process(SigInfo.from_sender(signum, SI_KERNEL, 0))

    threading.Thread(target=deliver, name="karn-tty-signal", daemon=True).start()


def own_group(proc: Process) -> int:
    return proc.pid if proc.link is None else proc.link.call("getpgid", 0)


def own_session(proc: Process) -> int:
    return proc.pid if proc.link is None else proc.link.call("getsid", 0)


def foreground(proc: Process) -> int:
    """tcgetpgrp: ENOTTY for a process outside the terminal's session."""
    if proc.link is None:
        return TERMINAL.foreground
    return proc.link.call("tcgetpgrp")


def set_foreground(proc: Process, pgrp: int) -> None:
    """tcsetpgrp: a group of the caller's session, which must be the terminal's."""
    if pgrp < 0:
        raise SyscallError(errno.EINVAL)
    if proc.link is None:
        if pgrp != proc.pid:
            raise SyscallError(errno.EPERM)
        TERMINAL.foreground = pgrp
        return
    proc.link.call("tcsetpgrp", pgrp)


def check_background_read(task: Task) -> None:
    """Before a read of the terminal: a process outside its foreground group gets SIGTTIN
    (its whole group does) and the read restarts once it is continued, as Linux's job
    control; EIO when SIGTTIN is ignored or blocked. Alone (never forked), pid 1 is the
    foreground."""
    proc = task.process
    if proc.link is None or proc.link.call("tty_foreground"):
        return
    if proc.actions[SIGTTIN].handler == SIG_IGN or task.blocked & bit(SIGTTIN) \
            or jobcontrol.orphaned(proc):
        raise SyscallError(errno.EIO)
    _stop_group(proc, SIGTTIN)


# ioctls that change the terminal: from the background, SIGTTOU first (Linux's
# tty_check_change): TCSETS, TCSETSW, TCSETSF, TIOCSPGRP
CHANGES = (0x5402, 0x5403, 0x5404, 0x5410)


def check_background_change(task: Task) -> None:
    """Before a change of the terminal's modes or foreground group: a process outside
    its foreground group gets SIGTTOU (its group does) and the call restarts once it is
    continued; allowed when SIGTTOU is ignored or blocked (how a shell takes the terminal
    back), EIO in an orphaned group."""
    proc = task.process
    if proc.link is None or proc.link.call("tty_foreground"):
        return
    if proc.actions[SIGTTOU].handler == SIG_IGN or task.blocked & bit(SIGTTOU):
        return
    if jobcontrol.orphaned(proc):
        raise SyscallError(errno.EIO)
    _stop_group(proc, SIGTTOU)


def check_background_write(task: Task, host_fd: int) -> None:
    """Before a write to the terminal: with TOSTOP set (stty tostop), a process outside
    its foreground group is stopped as by a change (SIGTTOU)."""
    attrs = bytearray(TERMIOS_SIZE)
    try:
        fcntl.ioctl(host_fd, TCGETS, attrs)
    except OSError:
        return  # not a terminal after all: the write reports what is wrong
    if not int.from_bytes(attrs[C_LFLAG : C_LFLAG + 4], "little") & TOSTOP:
        return
    check_background_change(task)


def _stop_group(proc: Process, sig: int) -> None:
    link = proc.link
    assert link is not None
    if link.call("kill", -own_group(proc), sig):  # the others; the caller's own here
        proc.signal_process(SigInfo.from_sender(sig, SI_KERNEL, 0))
    raise SyscallError(ERESTARTSYS)


def check_controlling(proc: Process) -> None:
    """TIOCSCTTY: only the terminal's own session leader (it already has it)."""
    if own_session(proc) != SESSION or proc.pid != SESSION:
        raise SyscallError(errno.EPERM)


# -- in the first monitor, under the table's lock (coordinator.py) ---------------------------

def table_getpgrp(table: ProcTable, caller: int) -> int:
    if table.get(caller).sid != SESSION:
        raise SyscallError(errno.ENOTTY)
    return TERMINAL.foreground


def table_in_foreground(table: ProcTable, caller: int) -> bool:
    """Whether the caller may read the terminal: in its foreground group, or outside
    its session (the terminal is not its controlling one)."""
    entry = table.get(caller)
    return entry.sid != SESSION or entry.pgid == TERMINAL.foreground


def table_setpgrp(table: ProcTable, caller: int, pgrp: int) -> None:
    if table.get(caller).sid != SESSION:
        raise SyscallError(errno.ENOTTY)
    if not any(e.pgid == pgrp and e.sid == SESSION and not e.zombie
               for e in table.entries.values()):
        raise SyscallError(errno.EPERM)
    TERMINAL.foreground = pgrp
