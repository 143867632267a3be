"""karn as containerd's runc binary (docs/oci-runtime.md): Debian's containerd, started
here with its own root, state directory and sockets, runs the busybox-static image of
tests/test_oci.py (saved by podman as an OCI archive, imported with `ctr images import`)
through its runc shim with `ctr run --runc-binary karn-oci`, beside runc on the same
image: the same exit statuses and output; `ctr task kill` and `delete` leave no state
directory, shim or monitor behind. The CRI plugin loads with karn as a runtime named in
config.toml (the runc shim's BinaryName option); no CRI client (crictl) is installable
here, so a pod is not run through it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_oci import image, karn_oci, rootfs, runtimes  # noqa: F401 - fixtures

TIMEOUT = 120
NAMESPACE = "karn-test"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="containerd runs as root"),
    pytest.mark.slow,
]

CONFIG = """\
version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "karn"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.karn]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.karn.options]
        BinaryName = "{karn_oci}"
        Root = "{d}/karn-root"
"""


class Containerd:
    """One containerd of this test's own: its directory and how to reach it."""

    def __init__(self, directory: Path, process: subprocess.Popen[bytes]) -> None:
        self.directory = directory
        self.process = process
        self.address = str(directory / "containerd.sock")

    def ctr(self, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ctr", "--address", self.address, "--namespace", NAMESPACE,
                               *args], capture_output=True, text=True, timeout=timeout)

    def task_dir(self, cid: str) -> Path:
        return self.directory / "state" / "io.containerd.runtime.v2.task" / NAMESPACE / cid


