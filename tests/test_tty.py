"""`karn run -it`: an interactive guest on a pty, driven as a user's terminal would drive
it (the test holds a pty whose slave is karn's stdio and types into its master)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conftest import BUSYBOX

DEADLINE = 60.0  # a loaded 2-core machine: fork and exec take a good part of a second


class UserTerminal:
    """A pty standing for the user's terminal, with a program on its slave."""

    def __init__(self, argv: Sequence[str], rows: int = 24, columns: int = 80) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.modes = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(list(argv), stdin=self.slave, stdout=self.slave,
                                     stderr=self.slave, start_new_session=True)
        self.output = b""
        self._seen = 0  # expect() looks after what it matched last

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str | bytes, timeout: float = DEADLINE) -> re.Match[bytes]:
        """Wait for pattern in the output after the last match; the match."""
        regex = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.output, self._seen)
            if found:
                self._seen = found.end()
                return found
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                pytest.fail(f"no {regex.pattern!r} in the output:\n{self.output!r}",
                            pytrace=False)

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return False
            self.output += data
        return True

    def wait(self, timeout: float = DEADLINE) -> int:
        """The program's exit status; the output is read until then."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"still running; output:\n{self.output!r}", pytrace=False)
            self._read(0.1)
        while self._read(0) and select.select([self.master], [], [], 0)[0]:
            pass
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def terminal():
    made: list[UserTerminal] = []

    def start(*argv: str | os.PathLike[str], **size: int) -> UserTerminal:
        made.append(UserTerminal([str(a) for a in argv], **size))
        return made[-1]

    yield start
    for term in made:
        term.close()


def karn_it(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "karn", "run", "-it", *map(str, args)]


PROMPT = rb"/ # "


def test_shell_runs_a_line_and_exits_with_its_status(terminal) -> None:
    term = terminal(*karn_it(BUSYBOX, "sh"))
    term.expect(PROMPT)
    assert not termios.tcgetattr(term.slave)[3] & termios.ICANON  # raw while it runs
    term.type("echo hi; exit 3\r")
    term.expect(rb"echo hi; exit 3\r\n")  # the guest's pty echoes what was typed
    term.expect(rb"hi\r\n")
    assert term.wait() == 3
    assert termios.tcgetattr(term.slave) == term.modes  # the user's modes are back
    assert b"job control turned off" not in term.output


def test_tty_names_the_guest_terminal(terminal) -> None:
    term = terminal(*karn_it(BUSYBOX, "sh"))
    term.expect(PROMPT)
    term.type("tty; ls -1 /dev/pts; exit\r")
    name = term.expect(rb"\r\n(/dev/pts/(\d+))(?=\r\n)")
    term.expect(rb"\r\n" + name.group(2) + rb"\r\n")  # listed in the guest's /dev/pts
    assert term.wait() == 0


def test_ctrl_c_interrupts_the_foreground_job_and_the_shell_stays(terminal) -> None:
    term = terminal(*karn_it(BUSYBOX, "sh"))
    term.expect(PROMPT)
    # the job prints once it is the terminal's foreground group (ash's child sets it
    # before running the command), then becomes sleep
    term.type("sh -c 'echo started; exec sleep 30'\r")
    term.expect(rb"\r\nstarted\r\n")
    started = time.monotonic()
    term.type("\x03")
    term.expect(PROMPT)
    assert time.monotonic() - started < 25  # not the sleep running out
    term.type("echo status=$?; exit 5\r")
    term.expect(rb"\r\nstatus=130\r\n")  # 128 + SIGINT: the job, not the shell
    assert term.wait() == 5


def test_ctrl_z_stops_the_foreground_job_and_fg_bg_jobs_work(terminal) -> None:
    """Ctrl-Z: SIGTSTP to the foreground group, which stops (every guest process in it);
    busybox sh sees it through waitpid(WUNTRACED), lists it, continues it in the
    background (bg) and brings it back to the foreground (fg), where it reads the
    terminal again."""
    term = terminal(*karn_it(BUSYBOX, "sh"))
    term.expect(PROMPT)
    term.type("sh -c 'echo started; read line; echo got $line'\r")
    term.expect(rb"\r\nstarted\r\n")
    term.type("\x1a")
    term.expect(rb"\[1\]\+ +Stopped +sh -c")
    term.expect(PROMPT)
    term.type("jobs; cut -d' ' -f3 /proc/$(pidof sh | tr ' ' '\\n' | sort -n | tail -1)/stat\r")
    term.expect(rb"\[1\]\+ +Stopped +sh -c")
    term.expect(rb"\r\nT\r\n")  # stopped, in /proc
    term.expect(PROMPT)
    term.type("bg; jobs\r")
    term.expect(rb"\[1\]\+ +Running +sh -c")
    term.expect(PROMPT)
    # in the background its read of the terminal gets SIGTTIN: stopped again. The shell
    # learns it by waitpid in `jobs`; builtins only, so the wait forks nothing
    term.type("while jobs >/tmp/jobs; read state </tmp/jobs; case $state in *Running*) ;;"
              " *) false;; esac; do :; done; jobs\r")
    term.expect(rb"\[1\]\+ +Stopped \(tty input\) +sh -c")
    term.expect(PROMPT)
    term.type("fg\r")
    term.type("hello\r")  # waits in the pty until the job, foreground now, reads it
    term.expect(rb"got hello\r\n")
    term.expect(PROMPT)
    term.type("echo status=$?; exit 4\r")
    term.expect(rb"\r\nstatus=0\r\n")
    assert term.wait() == 4


def test_background_job_reading_the_terminal_stops_until_fg(terminal) -> None:
    """A background job that reads the terminal gets SIGTTIN and stops (its read does
    not take the user's input); fg continues it, and the read gets the line typed."""
    term = terminal(*karn_it(BUSYBOX, "sh"))
    term.expect(PROMPT)
    term.type("head -n 1 >/tmp/got & pid=$!; until grep -q ') T ' /proc/$pid/stat; do :; done;"
              " jobs\r")
    term.expect(rb"\[1\]\+ +Stopped \(tty input\) +head -n 1")
    term.expect(PROMPT)
    term.type("fg\r")
    term.type("typed line\r")  # echoed or not: the mode the shell leaves while it waits
    term.expect(PROMPT)
    term.type("echo status=$?; cat /tmp/got; exit\r")
    term.expect(rb"\r\nstatus=0\r\ntyped line\r\n")
    assert term.wait() == 0


def test_background_job_changing_the_terminal_stops_until_fg(terminal) -> None:
    """tcsetattr from the background (stty) gets SIGTTOU: stopped "(tty output)" until
    fg, then the change is made."""
    term = terminal(*karn_it(BUSYBOX, "sh"))
    term.expect(PROMPT)
    term.type("stty -echo & pid=$!; until grep -q ') T ' /proc/$pid/stat; do :; done; jobs\r")
    term.expect(rb"\[1\]\+ +Stopped \(tty output\) +stty -echo")
    term.expect(PROMPT)
    term.type("fg\r")
    term.expect(PROMPT)
    term.type("echo status=$?; stty -a | grep -c ' -echo '; exit\r")
    term.expect(rb"status=0\r\n1\r\n")  # echo is off now: the line itself is not shown
    assert term.wait() == 0


def test_background_write_with_tostop_stops_until_fg(terminal) -> None:
    """With `stty tostop`, a background job's write to the terminal gets SIGTTOU; without
    it the write goes through."""
    term = terminal(*karn_it(BUSYBOX, "sh"))
    term.expect(PROMPT)
    term.type("stty tostop; (echo from-the-job) & pid=$!; until grep -q ') T ' /proc/$pid/stat;"
              " do :; done; jobs\r")
    term.expect(rb"\[1\]\+ +Stopped \(tty output\) +\(echo from-the-job\)")
    term.expect(PROMPT)
    term.type("fg\r")
    term.expect(rb"\r\nfrom-the-job\r\n")
    term.expect(PROMPT)
    term.type("stty -tostop; (echo free) & wait; exit\r")
    term.expect(rb"\r\nfree\r\n")
    assert term.wait() == 0


def test_ctrl_z_leaves_pid_1_running(terminal) -> None:
    """Ctrl-Z does not stop pid 1: nothing in the guest could continue it (docker's -t: a
    container's init ignores it)."""
    term = terminal(*karn_it(BUSYBOX, "sh", "-c", "echo ready; while read x; do echo got $x; done"))
    term.expect(rb"ready\r\n")
    term.type("\x1a")
    for line in ("one", "two", "three"):  # each answered: still running after the Ctrl-Z
        term.type(line + "\r")
        term.expect(rb"got " + line.encode() + rb"\r\n")
    term.type("\x04")
    assert term.wait() == 0


def test_window_size_and_its_changes_reach_the_guest(terminal) -> None:
    term = terminal(*karn_it(BUSYBOX, "sh"), rows=33, columns=99)
    term.expect(PROMPT)
    term.type("stty size; sh -c 'trap \"stty size; exit\" WINCH; echo ready; "
              "while :; do sleep 1; done'\r")
    term.expect(rb"\r\n33 99(?=\r\n)")
    term.expect(rb"\r\nready(?=\r\n)")  # the foreground job waits for SIGWINCH
    fcntl.ioctl(term.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    term.proc.send_signal(signal.SIGWINCH)  # what the user's terminal emulator does
    term.expect(rb"\r\n40 120\r\n")
    term.expect(PROMPT)
    term.type("exit\r")
    assert term.wait() == 0


def test_window_changes_during_forks_leave_every_monitor_listening(terminal) -> None:
    """Window changes while a forked shell forks 300 times: each monitor's SIGWINCH handler
    asks the table whether its process is in the foreground, and a child forked a moment before
    used to ask through its parent's link (the parent's listener died on the answer, and
    that process heard nothing from the table again: on the code before the fix, a
    KeyError in RemoteLink._listen and no "ready"). Then the shell's trap must still see
    a window change."""
    term = terminal(*karn_it(BUSYBOX, "sh"), rows=33, columns=99)
    term.expect(PROMPT)
    term.type("sh -c 'i=0; while [ $i -lt 300 ]; do /bin/busybox true; i=$((i+1)); done; "
              "echo loops done; trap \"stty size; exit\" WINCH; echo ready; "
              "while :; do sleep 1; done'\r")
    deadline = time.monotonic() + DEADLINE
    rows = 33
    while b"\nloops done" not in term.output and time.monotonic() < deadline:
        rows = 67 - rows  # a new size, told to karn as a terminal emulator does; karn
        fcntl.ioctl(term.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, 99, 0, 0))
        term.proc.send_signal(signal.SIGWINCH)  # gives it to the guest's terminal, whose
        term._read(0.005)  # foreground group (every monitor) the host kernel signals
    term.expect(rb"\r\nloops done(?=\r\n)")
    term.expect(rb"\r\nready(?=\r\n)")
    fcntl.ioctl(term.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    term.proc.send_signal(signal.SIGWINCH)
    term.expect(rb"\r\n40 120\r\n")
    term.expect(PROMPT)
    assert b"Exception" not in term.output and b"Traceback" not in term.output
    term.type("exit\r")
    assert term.wait() == 0


def on_a_terminal_as_native(terminal, build, name: str, variant: str) -> bytes:
    """Build tests/programs/NAME.c (with libutil for glibc), run it on a terminal natively
    and under `karn run -it`; both must succeed and print the same. Its output."""
    program = build(name, variant, ("-lutil",) if variant == "static" else ())
    native = terminal(program)
    native_status = native.wait()
    guest = terminal(*karn_it(program))
    assert guest.wait() == native_status == 0
    assert guest.output == native.output
    return guest.output


@pytest.mark.parametrize("variant", ["static", "musl-static"])
def test_guest_program_opens_its_own_pty(terminal, build, variant: str) -> None:
    on_a_terminal_as_native(terminal, build, "tty_openpty", variant)


@pytest.mark.parametrize("variant", ["static", "musl-static"])
def test_a_session_on_its_own_pty_as_login_tty_makes_it(terminal, build, variant: str) -> None:
    """setsid, TIOCSCTTY on the program's own pty, then /dev/tty in the session leader and
    its child (forkpty and Python's pty.fork: TIOCSCTTY was ENOTTY, so their child died)."""
    output = on_a_terminal_as_native(terminal, build, "tty_login", variant)
    assert b"its child wrote through /dev/tty" in output


def test_killed_monitor_leaves_the_terminal_restored(terminal) -> None:
    term = terminal(*karn_it(BUSYBOX, "sh"))
    term.expect(PROMPT)
    monitor = _child_of(term.proc.pid)
    os.kill(monitor, signal.SIGKILL)  # a crash of karn's monitor: the relay still cleans up
    assert term.wait() == 128 + signal.SIGKILL
    assert termios.tcgetattr(term.slave) == term.modes


def test_interactive_tty_needs_a_terminal(tmp_path: Path) -> None:
    result = subprocess.run(karn_it(BUSYBOX, "true"), stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=DEADLINE)
    assert result.returncode != 0
    assert result.stderr.startswith(b"karn: -it needs a terminal")
    assert b"Traceback" not in result.stderr


def test_without_tty_there_is_no_controlling_terminal(karn, build) -> None:
    result = karn(BUSYBOX, "sh", "-c", "echo x > /dev/tty")
    assert result.returncode != 0
    assert b"No such device or address" in result.stderr
    # under the sandbox a guest's own pty needs -t (docs/cli.md)
    program = build("tty_openpty", "static", ("-lutil",))
    result = karn(program)
    assert result.returncode == 1
    assert b"posix_openpt: Permission denied" in result.stderr


def _child_of(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])
