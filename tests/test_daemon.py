"""`karn daemon`: `karn run` served by a resident karn's forked children behaves as an
in-process run (output, status, working directory, umask, limits, signals), says so in
`karn daemon --status`, and falls back to running in-process when it must."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BUSYBOX
from helpers import wait_for

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 60


def _state(pid: int) -> str:
    """The process's state letter (R, S, T, Z...), or 'gone'."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


class Daemon:
    def __init__(self, state: Path, tree: Path = REPO) -> None:
        self.env = dict(os.environ, KARN_STATE_DIR=str(state), PYTHONPATH=str(tree))
        self.env.pop("KARN_DAEMON", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "karn", "daemon"], env=self.env,
                                     cwd="/", stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # after its imports: serving
        assert "serving `karn run`" in line, line + self.proc.stderr.read()

    def karn(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        """`karn ARGS` of this daemon's tree (from /: `python -m` looks in the working
        directory first)."""
        return subprocess.run([sys.executable, "-m", "karn", *args], env=self.env, cwd="/",
                              capture_output=True, timeout=TIMEOUT)

    def status(self) -> tuple[int, list[int]]:
        """Runs served, and the pids of those still running."""
        got = self.karn("daemon", "--status")
        assert got.returncode == 0, got
        served = int(got.stdout.split(b"; ")[1].split()[0])
        running = got.stdout.split(b"running: ")[1].split()
        return served, [int(pid) for pid in running if pid != b"none"]

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.communicate(timeout=TIMEOUT)[1]
        except subprocess.TimeoutExpired:
            self.proc.kill()  # (a failing test: leave nothing behind)
            return self.proc.communicate()[1]


def _sleeper(daemon: Daemon) -> subprocess.Popen[bytes]:
    """`karn run` of a guest that sleeps a minute, through the daemon, once it is running."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "karn", "run", BUSYBOX, "sh", "-c", "echo ready; sleep 60"],
        env=daemon.env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


@pytest.fixture()
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "state")
    yield d
    d.stop()


def test_a_run_through_the_daemon_is_an_in_process_run(daemon: Daemon, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(BUSYBOX, work / "busybox")  # found from the client's working directory
    script = "read line; echo out $line; echo err >&2; pwd; umask; ulimit -n; exit 3"
    argv = ("run", "-v", f"{work}:/w", "-w", "/w", "./busybox", "sh", "-c", script)

    def run(**env: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["sh", "-c", 'umask 027; ulimit -n 777; exec "$@"', "sh",
             sys.executable, "-m", "karn", *argv],
            env={**daemon.env, **env}, cwd=work, input=b"in\n", capture_output=True,
            timeout=TIMEOUT)

    served, _ = daemon.status()
    here = run(KARN_DAEMON="0")
    assert daemon.status()[0] == served  # KARN_DAEMON=0: in-process
    there = run()
    assert daemon.status()[0] == served + 1
    assert (there.returncode, there.stdout, there.stderr) == \
        (here.returncode, here.stdout, here.stderr)
    assert here.returncode == 3 and here.stdout.startswith(b"out in\n/w\n"), here


def test_guest_killed_and_usage_errors_give_in_process_statuses(daemon: Daemon) -> None:
    killed = daemon.karn("run", BUSYBOX, "sh", "-c", "kill -9 $$")
    assert killed.returncode == 128 + signal.SIGKILL, killed
    bad = daemon.karn("run", "--memory", "lots", BUSYBOX, "true")
    assert bad.returncode != 0 and bad.stderr.count(b"\n") == 1, bad
    assert b"Traceback" not in bad.stderr
    assert daemon.status()[0] == 2


def test_signals_reach_the_run_it_is_confined_and_a_vanished_client_ends_it(
        daemon: Daemon) -> None:
    interrupted = _sleeper(daemon)
    interrupted.send_signal(signal.SIGINT)  # Ctrl-C, as a terminal would send it
    assert interrupted.wait(TIMEOUT) == 130
    abandoned = _sleeper(daemon)
    [run] = daemon.status()[1]
    # confined as an in-process run is (the daemon itself is not), its network made ahead
    for task in Path(f"/proc/{run}/task").iterdir():
        try:
            status = dict(line.split(":\t", 1) for line in
                          (task / "status").read_text().splitlines() if ":\t" in line)
            net = os.readlink(task / "ns/net")
        except FileNotFoundError:
            continue  # a thread that ended meanwhile
        assert (status["Seccomp"], status["NoNewPrivs"]) == ("2", "1"), status["Name"]
        if os.geteuid() == 0:  # (as root the run's network is a namespace of its own)
            assert net != os.readlink("/proc/self/ns/net")
    abandoned.kill()  # no chance to forward anything: the daemon sees its socket close
    abandoned.wait(TIMEOUT)
    wait_for(lambda: _state(run) in ("gone", "Z"), "the abandoned run to end", TIMEOUT)




def test_ctrl_z_stops_the_run_and_fg_continues_it(daemon: Daemon) -> None:
    """As an in-process run, which SIGTSTP's default action stops (the served run leads
    a session of its own, where Linux would drop a SIGTSTP)."""
    client = _sleeper(daemon)
    try:
        [run] = daemon.status()[1]
        client.send_signal(signal.SIGTSTP)
        wait_for(lambda: _state(run) == "T" and _state(client.pid) == "T",
                 "the run and its client to stop", TIMEOUT)
        client.send_signal(signal.SIGCONT)  # what `fg` sends
        wait_for(lambda: _state(run) != "T" and _state(client.pid) != "T",
                 "the run and its client to continue", TIMEOUT)
        client.send_signal(signal.SIGINT)
        assert client.wait(TIMEOUT) == 130
    finally:
        client.kill()
        client.wait(TIMEOUT)


def test_declined_runs_run_in_process(tmp_path: Path) -> None:
    """A run with -t is not the daemon's, silently, nor one whose request is too large;
    one after karn's sources changed runs in-process and says why."""
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "karn", tree / "karn", symlinks=True)
    daemon = Daemon(tmp_path / "state", tree)
    try:
        terminal = daemon.karn("run", "-t", BUSYBOX, "echo", "hi")
        assert terminal.returncode == 0 and b"hi" in terminal.stdout, terminal
        assert daemon.status()[0] == 1  # handed over, then declined
        # a request too large for the daemon (an environment over 1 MiB): refused unread
        daemon.env.update({f"BIG{i}": "x" * 120_000 for i in range(10)})
        big = daemon.karn("run", BUSYBOX, "echo", "hi")
        assert big.returncode == 0 and big.stdout == b"hi\n", big
        assert daemon.status()[0] == 1
        daemon.env = {k: v for k, v in daemon.env.items() if not k.startswith("BIG")}
        source = tree / "karn/kernel/sys_misc.py"
        os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
        changed = daemon.karn("run", BUSYBOX, "echo", "hi")
        assert changed.returncode == 0 and changed.stdout == b"hi\n", changed
        assert b"karn changed since the daemon started" in changed.stderr
        assert b"restart it" in changed.stderr
    finally:
        daemon.stop()


