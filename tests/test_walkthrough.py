"""A new user's first hour, as a test: a fresh clone of this repository, set up with the
README's first command (a venv and its `karn` command), then the commands of README.md and
docs/*.md in the order a reader meets them: run, build, a local registry's push and pull,
publish, detach/ps/logs/stop, trace and a partitioned system. Each command is taken from
the document it is in (a doc that changes a command changes what runs here), run by bash in
the clone with only the venv's `karn` on PATH, and must give the status the docs promise
with no Python traceback anywhere in its output."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO, free_port, wait_for
from test_registry import Registry, start_registry

SETUP_TIMEOUT = 900.0  # pip installing karn's dependencies into a new venv, on a loaded host
COMMAND_TIMEOUT = 300.0
DOC_REGISTRY = "127.0.0.1:5000"  # the registry the docs name; the test's own replaces it


class Reader:
    """A user in a shell in the clone: runs documented commands and checks each one."""

    def __init__(self, clone: Path, env: dict[str, str]) -> None:
        self.clone = clone
        self.env = env

    def doc(self, name: str) -> str:
        return (self.clone / name).read_text()

    def command(self, doc: str, start: str) -> str:
        """The line of the document `doc` that begins with `start` (after an optional
        `$ ` prompt), without its trailing comment: it must be there, as written."""
        for line in self.doc(doc).splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith(start):
                return re.sub(r"\s+#\s.*$", "", line)
        raise AssertionError(f"{doc} no longer has a command starting with {start!r}")

    def sh(self, command: str, status: int = 0, cwd: Path | None = None,
           timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
        ran = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd or self.clone,
                             env=self.env, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
        said = f"$ {command}\n{ran.stdout}{ran.stderr}"
        assert ran.returncode == status, f"exit status {ran.returncode}, not {status}:\n{said}"
        assert "Traceback" not in ran.stdout + ran.stderr, said
        return ran

    def doc_sh(self, doc: str, start: str, status: int = 0, cwd: Path | None = None,
               replace: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the command of `doc` that begins with `start`, with the placeholders in
        `replace` filled in (a port of the test's own for the docs' 8080, ...)."""
        command = self.command(doc, start)
        for old, new in (replace or {}).items():
            command = command.replace(old, new)
        return self.sh(command, status, cwd)


