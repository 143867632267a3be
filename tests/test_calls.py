"""Calls real programs and test suites need (issue 15): each C program in
tests/programs/calls_*.c prints what it sees (results, errno names, comparisons, never
times or addresses), and a karn run must print the same as the same binary run natively.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import threading

import pytest
from conftest import BUSYBOX

THREADED = ("-pthread",)


@pytest.mark.parametrize("variant", ["static", "musl-static"])
def test_cpu_time_getrusage_and_cpu_clocks(variant, build, karn, native, same):
    """getrusage, times and the CPU-time clocks count the guest's threads' CPU time."""
    exe = build("calls_cputime", variant, extra_flags=THREADED)
    expected = native(exe)
    assert expected.returncode == 0, expected.stdout.decode()
    same(expected, karn(exe), f"calls_cputime ({variant})")


@pytest.mark.parametrize("variant", ["static", "musl-static"])
def test_prctl_priority_ids_and_nofile(variant, build, karn, native, same):
    """prctl options programs use at start, per-thread nice values, saved ids, and an
    RLIMIT_NOFILE whose hard limit is the host's (the native run gets karn's 1024 soft)."""
    exe = build("calls_identity", variant, extra_flags=THREADED)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    env = {"HOST_NOFILE_HARD": str(hard)}
    expected = native("prlimit", f"--nofile=1024:{hard}", exe, extra_env=env)
    assert expected.returncode == 0, expected.stdout.decode()
    same(expected, karn("-e", f"HOST_NOFILE_HARD={hard}", exe), f"calls_identity ({variant})")


@pytest.mark.parametrize("variant", ["static", "musl-static"])
def test_memfd_sealing_and_shared_mappings(variant, build, karn, native, same):
    exe = build("calls_memfd", variant)
    expected = native(exe)
    assert expected.returncode == 0, expected.stdout.decode()
    same(expected, karn(exe), f"calls_memfd ({variant})")


@pytest.mark.parametrize("variant", ["static", "musl-static"])
def test_fifo_on_tmpfs(variant, build, karn, native, same):
    """mkfifo/mknod in the guest's /tmp, with Linux's blocking and O_NONBLOCK open rules."""
    exe = build("calls_fifo", variant, extra_flags=THREADED)
    expected = native(exe, "/tmp")
    assert expected.returncode == 0, expected.stdout.decode()
    same(expected, karn(exe, "/tmp"), f"calls_fifo on tmpfs ({variant})")


def test_fifo_on_volume(tmp_path, build, karn, native, same):
    """The same on a host volume: the FIFO is a host FIFO."""
    exe = build("calls_fifo", "static", extra_flags=THREADED)
    native_dir, guest_dir = tmp_path / "native", tmp_path / "guest"
    native_dir.mkdir()
    guest_dir.mkdir()
    expected = native(exe, native_dir)
    assert expected.returncode == 0, expected.stdout.decode()
    same(expected, karn("-v", f"{guest_dir}:/data", exe, "/data"), "calls_fifo on a volume")
    assert list(guest_dir.iterdir()) == [], "the program cleans up after itself"


@pytest.fixture
def native_shm_dir():
    """A directory on the host's /dev/shm (a tmpfs, as the guest's /dev/shm)."""
    path = tempfile.mkdtemp(prefix="karn-calls-", dir="/dev/shm")
    os.chmod(path, 0o755)  # the program goes on as a user, who must reach its files
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("variant", ["static", "musl-static"])
def test_xattrs_and_owners_on_tmpfs(variant, native_shm_dir, build, karn, native, same):
    """Extended attributes kept on tmpfs, and chown recorded in what stat shows."""
    exe = build("calls_xattr", variant)
    expected = native(exe, native_shm_dir)
    assert expected.returncode == 0, expected.stdout.decode()
    same(expected, karn(exe, "/dev/shm"), f"calls_xattr on tmpfs ({variant})")


def test_xattrs_on_volume(tmp_path, build, karn, native, same):
    """A volume's extended attributes are the host file's."""
    exe = build("calls_xattr", "static")
    native_dir, guest_dir = tmp_path / "native", tmp_path / "guest"
    native_dir.mkdir()
    guest_dir.mkdir()
    expected = native(exe, native_dir, "no-owners")
    assert expected.returncode == 0, expected.stdout.decode()
    same(expected, karn("-v", f"{guest_dir}:/data", exe, "/data", "no-owners"),
         "calls_xattr on a volume")
    assert os.getxattr(guest_dir / "calls-xattr-file", "user.b") == b""


@pytest.mark.parametrize("variant", ["static", "musl-static"])
def test_splice_tee_copy_file_range_fallocate_on_tmpfs(variant, native_shm_dir, build, karn,
                                                      native, same):
    exe = build("calls_splice", variant)
    expected = native(exe, native_shm_dir)
    assert expected.returncode == 0, expected.stdout.decode()
    same(expected, karn(exe, "/dev/shm"), f"calls_splice on tmpfs ({variant})")


def test_splice_tee_copy_file_range_fallocate_on_volume(tmp_path, build, karn, native, same):
    exe = build("calls_splice", "static")
    native_dir, guest_dir = tmp_path / "native", tmp_path / "guest"
    native_dir.mkdir()
    guest_dir.mkdir()
    expected = native(exe, native_dir)
    assert expected.returncode == 0, expected.stdout.decode()
    same(expected, karn("-v", f"{guest_dir}:/data", exe, "/data"), "calls_splice on a volume")


def test_unimplemented_notice_is_a_whole_line_among_the_guests(build, karn):
    """karn's notice about a call it lacks shares stderr with the guest's own lines:
    neither splits the other."""
    exe = build("calls_notice", "static", extra_flags=THREADED)
    got = karn(exe)
    assert got.returncode == 0 and got.stdout == b"done\n", got.stderr.decode()[-2000:]
    lines = got.stderr.decode().splitlines()
    assert lines[0] == "checking afs_syscall ... ok", lines[:3]
    guest = "guest line: the quick brown fox jumps over the lazy dog"
    notices = [line for line in lines[1:] if line != guest]
    assert len(lines) - len(notices) > 0, "the guest's lines are there"
    assert len(notices) == 2, notices
    assert all(line.startswith("karn: unimplemented syscall ") for line in notices), notices


@pytest.mark.parametrize("variant", ["static", "musl-static"])
def test_proc_sys_files(variant, build, karn, native, same):
    exe = build("calls_procsys", variant)
    expected = native(exe)
    assert expected.returncode == 0, expected.stdout.decode()
    same(expected, karn(exe), f"calls_procsys ({variant})")


@pytest.mark.parametrize("variant", ["static", "musl-static"])
def test_unix_bind_makes_a_socket_file(variant, build, karn, native, same, native_shm_dir):
    exe = build("calls_unixbind", variant)
    expected = native(exe, native_shm_dir)
    assert expected.returncode == 0, expected.stdout.decode()
    same(expected, karn(exe, "/tmp"), f"calls_unixbind on tmpfs ({variant})")


def test_unix_bind_on_volume(tmp_path, build, karn, native, same):
    exe = build("calls_unixbind", "static")
    native_dir, guest_dir = tmp_path / "native", tmp_path / "guest"
    native_dir.mkdir()
    guest_dir.mkdir()
    expected = native(exe, native_dir)
    assert expected.returncode == 0, expected.stdout.decode()
    same(expected, karn("-v", f"{guest_dir}:/data", exe, "/data"), "calls_unixbind on a volume")


@pytest.mark.parametrize("variant", ["static", "musl-static"])
def test_timers_on_cpu_time(variant, build, karn, native):
    """ITIMER_PROF/ITIMER_VIRTUAL and timer_create on CPU clocks fire as CPU time passes.
    The program's checks ("...: yes/no", counts of signals within CPU-time windows) must
    all hold under karn; they are not compared with the native run's, which misses some
    on a loaded host (seen: the host's own tick-based CPU timers fell short). Every other
    line (return values, errnos) must be the native run's."""
    exe = build("calls_cputimers", variant, extra_flags=THREADED)
    expected, got = native(exe), karn(exe)
    assert got.returncode == expected.returncode == 0, got.stderr.decode()
    want_lines, got_lines = expected.stdout.decode().splitlines(), got.stdout.decode().splitlines()
    assert len(got_lines) == len(want_lines), got.stdout.decode()
    for want, line in zip(want_lines, got_lines, strict=True):
        label, _, verdict = line.rpartition(": ")
        if verdict in ("yes", "no"):
            assert want.rpartition(": ")[0] == label and verdict == "yes", line
        else:
            assert line == want, (line, want)


@pytest.mark.parametrize("direction", ["host writes", "guest writes"])
def test_volume_fifo_with_a_host_process(direction, tmp_path, karn):
    """A volume's FIFO joins a guest and a host process: the guest's open waits for the
    host's end, as it would for another guest thread's."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = b"through a host fifo\n"
    got: list[bytes] = []

    def host_side() -> None:
        if direction == "host writes":
            with open(fifo, "wb") as f:  # waits for the guest's reader
                f.write(data)
        else:
            with open(fifo, "rb") as f:
                got.append(f.read())

    host = threading.Thread(target=host_side, daemon=True)
    host.start()
    if direction == "host writes":
        result = karn("-v", f"{tmp_path}:/data", BUSYBOX, "cat", "/data/fifo")
        assert result.stdout == data, result.stderr.decode()
    else:
        result = karn("-v", f"{tmp_path}:/data", BUSYBOX, "sh", "-c",
                      "echo through a host fifo > /data/fifo")
        host.join(30)
        assert got == [data], result.stderr.decode()
    assert result.returncode == 0, result.stderr.decode()
    host.join(30)
    assert not host.is_alive()
