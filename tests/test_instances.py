"""Instances: run -d, ps, logs -f, inspect, stop, kill, rm and --metrics, against a real
guest service in a real VM, through the monitor's control socket."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import wait_for

TIMEOUT = 30.0


@pytest.fixture()
def state_dir():
    # short: the control socket's path must fit in sockaddr_un
    path = tempfile.mkdtemp(prefix="ks-", dir="/tmp")
    yield path
    for inst in Path(path, "instances").glob("*/meta.json"):  # never leave a guest behind
        pid = json.loads(inst.read_text())["pid"]
        subprocess.run(["kill", "-9", str(pid)], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def cli(state_dir):
    def run(*args: str, timeout: float = TIMEOUT, check: bool = True):
        env = {**os.environ, "KARN_STATE_DIR": state_dir}
        got = subprocess.run([sys.executable, "-m", "karn", *args], capture_output=True,
                             text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert got.returncode == 0, (args, got.stderr)
        return got
    return run


@pytest.fixture(scope="module")
def service(build):
    return build("service", extra_flags=("-pthread",))


def ps_rows(cli, *flags: str) -> list[list[str]]:
    lines = cli("ps", *flags).stdout.splitlines()
    assert lines[0].split()[:2] == ["INSTANCE", "ID"]
    return [line.split() for line in lines[1:]]


def first_tick(instance_id: str, state_dir: str) -> None:
    """Until the service printed its first tick (read with `logs -f`): by then it has set
    up its SIGTERM handling, which `run -d`, returning once the guest runs, does not wait
    for."""
    env = {**os.environ, "KARN_STATE_DIR": state_dir}
    with subprocess.Popen([sys.executable, "-m", "karn", "logs", "-f", instance_id],
                          stdout=subprocess.PIPE, text=True, env=env) as follow:
        assert follow.stdout is not None and follow.stdout.readline() == "tick 0\n"
        follow.kill()


def test_detached_service_lifecycle(cli, service, state_dir):
    instance_id = cli("run", "-d", "--name", "svc", str(service), "3").stdout.strip()
    assert len(instance_id) == 12

    rows = ps_rows(cli)
    assert [r[:2] for r in rows] == [[instance_id, "svc"]]
    assert "running" in rows[0]

    env = {**os.environ, "KARN_STATE_DIR": state_dir}
    follow = subprocess.Popen([sys.executable, "-m", "karn", "logs", "-f", instance_id],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        seen = [follow.stdout.readline() for _ in range(3)]
        assert seen == ["tick 0\n", "tick 1\n", "tick 2\n"]  # streamed while running

        def settled() -> dict | None:
            """inspect once the helper threads are in pause() and the main thread sleeps
            between ticks (a snapshot is of a moment: it may catch a thread in a write)."""
            info = json.loads(cli("inspect", "svc").stdout)[0]
            states = sorted(t["state"] for t in info["threads"])
            return info if states[-3:] == ["in syscall pause"] * 3 and \
                "nanosleep" in states[0] else None

        info = wait_for(settled, "three threads in pause(), the main one in nanosleep")
        assert info["State"] == "running"
        threads = info["threads"]
        assert len(threads) == 4 and info["stats"]["threads"] == 4
        main = next(t for t in threads if t["tid"] == 1)
        assert "nanosleep" in main["symbol"], main  # RIP symbolized in the guest libc
        targets = [f["target"] for f in info["fds"]]
        assert targets[3] == "/proc/1/status", targets  # the file the program opened
        assert info["syscalls"]["clock_nanosleep"] >= 3
        assert info["policy"]["network"] == "--network none"

        assert cli("stop", "-t", "10", "svc").stdout.strip() == "svc"
        rest = follow.communicate(timeout=TIMEOUT)[0]
    finally:
        follow.kill()
    assert follow.returncode == 0  # logs -f ends when the instance does
    assert rest.rstrip().endswith("got SIGTERM, fd 3 still open, exiting")  # handler ran

    rows = ps_rows(cli, "-a")
    assert rows[0][:2] == [instance_id, "svc"] and "exited (3)" in " ".join(rows[0])
    assert ps_rows(cli) == []  # not running any more
    info = json.loads(cli("inspect", instance_id[:6]).stdout)[0]
    assert (info["State"], info["ExitCode"]) == ("exited", 3)

    assert cli("rm", "svc").stdout.strip() == "svc"  # as given, as docker prints it
    assert ps_rows(cli, "-a") == []


def test_rm_refuses_a_running_instance_unless_forced(cli, service, state_dir):
    """As docker's rm: a running instance is refused with a way out, and -f kills it
    (its monitor ends) and removes it."""
    instance_id = cli("run", "-d", "--name", "busy", str(service), "1").stdout.strip()
    first_tick(instance_id, state_dir)
    pid = json.loads(Path(state_dir, "instances", instance_id, "meta.json").read_text())["pid"]
    refused = cli("rm", "busy", check=False)
    assert refused.returncode != 0 and "is running" in refused.stderr and "-f" in refused.stderr
    assert [row[:2] for row in ps_rows(cli)] == [[instance_id, "busy"]]  # nothing lost
    assert cli("rm", "-f", "busy").stdout.strip() == "busy"
    assert ps_rows(cli, "-a") == []
    assert not Path(f"/proc/{pid}").exists() or \
        Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", "the monitor still runs"


def test_stop_kills_a_guest_that_ignores_sigterm(cli, service, state_dir):
    instance_id = cli("run", "-d", str(service), "1", "ignore-term").stdout.strip()
    first_tick(instance_id, state_dir)  # after it ignored SIGTERM
    started = time.monotonic()
    cli("stop", "-t", "1", instance_id)
    assert time.monotonic() - started >= 1.0  # it waited for the grace period
    info = json.loads(cli("inspect", instance_id).stdout)[0]
    assert (info["State"], info["ExitCode"]) == ("exited", 128 + 9)


def test_logs_of_a_running_instance_prints_what_it_has(cli, service, state_dir):
    """Without -f, logs prints the output so far and returns while the instance runs on
    (as docker logs does). It used to wait up to 10 s for the log's writer after every
    chunk it read, so for an instance that writes every 100 ms it never returned."""
    instance_id = cli("run", "-d", str(service), "0").stdout.strip()
    first_tick(instance_id, state_dir)
    so_far = cli("logs", instance_id).stdout
    assert so_far.startswith("tick 0\n"), so_far
    assert json.loads(cli("inspect", instance_id).stdout)[0]["State"] == "running"
    cli("stop", instance_id)
    assert cli("logs", instance_id).stdout.startswith(so_far)  # the whole output now


def test_kill_sends_the_named_signal(cli, service, state_dir):
    instance_id = cli("run", "-d", str(service), "0").stdout.strip()
    first_tick(instance_id, state_dir)  # its handler is set: a SIGTERM before it killed it
    cli("kill", "-s", "TERM", instance_id)
    info = wait_for(lambda: (i := json.loads(cli("inspect", instance_id).stdout)[0])
                    ["State"] == "exited" and i, "the guest to exit")
    assert info["ExitCode"] == 3  # the guest's own SIGTERM handler chose the status
    assert "unknown signal" in cli("kill", "-s", "BOGUS", instance_id, check=False).stderr


def test_foreground_run_is_listed_and_inspectable(cli, service, state_dir):
    env = {**os.environ, "KARN_STATE_DIR": state_dir}
    run = subprocess.Popen([sys.executable, "-m", "karn", "run", str(service), "2"],
                           stdout=subprocess.PIPE, env=env)
    try:
        rows = wait_for(lambda: ps_rows(cli), "the foreground run in ps")
        instance_id = rows[0][0]
        info = json.loads(cli("inspect", instance_id).stdout)[0]
        assert info["stats"]["threads"] == 3 and not info["Detached"]
        assert "foreground" in cli("logs", instance_id, check=False).stderr
        cli("kill", "-s", "TERM", instance_id)
        assert run.wait(TIMEOUT) == 3
    finally:
        run.kill()
    assert ps_rows(cli, "-a") == []  # a foreground run leaves no record


def test_metrics_endpoint(cli, service):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    instance_id = cli("run", "-d", "--metrics", f"127.0.0.1:{port}", str(service), "2"
                      ).stdout.strip()

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert r.headers["Content-Type"].startswith("text/plain")
            text = r.read().decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line and not line.startswith("#")}

    # run -d returns once the guest runs; its two workers start a moment later
    first = wait_for(lambda: (m := scrape())["karn_guest_threads"] == 3 and m,
                     "the service's three threads")
    assert first["karn_memory_limit_bytes"] == 512 << 20
    assert 0 < first["karn_guest_resident_bytes"] < first["karn_memory_limit_bytes"]
    name = 'karn_syscalls_total{name="clock_nanosleep"}'
    later = wait_for(lambda: (m := scrape()).get(name, 0) > first.get(name, 0) and m,
                     "the sleep count to grow")
    # every call on one of the transport's paths (read after the call counts)
    paths = {k: v for k, v in later.items() if k.startswith("karn_syscall_paths_total{")}
    assert sum(paths.values()) >= later[name] > 0, paths
    fast = os.environ.get("KARN_SYSCALL_TRANSPORT", "fast") == "fast"
    assert (later.get("karn_syscall_sites_patched", 0) >= 1) == fast, later
    cli("stop", instance_id)


def test_detached_start_failure_is_reported_and_leaves_nothing(cli, state_dir):
    got = cli("run", "-d", "/nonexistent/program", check=False)
    assert got.returncode == 127
    assert got.stdout == ""
    assert got.stderr.strip().splitlines() == ["karn: /nonexistent/program: no such file or "
                                               "directory"]
    assert ps_rows(cli, "-a") == []


@pytest.mark.parametrize("command", [["logs", "nope"], ["stop", "nope"], ["kill", "nope"],
                                     ["inspect", "nope"]])
def test_unknown_instance_is_one_line(cli, command):
    got = cli(*command, check=False)
    assert got.returncode != 0
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope" in lines[0], got.stderr


def test_state_dir_too_long_for_sockets(build, tmp_path):
    """A state directory whose control socket path cannot fit sockaddr_un: a foreground
    run goes on unlisted; a run asked to be an instance (-d) says why it cannot be."""
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    env = {**os.environ, "KARN_STATE_DIR": str(deep)}
    exe = build("exit42")
    slow = [sys.executable, "-m", "karn", "run", "/bin/busybox", "sleep", "0.3"]
    got = subprocess.run(slow, capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert got.returncode == 0, got.stderr
    got = subprocess.run([sys.executable, "-m", "karn", "run", "-d", str(exe)],
                         capture_output=True, text=True, env=env, timeout=TIMEOUT)
    assert got.returncode != 0
    assert got.stderr.startswith("karn: ") and "too long for a socket" in got.stderr, got.stderr
    assert len(got.stderr.strip().splitlines()) == 1


# ---- docker's habits: --rm, wait, logs --tail/-t, ps --filter/--no-trunc, stats, -p PORT ---

BUSYBOX = "/bin/busybox"
PYTHON = "/usr/bin/python3"  # a guest that can sleep between outputs (busybox sh would fork)


def test_wait_prints_exit_codes_and_rm_leaves_no_record(cli, state_dir):
    kept = cli("run", "-d", PYTHON, "-c", "import time; time.sleep(0.5); raise SystemExit(7)"
               ).stdout.strip()
    gone = cli("run", "-d", "--rm", BUSYBOX, "sh", "-c", "exit 0").stdout.strip()
    assert cli("wait", kept).stdout == "7\n"
    wait_for(lambda: not Path(state_dir, "instances", gone).exists(), "--rm's record to go")
    rows = ps_rows(cli, "-a")
    assert [r[0] for r in rows] == [kept]
    got = cli("wait", gone, check=False)
    assert got.returncode == 1 and got.stderr.startswith("karn: no such instance")


def test_logs_tail_and_timestamps(cli):
    before = time.time()
    ident = cli("run", "-d", PYTHON, "-uc",
                "import sys, time\nfor i in range(1, 6): print('line', i)\n"
                "print('err', file=sys.stderr); time.sleep(0.3); print('late')").stdout.strip()
    assert cli("wait", ident).stdout == "0\n"
    assert cli("logs", ident).stdout == "line 1\nline 2\nline 3\nline 4\nline 5\nerr\nlate\n"
    assert cli("logs", "--tail", "2", ident).stdout == "err\nlate\n"
    assert cli("logs", "-n", "0", ident).stdout == ""
    stamped = cli("logs", "-t", "--tail", "3", ident).stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["line 5", "err", "late"]
    stamps = [line.split(" ", 1)[0] for line in stamped]
    times = [_rfc3339_nano(s) for s in stamps]
    assert before - 1 <= times[0] <= times[2] <= time.time() + 1
    assert times[2] - times[1] >= 0.25  # `late` came after the sleep
    got = cli("logs", "--tail", "x", ident, check=False)
    assert got.returncode == 125 and got.stderr.startswith("karn: --tail")


def _rfc3339_nano(text: str) -> float:
    import calendar

    assert len(text) == 30 and text.endswith("Z"), text
    whole = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    return whole + int(text[20:29]) / 1e9


def test_ps_filter_and_no_trunc(cli):
    long_args = ["sleep", "10", "10", "10", "10", "10", "10"]  # longer than the column
    alpha = cli("run", "-d", "--name", "alpha-1", BUSYBOX, *long_args).stdout.strip()
    beta = cli("run", "-d", "--name", "beta-1", BUSYBOX, "sh", "-c", "exit 4").stdout.strip()
    try:
        cli("wait", beta)
        assert [r[0] for r in ps_rows(cli, "--filter", "name=alpha")] == [alpha]
        assert [r[0] for r in ps_rows(cli, "--filter", "status=exited")] == [beta]
        assert ps_rows(cli, "--filter", "status=exited", "--filter", "name=alpha") == []
        assert sorted(r[0] for r in ps_rows(cli, "-a", "-f", "name=alpha", "-f",
                                            "name=beta")) == sorted([alpha, beta])
        assert [r[0] for r in ps_rows(cli, "-a", "--filter", f"id={beta[:5]}")] == [beta]
        full = " ".join([BUSYBOX, *long_args])
        assert full not in cli("ps").stdout
        assert full in cli("ps", "--no-trunc").stdout
        got = cli("ps", "--filter", "color=red", check=False)
        assert got.returncode == 125 and "invalid filter" in got.stderr
    finally:
        cli("kill", alpha, check=False)


def test_stats_measures_cpu_and_syscalls(cli):
    busy = cli("run", "-d", "--name", "busy", BUSYBOX, "sh", "-c",
               "while :; do echo x > /dev/null; done").stdout.strip()
    idle = cli("run", "-d", "--name", "idle", BUSYBOX, "sleep", "60").stdout.strip()
    try:
        # idle once asleep: run -d returns before the guest's start-up calls are made, and
        # a sample that took them in counted a few a second (a loaded full suite's: 6)
        wait_for(lambda: "nanosleep" in json.loads(cli("inspect", idle).stdout)[0]
                 ["threads"][0]["state"], "the idle guest to sleep")
        rows = {r["Name"]: r for r in json.loads(
            cli("stats", "--no-stream", "--format", "json").stdout)}
        assert sorted(rows) == ["busy", "idle"]
        assert rows["busy"]["Id"] == busy and rows["idle"]["Id"] == idle
        assert rows["busy"]["CpuPercent"] > 10 and rows["busy"]["SyscallsPerSecond"] > 50
        assert rows["idle"]["CpuPercent"] < 5 and rows["idle"]["SyscallsPerSecond"] < 5
        assert 0 < rows["busy"]["MemoryBytes"] < rows["busy"]["MemoryLimitBytes"]
        table = cli("stats", "--no-stream", "idle").stdout.splitlines()
        assert table[0].split()[:4] == ["INSTANCE", "ID", "NAME", "CPU"]
        assert [line.split()[0] for line in table[1:]] == [idle]
    finally:
        cli("kill", busy, idle, check=False)


def test_publish_guest_port_to_a_free_host_port(cli):
    """-p GUESTPORT: karn chooses a free host port, says which, and ps/inspect show it."""
    got = cli("run", "-d", "-p", "7000", BUSYBOX, "nc", "-l", "-p", "7000")
    ident = got.stdout.strip()
    (note,) = got.stderr.splitlines()
    assert note.startswith("karn: published 127.0.0.1:") and note.endswith("->7000/tcp")
    port = int(note.split(":")[2].split("-")[0])
    try:
        info = json.loads(cli("inspect", ident).stdout)[0]
        assert info["Ports"] == [f"127.0.0.1:{port}->7000/tcp"]
        assert info["Ports"][0] in cli("ps").stdout

        def connected() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                    conn.sendall(b"through the chosen port\n")
                return True
            except OSError:
                return False

        wait_for(connected, "the guest's listener at the chosen port")
        assert cli("wait", ident).stdout == "0\n"
        assert cli("logs", ident).stdout == "through the chosen port\n"
    finally:
        cli("kill", ident, check=False)