@pytest.fixture()
def user(tmp_path: Path) -> Iterator[Reader]:
    """A clone of this checkout's HEAD, set up by the README's first command. A short
    directory for the store and state: instance sockets live under it."""
    base = Path(tempfile.mkdtemp(prefix="kw-", dir="/tmp"))
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "KARN_HOME", "KARN_STATE_DIR")}
    env.update(KARN_HOME=str(base / "home"), KARN_STATE_DIR=str(base / "state"))
    if not (REPO / ".git").exists():
        pytest.fail(f"{REPO} is not a git checkout: nothing to clone", pytrace=False)
    clone = tmp_path / "karn"  # HEAD: commit what is to be walked through
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=300)
    try:
        yield Reader(clone, env)
    finally:
        for meta in (base / "state" / "instances").glob("*/meta.json"):  # nothing left running
            with contextlib.suppress(OSError, ValueError, KeyError):
                os.kill(json.loads(meta.read_text())["pid"], signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture()
def registry(tmp_path: Path) -> Iterator[Registry]:
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry not found (apt-get install docker-registry)", pytrace=False)
    with contextlib.contextmanager(start_registry)(tmp_path / "registry") as running:
        yield running


def http_get(port: int) -> str:
    def get() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
                return answer.read().decode()
        except OSError:
            return None
    return wait_for(get, f"an answer on port {port}", timeout=120)


@pytest.mark.breadth
@pytest.mark.slow
def test_new_user_walkthrough(user: Reader, registry: Registry, tmp_path: Path) -> None:
    # README, first command: install karn (a venv here) and run the bundled example
    setup = user.doc("README.md").split("```sh\n", 1)[1].splitlines()[0]
    assert setup.startswith("make example"), setup
    made = user.sh(setup, timeout=SETUP_TIMEOUT)
    assert "Hello from hello, running on Linux x86_64 as a KVM unikernel" in made.stdout
    venv_bin = user.clone / ".venv" / "bin"
    assert f"karn is {venv_bin}/karn" in made.stdout  # and it says where the command is
    # what it says next: put the venv on PATH
    user.env["PATH"] = f"{venv_bin}:{user.env['PATH']}"
    assert user.sh("command -v karn").stdout.strip() == str(venv_bin / "karn")

    # README: Usage
    assert user.doc_sh("README.md", "karn run /bin/busybox echo").stdout == "hello\n"
    native = subprocess.run(["sha256sum", "README.md"], cwd=user.clone, capture_output=True,
                            text=True, check=True).stdout
    assert user.doc_sh("README.md", 'karn run -v "$PWD:/data:ro"').stdout == native
    assert "GREETING=hi\n" in user.doc_sh("README.md", "karn run -e GREETING=hi").stdout

    # README: Images, with the test's registry in place of the docs' 127.0.0.1:5000
    here = {DOC_REGISTRY: registry.host}
    user.doc_sh("README.md", "karn build -t hello:1 ")
    ran = user.doc_sh("README.md", "karn run hello:1", replace={"ARGS...": "walker"})
    assert ran.stdout.startswith("Hello from walker,")
    pushed = user.doc_sh("README.md", "karn push hello:1", replace=here).stdout.strip()
    assert pushed.startswith("sha256:")

    # docs/images.md, its first block in order
    (user.clone / "pw.txt").write_text("any\n")  # this registry takes any login
    said = {start: user.doc_sh("docs/images.md", start, replace=here).stdout
            for start in ("karn build -t hello:1", "karn run hello:1 --flag", "karn tag hello:1",
                          "karn login", "karn push 127.0.0.1", "karn pull 127.0.0.1",
                          "karn images; karn inspect hello:1")}
    pushed = said["karn push 127.0.0.1"].strip()  # the image built again just above
    assert said["karn pull 127.0.0.1"].strip() == pushed
    assert re.fullmatch(r"[0-9a-f]{12}\n", user.sh("karn images -q").stdout)  # one left
    # nothing local left: `karn run` pulls, saying so on stderr, and runs it
    user.sh(f"karn rm {registry.host}/hello:1 && karn prune")
    pulled = user.doc_sh("docs/images.md", "karn pull 127.0.0.1", replace=here)
    assert pulled.stdout.strip() == pushed and "pulling" in pulled.stderr
    user.sh(f"karn rm {registry.host}/hello:1 && karn prune")
    ran = user.sh(f"karn run {registry.host}/hello:1")
    assert ran.stdout.startswith("Hello from hello,") and "pulling" in ran.stderr
    user.sh("karn inspect hello:1", status=1)  # removed: docs/cli.md's "not found"

    # docs/instances.md: nginx detached with a published port; ps, logs, stats, stop, rm
    port = str(free_port())
    user.doc_sh("docs/instances.md", "karn build examples/nginx")
    started = user.doc_sh("docs/instances.md", "karn run -d --name web -p 8080:80",
                          replace={"8080:": f"{port}:"})
    instance = started.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{12}", instance), started.stdout
    assert "hello from nginx" in http_get(int(port))
    listed = user.doc_sh("docs/instances.md", "karn ps").stdout
    assert re.search(rf"^{instance}\s+web\s.*\srunning\s.*{port}->80/tcp$", listed, re.M), listed
    follow_logs_until_ctrl_c(user, user.command("docs/instances.md", "karn logs -f web"))
    assert instance in user.doc_sh("docs/instances.md", "karn stats --no-stream").stdout
    inspected = json.loads(user.doc_sh("docs/instances.md", "karn inspect web").stdout)
    assert inspected[0]["Id"] == instance and inspected[0]["State"] == "running"
    assert user.doc_sh("docs/instances.md", "karn stop -t 5 web").stdout == "web\n"
    assert re.search(rf"^{instance}\s+web\s.*exited \(0\)",
                     user.doc_sh("docs/instances.md", "karn ps -a").stdout, re.M)
    user.doc_sh("docs/instances.md", "karn rm web")
    user.sh("karn logs web", status=1)

    # docs/debugging.md: the trace of a read through a volume
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_text("traced text\n")
    traced = user.doc_sh("docs/debugging.md", "karn run --trace", cwd=data)
    assert traced.stdout == "traced text\n"
    assert 'openat(AT_FDCWD, "/data/f.txt", O_RDONLY) = 3' in traced.stderr
    assert "exit_group(0) = ?" in traced.stderr

    # docs/systems.md: the example system, built and brought up as the docs say
    up = user.doc_sh("docs/systems.md", "cd examples/system && make")
    assert "logger | ALERT reading 3: 71.5 is over 60" in up.stdout
    assert "every partition has ended: system pipeline stops" in up.stderr
    status = user.sh("karn system status pipeline").stdout
    assert re.search(r"sensor\.readings->detector\.readings .* 10 +8 +0 +2 +0$", status, re.M)
    user.sh("karn system down pipeline")  # already down: 0 (docs/cli.md)


def follow_logs_until_ctrl_c(user: Reader, command: str) -> None:
    """`karn logs -f` shows the request and keeps following; Ctrl-C ends it with 130."""
    follow = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=user.clone, env=user.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(COMMAND_TIMEOUT, follow.kill)  # never wait forever on it
    watchdog.start()
    try:
        seen = ""
        assert follow.stdout is not None
        while '"GET / HTTP/1.1" 200' not in seen:
            line = follow.stdout.readline()
            assert line, f"{command} ended before showing the request:\n{seen}"
            seen += line
        follow.send_signal(signal.SIGINT)
        out, err = follow.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 130, f"{command}: exit {follow.returncode}\n{seen}{out}{err}"
    assert "Traceback" not in seen + out + err


@pytest.mark.parametrize(("args", "closed"), [
    (["ps", "-a"], "stdout"),  # `karn ps -a | head -0`
    (["images", "--format", "json"], "stdout"),
    (["run", "/no/such/program"], "stderr"),  # the error line itself cannot be written
])
def test_closed_output_pipe_ends_quietly(args: list[str], closed: str,
                                         state_env: dict[str, str]) -> None:
    """A reader that has gone (`karn system logs | head`): karn ends as a program killed
    by SIGPIPE would, 141, with no BrokenPipeError traceback on the other stream."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe fails with EPIPE
    try:
        streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, closed: write_end}
        ran = subprocess.run([sys.executable, "-m", "karn", *args], env=state_env,
                             stdin=subprocess.DEVNULL, timeout=COMMAND_TIMEOUT, **streams)
    finally:
        os.close(write_end)
    assert ran.returncode == 128 + signal.SIGPIPE, ran
    assert (ran.stderr if closed == "stdout" else ran.stdout) == b"", ran