def wait_for(condition, what: str) -> None:  # noqa: ANN001 - a callable returning a truth
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def containerd(karn_oci: str) -> Iterator[Containerd]:  # noqa: F811 - the fixture
    assert shutil.which("containerd") and shutil.which("ctr"), \
        "containerd is needed (apt-get install containerd)"
    # short: the sockets' paths must fit in sun_path
    directory = Path(tempfile.mkdtemp(prefix="ctrd-", dir="/tmp"))
    config = directory / "config.toml"
    config.write_text(CONFIG.format(d=directory, karn_oci=karn_oci))
    log = open(directory / "containerd.log", "wb")  # noqa: SIM115 - lives with the daemon
    process = subprocess.Popen(["containerd", "--config", str(config)], stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    daemon = Containerd(directory, process)
    try:
        wait_for(lambda: daemon.ctr("version", timeout=10).returncode == 0
                 or process.poll() is not None, "containerd to serve")
        assert process.poll() is None, (directory / "containerd.log").read_text()[-2000:]
        yield daemon
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        subprocess.run(["umount", "-R", str(directory / "root")], capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def ctr_image(containerd: Containerd, image: str,  # noqa: F811 - the fixture
              tmp_path_factory: pytest.TempPathFactory) -> str:
    """tests/test_oci.py's podman image, saved as an OCI archive, in containerd's store."""
    archive = tmp_path_factory.mktemp("oci-archive") / "image.tar"
    subprocess.run(["podman", "save", "--format", "oci-archive", "-o", str(archive), image],
                   check=True, capture_output=True, timeout=TIMEOUT)
    name = image.rsplit(":", 1)[0]
    done = containerd.ctr("images", "import", "--base-name", name, str(archive))
    assert done.returncode == 0, done.stderr
    assert image in containerd.ctr("images", "ls", "-q").stdout.split()
    return image


def container_processes(containerd: Containerd, cid: str) -> list[int]:
    """Host processes of one container: its shim (named by id and this containerd's
    address) and any process still holding its task directory open as its cwd."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        shim = containerd.address.encode() in cmdline and cid.encode() in cmdline
        if shim or cwd.startswith(str(containerd.task_dir(cid))):
            found.append(int(entry))
    return found


def test_ctr_run_matches_runc(karn_oci: str, containerd: Containerd,  # noqa: F811
                              ctr_image: str, tmp_path: Path) -> None:
    cases = [
        [ctr_image, "ID", "/bin/echo", "hello"],
        [ctr_image, "ID", "/bin/sh", "-c", "exit 7"],
        [ctr_image, "ID", "/bin/false"],
        ["--env", "GREETING=hi there", ctr_image, "ID", "/bin/sh", "-c", 'echo "$GREETING"'],
        ["--cwd", "/www", ctr_image, "ID", "/bin/ls"],
        ["--read-only", ctr_image, "ID", "/bin/touch", "/new-file"],
    ]
    for case in cases:
        seen = {}
        for name, runtime in runtimes(karn_oci).items():
            cid = "t-" + uuid.uuid4().hex[:8]
            args = [cid if a == "ID" else a for a in case]
            done = containerd.ctr("run", "--rm", "--runc-binary", runtime, "--runc-root",
                                  str(tmp_path / name), *args)
            seen[name] = (done.returncode, done.stdout)
            assert not (tmp_path / name / cid).exists()
            assert not containerd.task_dir(cid).exists()
        assert seen["karn"] == seen["runc"], case
    assert seen["karn"][0] == 1  # touch of the read-only root failed: a check that can fail


def test_ctr_run_of_a_missing_program_fails_create(karn_oci: str,  # noqa: F811
                                                   containerd: Containerd, ctr_image: str,
                                                   tmp_path: Path) -> None:
    for name, runtime in runtimes(karn_oci).items():
        cid = "t-" + uuid.uuid4().hex[:8]
        done = containerd.ctr("run", "--rm", "--runc-binary", runtime, "--runc-root",
                              str(tmp_path / name), ctr_image, cid, "/nosuch")
        assert done.returncode == 1, (name, done.stderr)
        assert "no such file or directory" in done.stderr, (name, done.stderr)
        assert not containerd.task_dir(cid).exists()
        containerd.ctr("container", "rm", cid)  # `ctr run --rm` leaves it when create fails


def detached_lifecycle(containerd: Containerd, runtime: str, runc_root: Path, name: str
                       ) -> list[tuple[str, object]]:
    """ctr run -d, task ls, kill TERM (ignored by the namespace's init), kill KILL,
    task delete, container rm; what ctr shows of each and what is left on the host."""
    cid = "t-" + uuid.uuid4().hex[:8]
    seen: list[tuple[str, object]] = []

    def status() -> str:
        listed = containerd.ctr("task", "ls").stdout
        match = re.search(rf"^{cid}\s+(\d+)\s+(\w+)", listed, re.M)
        return match.group(2) if match else "gone"

    done = containerd.ctr("run", "-d", "--runc-binary", runtime, "--runc-root", str(runc_root),
                          name, cid, "/bin/sleep", "600")
    seen.append(("run -d", done.returncode))
    wait_for(lambda: status() == "RUNNING", "the task to run")
    pid = int(re.search(rf"^{cid}\s+(\d+)", containerd.ctr("task", "ls").stdout,
                        re.M).group(1))
    seen.append(("state directory while running", (runc_root / cid).is_dir()))
    seen.append(("kill TERM", containerd.ctr("task", "kill", cid).returncode))
    time.sleep(0.5)  # a TERM that ended it would have done so by now; it must not
    seen.append(("after TERM", status()))
    seen.append(("delete while running", containerd.ctr("task", "delete", cid).returncode))
    seen.append(("kill KILL", containerd.ctr("task", "kill", "-s", "KILL", cid).returncode))
    wait_for(lambda: status() == "STOPPED", "the task to stop")
    deleted = containerd.ctr("task", "delete", cid)
    seen.append(("task delete", (deleted.returncode, "exit code 137" in deleted.stderr)))
    seen.append(("container rm", containerd.ctr("container", "rm", cid).returncode))
    wait_for(lambda: not container_processes(containerd, cid), "the shim to end")
    seen.append(("init alive", os.path.exists(f"/proc/{pid}")))
    seen.append(("state directory left", (runc_root / cid).exists()))
    seen.append(("task directory left", containerd.task_dir(cid).exists()))
    return seen


def test_ctr_kill_and_delete_leave_nothing_behind(karn_oci: str,  # noqa: F811
                                                  containerd: Containerd, ctr_image: str,
                                                  tmp_path: Path) -> None:
    seen = {name: detached_lifecycle(containerd, runtime, tmp_path / name, ctr_image)
            for name, runtime in runtimes(karn_oci).items()}
    assert seen["karn"] == seen["runc"]
    assert ("after TERM", "RUNNING") in seen["karn"]
    assert ("state directory left", False) in seen["karn"]


def test_the_cri_plugin_loads_with_karn_as_its_runtime(containerd: Containerd) -> None:
    """config.toml names karn-oci as the runc shim's BinaryName for a CRI runtime
    handler `karn`; containerd accepts it (a RuntimeClass with handler: karn uses it)."""
    plugins = containerd.ctr("plugins", "ls").stdout
    assert re.search(r"io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok", plugins), plugins


def test_signals_reach_the_guest_through_the_shim(karn_oci: str,  # noqa: F811
                                                  containerd: Containerd, ctr_image: str,
                                                  tmp_path: Path) -> None:
    """A guest that handles TERM ends on `ctr task kill` with its own status (a shell
    that traps it and spins on builtins until then)."""
    cid = "t-" + uuid.uuid4().hex[:8]
    out = tmp_path / "out"
    out.mkdir()
    done = containerd.ctr("run", "-d", "--runc-binary", karn_oci, "--runc-root",
                          str(tmp_path / "root"), "--mount",
                          f"type=bind,src={out},dst=/out,options=rbind:rw", ctr_image, cid,
                          "/bin/sh", "-c", "trap 'exit 42' TERM; echo > /out/ready; "
                          "while :; do :; done")  # builtins only: no new process
    assert done.returncode == 0, done.stderr
    try:
        wait_for((out / "ready").exists, "the shell to set its trap")
        assert containerd.ctr("task", "kill", "-s", str(int(signal.SIGTERM)),
                              cid).returncode == 0
        wait_for(lambda: re.search(rf"^{cid}\s+\d+\s+STOPPED", containerd.ctr(
            "task", "ls").stdout, re.M) is not None, "the task to stop")
        deleted = containerd.ctr("task", "delete", cid)
        assert "exit code 42" in deleted.stderr, deleted.stderr
    finally:
        containerd.ctr("task", "delete", "--force", cid)
        containerd.ctr("container", "rm", cid)
