"""The hardened monitor (karn/sandbox, docs/security.md): after set-up the monitor process
confines itself, and the guest still runs.

The confined monitor is made to misbehave through its test hook, KARN_TEST_MONITOR_PROBE
(karn/sandbox/probe.py): it tries to open host files outside its allow-list, to make a
raw socket, to fork and to exec, on its main thread and on a thread that existed before
confinement; the kernel's view of every monitor thread (/proc/PID/task/*/status) is
checked as well. The rest of the suite runs with the sandbox on (the default).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BUSYBOX
from helpers import free_port

TIMEOUT = 30.0
PROBE = "KARN_TEST_MONITOR_PROBE"
THREADS = ("main thread", "early thread")
SIGSYS_KILLED = -signal.SIGSYS
# kept by a privileged monitor: chown, dac_override, dac_read_search, fowner, fsetid
FILE_CAPS = 0x1F


def probe_lines(stderr: bytes) -> dict[tuple[str, str], str]:
    """{(thread, item): 'allowed' | 'denied (ERRNO)'} from the probe's stderr lines."""
    found = {}
    for line in stderr.decode(errors="replace").splitlines():
        if line.startswith("karn: sandbox probe: "):
            where, item, outcome = line.removeprefix("karn: sandbox probe: ").split(": ", 2)
            found[(where, item)] = outcome
    return found


@pytest.fixture(scope="module")
def secret(build_dir: Path) -> Path:
    """A host file the guest was never given (not in its image, not in a volume)."""
    path = build_dir / "sandbox-secret.txt"
    path.write_text("the monitor must not read this\n")
    return path


def test_confined_monitor_cannot_open_host_files(karn, secret: Path) -> None:
    denied = ["/etc/shadow", str(secret), "/proc/self/root/etc/passwd", "/proc/1/environ"]
    items = [*denied, BUSYBOX, "raw-socket", "fork"]
    got = karn(BUSYBOX, "echo", "still fine", extra_env={PROBE: ",".join(items)})
    assert got.returncode == 0 and got.stdout == b"still fine\n", got.stderr
    outcomes = probe_lines(got.stderr)
    for where in THREADS:
        for path in denied:
            assert outcomes[(where, path)] == "denied (EACCES)", (where, path, got.stderr)
        assert outcomes[(where, BUSYBOX)] == "allowed"  # the guest's own file: the control
        assert outcomes[(where, "raw-socket")] == "denied (EPERM)"
        # a guest fork is a fork of its monitor (same filter, same Landlock domain)
        assert outcomes[(where, "fork")] == "allowed"


def test_exec_from_the_monitor_kills_it(karn) -> None:
    got = karn(BUSYBOX, "true", extra_env={PROBE: "exec"})
    assert got.returncode == SIGSYS_KILLED, (got.returncode, got.stderr)


def test_no_sandbox_turns_it_off(karn, secret: Path) -> None:
    got = karn("--no-sandbox", BUSYBOX, "echo", "unconfined",
               extra_env={PROBE: str(secret)})
    assert got.returncode == 0 and got.stdout == b"unconfined\n", got.stderr
    assert probe_lines(got.stderr) == {}  # no confinement, so no probe either


@pytest.fixture()
def state_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="ksb-", dir="/tmp")  # short: a socket lives there
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Monitor:
    """A running `karn run` whose threads can be looked at from outside."""

    def __init__(self, state_dir: str, *args: str, prefix: tuple[str, ...] = ()) -> None:
        self.env = {**os.environ, "KARN_STATE_DIR": state_dir}
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "karn", "run", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=self.env)

    def statuses(self) -> list[dict[str, str]]:
        out = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                lines = (task / "status").read_text().splitlines()
            except OSError:
                continue  # the thread ended
            out.append(dict(line.split(":\t", 1) for line in lines if ":\t" in line))
        return out

    def wait_confined(self, threads: int) -> list[dict[str, str]]:
        """Wait until the guest's threads exist (the service's first tick comes after it
        made them; the monitor has other threads, such as the VM set-up's, before the
        guest starts); then the monitor is confined."""
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline().startswith(b"tick"):
            self.proc.wait(TIMEOUT)
            pytest.fail(f"karn ended early: {self.proc.stderr.read().decode()}")
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"karn ended early: {self.proc.stderr.read().decode()}")
            statuses = self.statuses()
            if len(statuses) >= threads:
                return statuses
            time.sleep(0.05)
        pytest.fail("the monitor did not start its threads")

    def net_namespace(self) -> set[str]:
        return {os.readlink(t / "ns/net") for t in Path(f"/proc/{self.proc.pid}/task").iterdir()}

    def karn(self, *args: str) -> str:
        got = subprocess.run([sys.executable, "-m", "karn", *args], capture_output=True,
                             text=True, env=self.env, timeout=TIMEOUT)
        assert got.returncode == 0, got.stderr
        return got.stdout

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(TIMEOUT)


def test_every_monitor_thread_is_confined(build, state_dir: str) -> None:
    """--name registers before confinement, so the control socket's thread predates it;
    the guest's 3 threads (vCPUs) come after. All are filtered, without new privileges,
    without the dropped capabilities, and (no network) in a network namespace of their
    own; `karn inspect` shows it."""
    service = build("service", extra_flags=("-pthread",))
    monitor = Monitor(state_dir, "--name", "sbx", str(service), "2")
    try:
        statuses = monitor.wait_confined(threads=5)  # main, control, 3 guest threads
        for st in statuses:
            assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1", st["Name"]
            assert int(st["CapEff"], 16) == FILE_CAPS & int(_our_caps(), 16), st["Name"]
        assert monitor.net_namespace() != {os.readlink("/proc/self/ns/net")}
        assert len(monitor.net_namespace()) == 1
        sandbox = json.loads(monitor.karn("inspect", "sbx"))[0]["policy"]["sandbox"]
        count = int(sandbox["seccomp"].split()[0])
        assert 100 < count < 200, sandbox
        assert sandbox["namespaces"] == ["net"] and sandbox["landlock"].startswith("ABI ")
    finally:
        monitor.stop()


