"""Host resources a hostile guest can pin through the kernel, beyond its own memory:
files in flight over SCM_RIGHTS (charged to the sender, released with the socket buffer
that holds them) and socket and pipe buffers (charged to --memory)."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import KARN_TIMEOUT

NOBODY = 65534


@pytest.fixture(scope="module")
def scm(build) -> Path:
    return build("scm_inflight")


@pytest.fixture(scope="module")
def public_dir() -> Iterator[Path]:
    """A directory an unprivileged user can run programs from (the build directory is
    private to root)."""
    path = Path(tempfile.mkdtemp(prefix="karn-limits-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def native_unprivileged(
    program: Path, public_dir: Path, nofile: int, *args: str
) -> subprocess.CompletedProcess[bytes]:
    """Run natively as nobody, without capabilities (root's CAP_SYS_RESOURCE would lift
    the in-flight limit), with RLIMIT_NOFILE set as karn's --ulimit sets it."""
    copy = public_dir / program.name
    if not copy.exists():
        shutil.copy(program, copy)
        copy.chmod(0o755)
    cmd = [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "prlimit",
        f"--nofile={nofile}",
        str(copy),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, timeout=KARN_TIMEOUT, cwd="/")


class Guest:
    """A karn run the test talks to line by line, to sample the monitor while the guest
    waits."""

    def __init__(self, *args: str | os.PathLike[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "karn", "run", *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out = b""

    def expect(self, line: bytes, timeout: float = KARN_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while line + b"\n" not in self.out:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self.fail(f"no {line!r} in time")
            chunk = os.read(fd, 4096)
            if not chunk:
                self.fail(f"the guest ended before {line!r}")
            self.out += chunk

    def release(self) -> None:
        self.proc.stdin.write(b"\n")
        self.proc.stdin.flush()

    def host_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def finish(self) -> tuple[int, bytes, bytes]:
        out, err = self.proc.communicate(timeout=KARN_TIMEOUT)
        return self.proc.returncode, self.out + out, err

    def fail(self, why: str) -> None:
        self.proc.kill()
        out, err = self.proc.communicate()
        pytest.fail(
            f"{why}\n--- stdout\n{(self.out + out)[-2000:]!r}\n--- stderr\n"
            f"{err[-3000:].decode(errors='replace')}",
            pytrace=False,
        )


# -- files in flight (SCM_RIGHTS) -------------------------------------------------------


@pytest.mark.parametrize("per_message", [16, 253])
def test_files_in_flight_count_against_the_senders_open_file_limit(
    karn, scm, public_dir, per_message
):
    """Queued unread, they stop at RLIMIT_NOFILE with ETOOMANYREFS, as on Linux; closing
    the socket that holds them, or receiving them, gives them back."""
    native = native_unprivileged(scm, public_dir, 128, "limit", str(per_message))
    assert native.returncode == 0, native.stderr
    assert b"Too many references" in native.stdout  # the native run did reach the limit
    got = karn("--ulimit", "nofile=128", scm, "limit", str(per_message))
    assert got.returncode == 0, got.stderr
    assert got.stdout == native.stdout
    assert b"Traceback" not in got.stderr


def test_files_in_flight_peeked_received_and_discarded_as_on_linux(karn, native, same, scm):
    """MSG_PEEK gives a second fd and leaves the message queued; read() without room for
    the ancillary data drops its file at once (the pipe's reader sees end of file)."""
    same(native(scm, "peek"), karn(scm, "peek"), "scm_inflight peek")


def test_files_reach_a_receiver_already_waiting(karn, native, same, scm):
    """A thread blocked in recvmsg before the files were sent still gets them."""
    expected = native(scm, "blocked")
    assert b"got the file" in expected.stdout, expected.stdout
    same(expected, karn(scm, "blocked"), "scm_inflight blocked")


def test_files_in_flight_are_released_with_the_socket_buffer(scm):
    """300 socketpairs, each closed with 64 files in flight that nobody received: the
    monitor's host fds do not grow (they did by 64 a round, past --ulimit nofile)."""
    guest = Guest("--ulimit", "nofile=128", scm, "leak", "300")
    guest.expect(b"ready after 1")
    first = guest.host_fds()
    guest.release()
    guest.expect(b"ready after 300")
    last = guest.host_fds()
    guest.release()
    status, out, err = guest.finish()
    assert status == 0, err
    assert out.endswith(b"done\n"), out
    assert b"Traceback" not in err, err.decode(errors="replace")
    assert last - first < 64, f"monitor host fds: {first} after 1 round, {last} after 300"


@pytest.mark.parametrize("listed", ["named", "unnamed"])
def test_limit_watch_survives_a_monitor_out_of_fds(scm, build, listed):
    """A guest holding the monitor at its host fd limit (EMFILE) does not blind or crash
    the limit watch, which read /proc/self/statm by opening it every check; an unnamed
    run, registered for `karn ps` only once the guest runs, then goes on unlisted."""
    fill = build("hostfd_fill")
    name = ["--name", f"limits-fdfill-{os.getpid()}"] if listed == "named" else []
    cmd = ["prlimit", "--nofile=80", sys.executable, "-m", "karn", "run", *name, fill]
    got = subprocess.run(cmd, capture_output=True, timeout=KARN_TIMEOUT)
    assert b"Traceback" not in got.stderr, got.stderr.decode(errors="replace")
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"sockets until: Too many open files\n"


# -- socket and pipe buffers (--memory) --------------------------------------------------

MIB = 1 << 20
LINUX_WMEM_MAX = 212992  # Linux's default net.core.wmem_max (this host's may be larger)


@pytest.fixture(scope="module")
def sockbuf(build) -> Path:
    return build("sockbuf")


def _fill(sockbuf: Path, *args: str) -> tuple[bytes, int, int]:
    """Run the guest under -m 32m: its output, the bytes it left queued in the host
    kernel (sockets or pipes nobody reads), and the monitor's resident memory sampled
    while the guest holds them."""
    guest = Guest("-m", "32m", sockbuf, *args)
    guest.expect(b"ready")
    rss = _vm_rss(guest.proc.pid)
    guest.release()
    status, out, err = guest.finish()
    assert status == 0, err
    assert b"Traceback" not in err, err.decode(errors="replace")
    queued = int(out.split(b"queued ")[1].split(b" KiB")[0]) << 10
    return out, queued, rss


def _vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    raise AssertionError("no VmRSS")


def test_socket_buffers_are_charged_to_the_memory_limit(sockbuf):
    """200 AF_UNIX pairs asking for 4 MiB send buffers, filled under -m 32m: what they
    cost the host (bytes queued plus the monitor's memory) over one pair stays within
    the limit (it was 8 MiB a pair here, 3.9 GB for 500), and SO_SNDBUF is clamped as
    Linux clamps it."""
    one, one_queued, one_rss = _fill(sockbuf, "pairs", "1")
    out, queued, rss = _fill(sockbuf, "pairs", "200")
    for got in (one, out):
        sndbuf = int(got.split(b"SO_SNDBUF ")[1].split()[0])
        assert 0 < sndbuf <= 2 * LINUX_WMEM_MAX, got
    assert one_queued > 0 and MIB < queued < 16 * MIB, out  # a quarter of --memory, plus
    # minimal buffers past it
    growth = queued + rss - one_queued - one_rss
    assert growth < 32 * MIB, f"200 pairs hold {growth >> 20} MiB more than one"


def test_pipe_buffers_are_charged_to_the_memory_limit(sockbuf):
    """200 pipes asking for 1 MiB each and filled under -m 32m: F_SETPIPE_SZ is refused
    (EPERM, as past Linux's pipe-user-pages limits) once the budget is spent."""
    out, queued, _ = _fill(sockbuf, "pipes", "200")
    assert b"then: Operation not permitted" in out, out
    granted = int(out.split(b"granted to ")[1].split()[0])
    assert granted >= 1, out
    assert queued < 16 * MIB, out


def test_pipe_size_beyond_pipe_max_size_is_refused(karn, sockbuf, public_dir):
    native = native_unprivileged(sockbuf, public_dir, 1024, "bigpipe")
    assert native.returncode == 0, native.stderr
    got = karn(sockbuf, "bigpipe")
    assert got.returncode == 0, got.stderr
    assert got.stdout == native.stdout
