"""--trace and --trace-summary against what the programs really do (strace natively)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BUSYBOX = "/bin/busybox"
LINE = re.compile(r"^\[(\d+)\] (\d+\.\d+) (\w+)\((.*)\) = (.+?)(?: <(\d+\.\d+)>)?$")


def trace_lines(stderr: bytes) -> list[re.Match[str]]:
    out = []
    for line in stderr.decode(errors="replace").splitlines():
        m = LINE.match(line)
        if m:
            out.append(m)
    return out


@pytest.fixture()
def data_dir(tmp_path_factory) -> Path:
    # outside /tmp: the guest's /tmp is its own tmpfs
    d = Path(subprocess.check_output(["mktemp", "-d", "-p", "/var/tmp"], text=True).strip())
    (d / "f.txt").write_bytes(b"hello trace\n")
    yield d
    subprocess.run(["rm", "-rf", str(d)])


def test_trace_cat_shows_open_path_and_byte_counts(karn, data_dir):
    got = karn("--trace", "-v", f"{data_dir}:/data:ro", BUSYBOX, "cat", "/data/f.txt")
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"hello trace\n"
    lines = trace_lines(got.stderr)
    calls = [(m[3], m[4], m[5]) for m in lines]
    assert ("openat", 'AT_FDCWD, "/data/f.txt", O_RDONLY', "3") in calls, calls
    # busybox cat copies with sendfile (as natively): 12 bytes from fd 3 to fd 1
    assert ("sendfile", "1, 3, NULL, 16777216", "12") in calls, calls
    assert calls[-1][0] == "exit_group" and calls[-1][2] == "?"
    assert all(m[1] == "1" for m in lines)
    times = [float(m[2]) for m in lines]
    assert times == sorted(times)


def test_trace_read_and_write_show_buffers_and_counts(karn, data_dir):
    got = karn("--trace=read,write,openat", "-v", f"{data_dir}:/data:ro",
               BUSYBOX, "head", "-n1", "/data/f.txt")
    assert got.returncode == 0, got.stderr
    calls = [(m[3], m[4], m[5]) for m in trace_lines(got.stderr)]
    assert ("read", '3, "hello trace\\n", 4096', "12") in calls, calls
    assert ("write", '1, "hello trace\\n", 12', "12") in calls, calls
    assert {c[0] for c in calls} <= {"read", "write", "openat"}, calls


def test_trace_errors_are_named(karn):
    got = karn("--trace=file", BUSYBOX, "cat", "/no/such/file")
    assert got.returncode == 1
    text = got.stderr.decode()
    assert re.search(r'openat\(AT_FDCWD, "/no/such/file", O_RDONLY\) = -1 ENOENT '
                     r"\(No such file or directory\)", text), text


def test_trace_file_keeps_stderr_clean(karn, data_dir, tmp_path):
    out = data_dir / "trace.txt"
    got = karn("--trace", "--trace-file", out, BUSYBOX, "echo", "hi")
    assert got.returncode == 0
    assert got.stdout == b"hi\n"
    assert b"write(" not in got.stderr
    assert 'write(1, "hi\\n", 3) = 3' in out.read_text()


def summary_counts(text: str) -> dict[str, int]:
    """calls per syscall from a `strace -c` style table (karn's has the same columns)."""
    counts = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            counts[parts[-1]] = int(parts[3])
    return counts


def test_trace_summary_counts_match_native(karn, data_dir, tmp_path):
    argv = [BUSYBOX, "wc", "-c", str(data_dir / "f.txt")]  # deterministic syscalls
    report = tmp_path / "strace.txt"
    native = subprocess.run(["strace", "-f", "-c", "-o", str(report), *argv],
                            capture_output=True, cwd="/")
    assert native.returncode == 0, native.stderr
    expected = summary_counts(report.read_text())
    got = karn("--trace-summary", "-v", f"{data_dir}:{data_dir}:ro", *argv)
    assert got.returncode == 0, got.stderr
    assert got.stdout == native.stdout
    counts = summary_counts(got.stderr.decode())
    assert b"% time" in got.stderr
    # The same program makes the same calls; only those that differ by design are left
    # out (rseq: karn answers ENOSYS like a kernel without it; execve: karn starts the
    # program itself; strace -c leaves out calls that do not return).
    by_design = {"execve", "rseq", "exit_group"}
    assert counts.get("exit_group") == 1
    assert len(set(expected) - by_design) >= 10, expected
    for name in set(expected) | set(counts):
        if name not in by_design:
            assert counts.get(name) == expected.get(name), (name, counts, expected)


def test_trace_filter_rejects_unknown_names(karn):
    got = karn("--trace=fiel", BUSYBOX, "true")
    assert got.returncode == 125
    assert got.stderr.decode().startswith("karn: --trace: unknown syscall or class 'fiel'")
    assert len(got.stderr.decode().splitlines()) == 1


def test_trace_does_not_change_program_arguments(karn):
    # --trace=... after the program belongs to the guest
    got = karn(BUSYBOX, "echo", "--trace=x")
    assert got.stdout == b"--trace=x\n"
    assert b"echo(" not in got.stderr


def test_trace_shows_signal_delivery_and_how_it_ended(build):
    """strace's `--- SIG ---` and `+++ exited with N +++` lines, from a real delivery."""
    import signal
    import sys

    exe = build("service", extra_flags=("-pthread",))
    proc = subprocess.Popen([sys.executable, "-m", "karn", "run", "--trace=signal", exe, "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"tick 0\n"
        proc.send_signal(signal.SIGTERM)  # forwarded to the guest, whose handler runs
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3
    assert out.endswith(b"got SIGTERM, fd 3 still open, exiting\n")
    lines = err.decode().splitlines()
    delivered = [i for i, line in enumerate(lines)
                 if re.fullmatch(r"\[1\] \d+\.\d+ --- SIGTERM \{si_signo=SIGTERM, "
                                 r"si_code=SI_USER\} ---", line)]
    assert len(delivered) == 1, lines
    assert any(line.startswith("[1] ") and " rt_sigreturn(" in line
               for line in lines[delivered[0]:]), lines  # the handler returned
    assert lines[-1] == "+++ exited with 3 +++"


@pytest.mark.parametrize("summary", [[], ["--trace-summary"]], ids=["trace", "and-summary"])
def test_trace_reader_going_away_stops_the_trace_not_the_guest(summary: list[str]) -> None:
    """`karn run --trace PROG 2>&1 | head -1`: once the trace's reader has gone, the trace
    stops (as strace's does) and the guest runs to its own end; karn aborted (SIGABRT)."""
    script = "i=0; while [ $i -lt 300 ]; do echo $i; i=$((i+1)); done; exit 3"
    argv = [sys.executable, "-m", "karn", "run", "--trace", *summary, BUSYBOX, "sh", "-c", script]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stderr is not None and proc.stdout is not None
    assert re.match(rb"\[1\] [\d.]+ \w+\(", proc.stderr.readline())
    proc.stderr.close()
    out = proc.stdout.read()
    assert proc.wait(timeout=120) == 3
    assert out.split() == [str(i).encode() for i in range(300)]