def test_one_daemon_at_a_time_and_stop(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "state")
    try:
        second = daemon.karn("daemon")
        assert second.returncode != 0
        assert second.stderr.decode().strip() == \
            f"karn: a karn daemon already serves {tmp_path / 'state' / 'daemon.sock'}"
        stopped = daemon.karn("daemon", "--stop")
        assert stopped.returncode == 0 and b"stopping" in stopped.stdout, stopped
        assert daemon.proc.wait(TIMEOUT) == 0
        assert not (tmp_path / "state/daemon.sock").exists()
        assert daemon.karn("daemon", "--status").returncode == 3
        after = daemon.karn("run", BUSYBOX, "echo", "here")  # no daemon: in-process
        assert after.returncode == 0 and after.stdout == b"here\n", after
    finally:
        daemon.stop()


def test_concurrent_runs_hold_only_their_own_streams(daemon: Daemon) -> None:
    """The second run's child is forked while the daemon holds the request's descriptors:
    it keeps one copy of each of its client's streams, and none of the other run's."""
    clients = [_sleeper(daemon), _sleeper(daemon)]
    try:
        runs = daemon.status()[1]
        assert len(runs) == 2
        pipes = [[os.readlink(f"/proc/{c.pid}/fd/{fd}") for fd in (1, 2)] for c in clients]
        held = [[os.readlink(fd) for fd in Path(f"/proc/{run}/fd").iterdir()] for run in runs]
        counts = [[[h.count(pipe) for pipe in client] for client in pipes] for h in held]
        # each run holds its client's two pipes as many times as the other run does its
        # client's (the run's own use, fd 1 and 2 and the guest's copies), the other's never
        mine = sorted(((c[0], c[1]) for c in counts), key=lambda c: c[0][0] == 0)
        assert mine[0][1] == [0, 0] and mine[1][0] == [0, 0], counts
        assert mine[0][0] == mine[1][1] and mine[0][0][0] > 0, counts
    finally:
        for client in clients:
            client.kill()
            client.wait(TIMEOUT)


