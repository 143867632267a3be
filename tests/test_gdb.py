"""Debian's real gdb, in batch mode, against `karn run --gdb`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

GDB = shutil.which("gdb")


class Session:
    def __init__(self, gdb: subprocess.CompletedProcess[str], karn_rc: int, karn_out: bytes,
                 karn_err: bytes) -> None:
        self.gdb = gdb.stdout + gdb.stderr
        self.rc = karn_rc
        self.out = karn_out
        self.err = karn_err.decode(errors="replace")


def debug(exe: Path, commands: list[str], *args: str, karn_opts: tuple[str, ...] = ()) -> Session:
    """Start karn with --gdb on a free port, run gdb's batch commands against it."""
    if GDB is None:
        pytest.fail("gdb not found (apt-get install gdb)", pytrace=False)
    karn = subprocess.Popen(
        [sys.executable, "-m", "karn", "run", "--gdb", "127.0.0.1:0", *karn_opts, str(exe),
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    try:
        line = karn.stderr.readline().decode()
        m = re.search(r"waiting for gdb on 127\.0\.0\.1:(\d+)", line)
        assert m, line + karn.stderr.read().decode()
        cmd = [GDB, "-batch", "-nx", "-ex", "set confirm off", "-ex", "set pagination off",
               "-ex", f"target remote 127.0.0.1:{m[1]}"]
        for c in commands:
            cmd += ["-ex", c]
        gdb = subprocess.run([*cmd, str(exe)], capture_output=True, text=True, timeout=120)
        out, err = karn.communicate(timeout=60)
    finally:
        if karn.poll() is None:
            karn.kill()
            karn.wait()
    return Session(gdb, karn.returncode, out, line.encode() + err)


@pytest.mark.parametrize("variant", ["dynamic", "static"])
def test_break_bt_registers_locals_and_exit(build, variant):
    exe = build("debug_gdb", variant, extra_flags=["-O0", "-pthread"])
    s = debug(exe, [
        "break main", "continue", "set backtrace past-main on", "bt", "info registers rip",
        "break compute", "continue", "bt", "finish", "next", "print answer",
        "info registers fs_base", "continue",
    ])
    g = s.gdb
    assert "Breakpoint 1, main (argc=1" in g, g
    # bt at main (past-main: gdb stops at main by default): main and its caller in libc
    assert re.search(r"#0\s+main \(argc=1.*\n#1\s+0x[0-9a-f]+ in __libc_start_\w*main", g), g
    assert re.search(r"^rip\s+0x[0-9a-f]+\s+0x[0-9a-f]+ <main\+\d+>", g, re.M), g
    assert re.search(r"#0\s+compute \(n=6\).*\n#1\s+0x[0-9a-f]+ in main \(", g), g
    assert "Value returned is $1 = 21" in g, g
    assert "$2 = 42" in g, g
    fs_base = re.search(r"^fs_base\s+(0x[0-9a-f]+)", g, re.M)
    assert fs_base and int(fs_base[1], 16) != 0, g  # TLS is set up before main
    assert "exited normally" in g, g
    assert s.rc == 0, s.err
    assert s.out == b"answer 42\n"


def test_info_threads_shows_four_threads(build):
    exe = build("debug_gdb", "dynamic", extra_flags=["-O0", "-pthread"])
    s = debug(exe, ["break checkpoint", "continue", "info threads", "thread 3", "bt",
                    "continue"], "threads")
    g = s.gdb
    rows = re.findall(r"^\*?\s+(\d)\s+Thread (\d+)", g, re.M)
    assert [r[0] for r in rows] == ["1", "2", "3", "4"], g
    assert re.search(r"^\*\s+1\s+Thread 1 .*checkpoint \(value=42\)", g, re.M), g
    assert re.search(r"in worker \(arg=0x0\) at .*debug_gdb\.c:\d+", g), g  # thread 3's bt
    assert "exited normally" in g, g
    assert s.rc == 0 and s.out == b"answer 42\n", s.err


def test_a_step_of_a_thread_parked_as_its_call_returns_keeps_the_result(build):
    """A thread stops at a breakpoint while main sleeps; main's nanosleep returns meanwhile
    and main parks there. With scheduler-locking, gdb steps main alone (`vCont;s:1`): the
    other thread stays stopped (the stub once resumed every thread, and gdb 13 died of an
    internal error), and main goes on from the call's return with the call's result: the
    step's trap flag once replaced the context the call returned with, and nanosleep gave
    -1 (rax still the call's number). gdb reads the result in rax there (it read 230,
    clock_nanosleep's number)."""
    exe = build("debug_gdb", "static", extra_flags=["-O0", "-pthread"])
    s = debug(exe, ["break checkpoint", "continue", "shell sleep 0.3",
                    "set scheduler-locking step", "thread 1", "print $rax", "stepi",
                    "continue"], "sleeper")
    assert re.search(r"Thread 2 hit Breakpoint 1, checkpoint ", s.gdb), s.gdb
    assert "$1 = 0\n" in s.gdb, s.gdb  # the call's result, not its number
    assert re.search(r"^0x[0-9a-f]+ in clock_nanosleep", s.gdb, re.M), s.gdb  # the step
    assert "internal-error" not in s.gdb, s.gdb
    assert s.rc == 0 and s.out == b"sleeper ok\nanswer 42\n", (s.out, s.gdb)


def test_a_stop_after_another_thread_was_selected_shows_the_stopped_one(build):
    """gdb selects thread 3 (Hg3), then continues; main stops at its next breakpoint, and
    gdb reads the registers of the thread the stop names without a new Hg, as gdbserver
    lets it: the stub must not answer with thread 3's still (the frame shown was a
    worker's)."""
    exe = build("debug_gdb", "dynamic", extra_flags=["-O0", "-pthread"])
    s = debug(exe, ["break checkpoint", "continue", "thread 3", "bt 1", "tbreak printf",
                    "continue", "bt 1", "continue"], "threads")
    assert re.search(r"Thread 1 \S* ?hit Temporary breakpoint 2, .*printf", s.gdb), s.gdb
    assert re.search(r"^#0 .*printf", s.gdb.split("Temporary breakpoint 2,")[-1], re.M), s.gdb
    assert s.rc == 0 and s.out == b"answer 42\n", s.err


def test_stepi_moves_one_instruction(build):
    exe = build("debug_gdb", "static", extra_flags=["-O0", "-pthread"])
    s = debug(exe, ["break compute", "continue", "print $pc", "stepi", "print $pc",
                    "x/i $pc", "kill"])
    pcs = [int(x, 16) for x in re.findall(r"^\$\d+ = \(void \(\*\)\(\)\) (0x[0-9a-f]+)",
                                          s.gdb, re.M)]
    assert len(pcs) == 2 and 0 < pcs[1] - pcs[0] <= 15, s.gdb
    assert f"=> {pcs[1]:#x} <compute+" in s.gdb, s.gdb
    assert s.rc == 137, s.err  # killed from gdb


def test_detach_lets_the_program_finish(build):
    exe = build("debug_gdb", "static", extra_flags=["-O0", "-pthread"])
    s = debug(exe, ["break compute", "continue", "detach"])
    assert "Breakpoint 1, compute" in s.gdb, s.gdb
    assert s.rc == 0 and s.out == b"answer 42\n", s.err


def test_gdb_sees_a_crash_as_a_signal(build):
    exe = build("debug_lib_crash", "dynamic")
    s = debug(exe, ["continue", "bt", "continue"])
    g = s.gdb
    assert "Program received signal SIGSEGV" in g, g
    assert re.search(r"#1\s+0x[0-9a-f]+ in main \(", g), g
    assert s.rc == 139, s.err


def test_bad_gdb_address_is_one_line(karn):
    got = karn("--gdb", "localhost:http", "/bin/busybox", "true")
    assert got.returncode == 125
    assert got.stderr.decode().splitlines() == [
        "karn: --gdb: invalid address 'localhost:http' (use [HOST:]PORT)"]
