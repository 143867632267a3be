"""The run policy (docs/security.md): resource limits a hostile guest runs into, syscall
allow-lists from the command line, an image or `karn policy suggest`, and ASLR."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import KARN_TIMEOUT

MIB = 1 << 20


@pytest.fixture(scope="module")
def exhaust(build):
    return build("exhaust", "dynamic", extra_flags=("-pthread",))


def karn_rss(*args: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run karn; its peak resident memory (bytes) from wait4, as the kernel counted it."""
    proc = subprocess.Popen([sys.executable, "-m", "karn", "run", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=KARN_TIMEOUT)
    _, status, usage = os.wait4(proc.pid, 0) if proc.returncode is None else (0, 0, None)
    if usage is None:  # communicate() reaped it: take the children's high-water mark
        import resource
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), \
        usage.ru_maxrss * 1024


def test_memory_hog_hits_the_cap_and_the_host_holds_no_more(exhaust):
    idle, idle_rss = karn_rss("-m", "64m", exhaust, "fds")
    assert idle.returncode == 0
    got, hog_rss = karn_rss("-m", "64m", exhaust, "mem")
    assert got.returncode == 0, got.stderr
    m = re.fullmatch(rb"mem (\d+) MiB: Cannot allocate memory\n", got.stdout)
    assert m, got.stdout  # the guest saw ENOMEM, and went on
    assert 32 <= int(m[1]) < 64
    told = [line for line in got.stderr.decode().splitlines()
            if "guest memory limit reached" in line]
    assert len(told) == 1 and "of 64 MiB" in told[0], got.stderr  # once, with the limit
    # What the hog touched is bounded by the cap (plus the monitor's own memory).
    assert hog_rss - idle_rss < 64 * MIB, (hog_rss, idle_rss)


def test_memory_the_limit_does_not_charge_is_caught_by_the_watchdog(karn, exhaust):
    """Thread stacks (MAP_STACK) are not charged up front, as under overcommit; a guest
    that fills them anyway is killed once the monitor holds more than the limit allows."""
    got = karn("-m", "64m", exhaust, "stackmem")
    assert got.returncode == 128 + 9, got.stderr
    assert b"policy: out of memory" in got.stderr


def test_thread_bomb_stops_at_the_pids_limit(karn, exhaust):
    got = karn("--pids-limit", "32", exhaust, "threads")
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"threads 31: Resource temporarily unavailable\n"  # + main = 32


def test_fd_bomb_stops_at_nofile_and_root_cannot_raise_it(karn, exhaust):
    got = karn("--ulimit", "nofile=64", exhaust, "fds")
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"fds 61: Too many open files\nraise: Operation not permitted\n"


@pytest.mark.parametrize("option, error", [("--tmpfs-size=8m", b"No space left on device"),
                                           ("--ulimit=fsize=1m", b"File too large")])
def test_tmpfs_filler_gets_enospc_or_efbig(karn, exhaust, option, error):
    got = karn(*option.split("=", 1), exhaust, "tmpfs", "/tmp/fill")
    assert got.returncode == 0, got.stderr
    size = {b"No space left on device": 8 * MIB, b"File too large": MIB}[error]
    assert got.stdout == b"tmpfs %d bytes: %s\n" % (size, error)


def test_tmpfs_data_counts_against_memory(karn, exhaust):
    """/tmp is host memory: a guest cannot get around --memory by filling it."""
    got = karn("-m", "32m", "--tmpfs-size", "1g", exhaust, "tmpfs", "/tmp/fill")
    m = re.fullmatch(rb"tmpfs (\d+) bytes: No space left on device\n", got.stdout)
    assert m and int(m[1]) < 32 * MIB, got.stdout


def test_cpu_time_limit_sends_sigxcpu(karn, exhaust):
    got = karn("--ulimit", "cpu=1", exhaust, "cpu")
    assert got.returncode == 128 + 24, got.stderr  # SIGXCPU ends it (default action)
    assert b"CPU time limit of 1 s reached" in got.stderr


def test_other_instances_are_unaffected(exhaust, build):
    """A service keeps running and answering while hogs hit their limits next to it.
    (The run's private KARN_STATE_DIR, from conftest.py: pytest's tmp_path can be too long
    for the instances' control sockets.)"""

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "karn", *args], capture_output=True,
                              text=True, timeout=KARN_TIMEOUT)

    service = build("service", extra_flags=("-pthread",))
    instance_id = cli("run", "-d", str(service), "1").stdout.strip()
    try:
        for hog in (["-m", "64m", exhaust, "mem"], ["--pids-limit", "64", exhaust, "threads"],
                    ["--ulimit", "nofile=256", exhaust, "fds"]):
            got = cli("run", *map(str, hog))
            assert got.returncode == 0, got.stderr
        before = json.loads(cli("inspect", instance_id).stdout)[0]["syscalls"]["write"]
        stats = json.loads(cli("inspect", instance_id).stdout)[0]
        assert stats["State"] == "running"
        assert stats["syscalls"]["write"] >= before
    finally:
        cli("stop", "-t", "1", instance_id)