def test_a_socket_someone_else_could_have_placed_is_not_used(tmp_path: Path) -> None:
    """A state dir others may write to, or a socket of another user: `karn run` runs
    in-process and sends nothing there (its environment and streams are the user's)."""
    import socket

    state = tmp_path / "state"
    state.mkdir()
    env = dict(os.environ, KARN_STATE_DIR=str(state), PYTHONPATH=str(REPO))
    env.pop("KARN_DAEMON", None)
    for mode, owner in ((0o777, os.geteuid()), (0o700, 65534)):
        state.chmod(mode)
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(str(state / "daemon.sock"))
            listener.listen(1)
            if owner != os.geteuid():
                if os.geteuid() != 0:
                    continue  # (only root can give the socket away)
                os.chown(state / "daemon.sock", owner, owner)
            got = subprocess.run([sys.executable, "-m", "karn", "run", BUSYBOX, "echo", "hi"],
                                 env=env, cwd="/", capture_output=True, timeout=TIMEOUT)
            assert got.returncode == 0 and got.stdout == b"hi\n", got
            listener.setblocking(False)
            with pytest.raises(BlockingIOError):
                listener.accept()  # never connected to
        (state / "daemon.sock").unlink()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="needs root and unshare(1)")
def test_a_client_confined_more_than_the_daemon_runs_in_process(daemon: Daemon) -> None:
    """A run the daemon forks would have the daemon's namespaces and privileges: a client
    in a network namespace of its own (or with fewer capabilities, no_new_privs, a seccomp
    filter) is declined, and its run goes on in-process, said on stderr."""
    served = daemon.status()[0]
    got = subprocess.run(["unshare", "--net", sys.executable, "-m", "karn", "run", BUSYBOX,
                          "echo", "hi"], env=daemon.env, cwd="/", capture_output=True,
                         timeout=TIMEOUT)
    assert got.returncode == 0 and got.stdout == b"hi\n", got
    assert b"namespaces differ from the daemon's: running here" in got.stderr, got.stderr
    assert daemon.status()[0] == served + 1  # handed over, then declined


def test_a_daemon_without_a_spare_still_stops(tmp_path: Path) -> None:
    """SIGTERM when nothing else will wake the daemon (its spare died and no run goes)."""
    daemon = Daemon(tmp_path / "state")
    try:
        children = Path(f"/proc/{daemon.proc.pid}/task/{daemon.proc.pid}/children")
        [spare] = wait_for(lambda: children.read_text().split(), "the spare", TIMEOUT)
        os.kill(int(spare), signal.SIGKILL)
        wait_for(lambda: not children.read_text().split(), "the spare to be reaped", TIMEOUT)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(TIMEOUT) == 0
        assert not (tmp_path / "state/daemon.sock").exists()
    finally:
        daemon.stop()


def test_clients_that_send_nothing_hold_up_no_run(daemon: Daemon) -> None:
    """Connections that never send their request (a client stuck before it sends,
    another program of the user's) keep no `karn run` or `karn daemon --status` waiting:
    the daemon reads a request once it has come. It read each at once, with a 5 s
    timeout: twenty in a row held it 100 s, the run went in-process after its 10 s wait,
    and the status asked after it timed out."""
    import socket

    served_before = daemon.status()[0]
    silent = []
    for _ in range(20):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(daemon.env["KARN_STATE_DIR"] + "/daemon.sock")
        silent.append(sock)
    try:
        got = daemon.karn("run", BUSYBOX, "echo", "served")
        assert (got.returncode, got.stdout) == (0, b"served\n"), got.stderr
        assert daemon.status()[0] == served_before + 1  # by the daemon, not in-process
    finally:
        for sock in silent:
            sock.close()