def test_threads_started_while_the_monitor_confines_itself(karn) -> None:
    """Clients of --metrics connecting throughout start-up make the monitor start a thread
    for each, during its confinement too: from a thread not yet confined (the new one is
    then confined in its turn) or from one already confined (the new one inherits it; the
    routine's setns would fail there), and some of them end at once. Every run starts."""
    port = free_port()
    stop = threading.Event()

    def connect_until_stopped() -> None:
        while not stop.is_set():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            except OSError:
                stop.wait(0.001)

    clients = [threading.Thread(target=connect_until_stopped) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        for _ in range(5):
            got = karn("--metrics", f"127.0.0.1:{port}", BUSYBOX, "echo", "started")
            assert (got.returncode, got.stdout) == (0, b"started\n"), got.stderr.decode()
    finally:
        stop.set()
        for client in clients:
            client.join()


def test_published_port_keeps_the_host_network(build, state_dir: str) -> None:
    service = build("service", extra_flags=("-pthread",))
    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monitor = Monitor(state_dir, "-p", f"{port}:80", str(service), "1")
    try:
        statuses = monitor.wait_confined(threads=2)
        assert all(st["Seccomp"] == "2" for st in statuses)
        assert monitor.net_namespace() == {os.readlink("/proc/self/ns/net")}
    finally:
        monitor.stop()


def test_no_sandbox_leaves_the_monitor_as_it_was(build, state_dir: str) -> None:
    service = build("service", extra_flags=("-pthread",))
    monitor = Monitor(state_dir, "--no-sandbox", str(service), "1")
    try:
        for st in monitor.wait_confined(threads=2):
            assert st["Seccomp"] == "0" and st["NoNewPrivs"] == "0"
        assert monitor.net_namespace() == {os.readlink("/proc/self/ns/net")}
    finally:
        monitor.stop()


def _our_caps() -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return line.split()[1]
    return "0"


WITHOUT_CAPS = ("setpriv", "--inh-caps=-all", "--bounding-set=-all")


def test_unprivileged_monitor_still_confines_itself(karn, secret: Path) -> None:
    """Without any capability (here: root's uid with every capability gone, which KVM
    allows as /dev/kvm is root's), there are no namespaces and nothing to drop, but
    Landlock, no_new_privs and seccomp still hold."""
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv not found (util-linux)")
    env = {**os.environ, PROBE: f"{secret},/etc/shadow"}
    got = subprocess.run([*WITHOUT_CAPS, sys.executable, "-m", "karn", "run", BUSYBOX, "echo",
                          "ok"], capture_output=True, env=env, timeout=TIMEOUT)
    assert got.returncode == 0 and got.stdout == b"ok\n", got.stderr
    outcomes = probe_lines(got.stderr)
    assert outcomes[("main thread", str(secret))] == "denied (EACCES)"
    assert outcomes[("early thread", "/etc/shadow")] == "denied (EACCES)"


def test_non_root_user() -> None:
    """As an ordinary user (nobody), through a private KVM device node it may open."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the nobody user")
    nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    usable = subprocess.run([*nobody, sys.executable, "-c", "import karn, elftools"],
                            capture_output=True, timeout=TIMEOUT)
    if usable.returncode != 0:
        pytest.skip(f"uid 65534 cannot run {sys.executable} with karn's dependencies "
                    "(the Python install is not readable by other users); the "
                    "unprivileged case is covered by test_unprivileged_monitor_*")
    where = Path(tempfile.mkdtemp(prefix="ksb-", dir="/tmp"))
    try:
        where.chmod(0o755)
        secret = where / "secret.txt"  # readable by nobody: only Landlock stands in the way
        secret.write_text("secret\n")
        device = where / "kvm"
        os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(10, 232))  # /dev/kvm's numbers
        os.chown(device, 65534, 65534)
        env = {**os.environ, PROBE: str(secret), "KARN_KVM_DEVICE": str(device)}
        got = subprocess.run([*nobody, sys.executable, "-m", "karn", "run", BUSYBOX, "echo",
                              "ok"], capture_output=True, env=env, timeout=TIMEOUT, cwd="/")
    finally:
        shutil.rmtree(where, ignore_errors=True)
    assert got.returncode == 0 and got.stdout == b"ok\n", got.stderr
    assert probe_lines(got.stderr)[("main thread", str(secret))] == "denied (EACCES)"


PREPARED_NETNS = r"""
import os, threading
from karn.sandbox import privileges
host = os.readlink("/proc/thread-self/ns/net")
t = threading.Thread(target=privileges.prepare_private_network)
t.start()
t.join()
fd = privileges.private_network()
print(os.readlink(f"/proc/self/fd/{fd}") != host,  # a namespace of its own
      os.readlink("/proc/thread-self/ns/net") == host,  # this thread not moved yet
      privileges._prepared is None)  # handed over once
"""


def test_a_network_namespace_made_ahead_is_handed_over_once() -> None:
    """The run's set-up thread may make the private network namespace ahead
    (karn/run/vmstart.py); confinement takes that one, and moves its threads into it."""
    if os.geteuid() != 0:
        pytest.skip("a network namespace needs CAP_SYS_ADMIN")
    got = subprocess.run([sys.executable, "-c", PREPARED_NETNS], capture_output=True,
                         text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == ["True", "True", "True"]