def test_syscall_allow_list_denies_with_eperm_or_kills(karn):
    got = karn("--syscalls", "base", "/bin/busybox", "ls", "/")
    assert got.returncode == 0  # getdents64 failed: nothing listed, as under seccomp EPERM
    assert got.stdout == b""
    assert b"policy: syscall getdents64 is not in the allow-list; returning -EPERM" \
        in got.stderr
    got = karn("--syscalls", "base", "--on-denied", "kill", "/bin/busybox", "ls", "/")
    assert got.returncode == 128 + 31  # SIGSYS
    assert b"killing the guest (SIGSYS)" in got.stderr


def test_policy_suggest_gives_a_list_that_works(karn, tmp_path):
    suggestion = tmp_path / "policy.toml"
    cmd = [sys.executable, "-m", "karn", "policy", "suggest", "-o", str(suggestion),
           "/bin/busybox", "ls", "/"]
    free = subprocess.run(cmd, capture_output=True, timeout=KARN_TIMEOUT)
    assert free.returncode == 0, free.stderr
    text = suggestion.read_text()
    listed = re.search(r"^# or: karn run --syscalls (\S+) \.\.\.$", text, re.M)[1]
    assert "getdents64" in listed.split(",") and "socket" not in listed.split(",")
    confined = karn("--syscalls", listed, "--on-denied", "kill", "/bin/busybox", "ls", "/")
    assert confined.returncode == 0, confined.stderr
    assert confined.stdout == free.stdout and b"policy:" not in confined.stderr


def test_image_policy_applies_and_the_command_line_overrides_it(tmp_path):
    env = {**os.environ, "KARN_HOME": str(tmp_path / "home")}
    (tmp_path / "Karnfile").write_text(
        'program = "/bin/busybox"\nentrypoint = ["/bin/busybox", "ls", "/"]\n\n'
        '[policy]\nsyscalls = ["base"]\non_denied = "kill"\n')

    def karn(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "karn", *args], capture_output=True,
                              env=env, timeout=KARN_TIMEOUT)

    built = karn("build", "-t", "lister:1", str(tmp_path))
    assert built.returncode == 0, built.stderr
    assert karn("run", "lister:1").returncode == 128 + 31
    freed = karn("run", "--syscalls", "all", "lister:1")
    assert freed.returncode == 0 and b"bin" in freed.stdout.split()


def test_bad_policy_values_are_one_line_errors(karn, tmp_path):
    for args, message in ((["--syscalls", "bogus"], b"unknown syscall or class 'bogus'"),
                          (["--pids-limit", "0"], b"must be a whole number from 1"),
                          (["--ulimit", "stack=1"], b"use nofile=N"),
                          (["--tmpfs-size=0"], b"must be a positive size")):
        got = karn(*args, "/bin/busybox", "true")
        assert got.returncode == 125, (args, got.stderr)
        assert got.stderr.count(b"\n") == 1 and message in got.stderr, got.stderr
    (tmp_path / "Karnfile").write_text('program = "/bin/busybox"\n[policy]\nthreds = 4\n')
    built = subprocess.run([sys.executable, "-m", "karn", "build", str(tmp_path)],
                           capture_output=True, timeout=KARN_TIMEOUT,
                           env={**os.environ, "KARN_HOME": str(tmp_path / "home")})
    assert built.returncode != 0 and b"unknown policy key 'threds'" in built.stderr


def test_aslr_moves_everything_and_no_aslr_does_not(karn, build):
    exe = build("addresses", "dynamic")
    runs = [karn(exe).stdout for _ in range(3)]
    fixed = [karn("--no-aslr", exe).stdout for _ in range(2)]
    assert fixed[0] == fixed[1]
    fields = [dict(f.split("=") for f in r.decode().split()) for r in runs]
    for key in ("main", "heap", "mmap", "stack", "printf"):
        assert len({f[key] for f in fields}) > 1, (key, runs)  # 3 runs, 16 bits: distinct


def test_unmapped_and_prot_none_buffers_get_efault_as_natively(karn, native, build):
    exe = build("efault", "static")
    want = native(exe)
    got = karn(exe)
    assert got.returncode == want.returncode == 0, got.stderr
    assert got.stdout == want.stdout
    assert b"remapped page is zero" in got.stdout and b"Bad address" in got.stdout
