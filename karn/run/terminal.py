"""`karn run -t`: the guest's stdio on a new pty, as docker's -t.

karn forks: the child leads a new session with the pty's slave as its controlling
terminal and stdio, and goes on to be the first monitor (karn/kernel/tty.py gives the
guest the terminal); the parent relays bytes between the user's terminal and the pty's
master, the user's terminal in raw mode (with -i) so every key reaches the pty's line
discipline, which echoes, edits lines and turns Ctrl-C into a signal. The parent restores
the terminal's modes on every way out, passes window size changes on, forwards the
signals it is sent, and ends with the child's exit status.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import termios
import time
import tty as host_tty
from collections.abc import Callable

from karn.errors import UsageError
from karn.kernel import tty

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
             signal.SIGUSR2)
CHUNK = 1 << 16
DRAIN_SECONDS = 2.0  # after the monitor ends, how long output still held by others may come


def run_in_terminal(interactive: bool, body: Callable[[], int]) -> int:
    """Run body() (the guest's run) in a child whose stdio is a new pty; the exit status."""
    if interactive and not os.isatty(0):
        raise UsageError("-it needs a terminal on stdin (the input device is not a TTY)")
    master, slave = os.openpty()
    _copy_size(master)
    pid = os.fork()
    if pid == 0:
        os.close(master)
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        os.close(slave)
        tty.activate(0)
        return body()
    os.close(slave)
    return Relay(master, pid, interactive).run()


def _user_terminal() -> int | None:
    for fd in (0, 1):
        if os.isatty(fd):
            return fd
    return None


def _copy_size(master: int) -> None:
    user = _user_terminal()
    if user is not None:
        size = fcntl.ioctl(user, termios.TIOCGWINSZ, bytes(8))
        fcntl.ioctl(master, termios.TIOCSWINSZ, size)


class Relay:
    def __init__(self, master: int, child: int, interactive: bool) -> None:
        self.master = master
        self.child = child
        self.interactive = interactive
        self.status: int | None = None

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._forward) for sig in FORWARDED}
        previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, self._resize)
        raw = self.interactive and os.isatty(0)
        saved = termios.tcgetattr(0) if raw else None
        try:
            if raw:
                host_tty.setraw(0)
            self._relay()
        finally:
            if saved is not None:
                _restore(saved)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self.master)
        if self.status is None:  # the relay failed: the child goes too
            self.status = self._wait_child(kill=True)
        return self.status

    def _relay(self) -> None:
        pidfd = os.pidfd_open(self.child)
        watched = [self.master, pidfd] + ([0] if self.interactive else [])
        deadline: float | None = None
        try:
            while True:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select(watched, [], [], timeout)
                if not ready:
                    return  # the child ended and the output stopped coming
                if pidfd in ready:
                    self.status = self._wait_child(kill=False)
                    watched = [self.master]
                    deadline = time.monotonic() + DRAIN_SECONDS
                if self.master in ready and not self._copy_output():
                    if self.status is None:
                        self.status = self._wait_child(kill=False)
                    return
                if 0 in ready and not self._copy_input():
                    watched.remove(0)
        finally:
            os.close(pidfd)

    def _copy_output(self) -> bool:
        try:
            data = os.read(self.master, CHUNK)
        except OSError as err:
            if err.errno == errno.EIO:  # no slave left open: the guest is gone
                return False
            raise
        _write_all(1, data)
        return bool(data)

    def _copy_input(self) -> bool:
        data = os.read(0, CHUNK)
        if data:
            _write_all(self.master, data)
        return bool(data)

    def _wait_child(self, kill: bool) -> int:
        if kill:
            os.kill(self.child, signal.SIGKILL)
        _, wstatus = os.waitpid(self.child, 0)
        code = os.waitstatus_to_exitcode(wstatus)
        return code if code >= 0 else 128 - code

    def _forward(self, signum: int, frame: object) -> None:
        if self.status is None:
            os.kill(self.child, signum)

    def _resize(self, signum: int, frame: object) -> None:
        _copy_size(self.master)  # the kernel sends SIGWINCH to the pty's foreground group


def _restore(modes: list) -> None:
    try:
        termios.tcsetattr(0, termios.TCSADRAIN, modes)
    except termios.error:
        pass  # the terminal itself is gone (hung up): nothing to restore


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
