"""karn as containerd's runc binary (docs/oci-runtime.md): Debian's containerd, started
here with its own root, state directory and sockets, runs the busybox-static image of
tests/test_oci.py (saved by podman as an OCI archive, imported with `ctr images import`)
through its runc shim, beside runc on the same image:

- `ctr run --runc-binary karn-oci`: the same exit statuses and output; `ctr task kill`
  and `delete` leave no state directory, shim or monitor behind.
- The CRI path a kubelet takes: containerd's CRI plugin with karn as a runtime handler
  (the runc shim's BinaryName option in config.toml; a RuntimeClass names the handler),
  driven over its gRPC socket as a kubelet would (crictl is not packaged for Debian 12):
  a pod sandbox and its containers, their exit codes and logs; two containers of one
  pod reach each other on 127.0.0.1 in the pod's network namespace, made by CNI (the
  ptp plugin, an address range of this test's own).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
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

# restrict_oom_score_adj: runc (the reference) cannot lower the sandbox's OOM score here
# (no CAP_SYS_RESOURCE); karn has no host process to score.
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
  disable_apparmor = true
  restrict_oom_score_adj = true
  sandbox_image = "{pause}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "karn"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.karn]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.karn.options]
        BinaryName = "{karn_oci}"
        Root = "{d}/karn-root"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc-root"
"""
PAUSE_IMAGE = "localhost/karn-test-pause:1"  # the test image with a command that waits
# The pods' network: a veth pair per pod (CNI's ptp plugin), addresses from a range of
# this test's own, leases kept in the test's directory.
CNI = """{{"cniVersion": "0.4.0", "name": "karn-test", "plugins": [
  {{"type": "ptp", "ipMasq": false,
    "ipam": {{"type": "host-local", "subnet": "10.213.77.0/24", "dataDir": "{d}/cni-leases"}}}},
  {{"type": "loopback"}}]}}
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
    config.write_text(CONFIG.format(d=directory, karn_oci=karn_oci, pause=PAUSE_IMAGE))
    (directory / "cni").mkdir()
    (directory / "cni" / "10-karn-test.conflist").write_text(CNI.format(d=directory))
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
        if process.poll() is None:
            remove_all_pods(daemon)  # their network namespaces and veth pairs too
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        unmount_below(directory)
        shutil.rmtree(directory, ignore_errors=True)


def unmount_below(directory: Path) -> None:
    """Whatever containerd left mounted in its directories (a test that failed midway)."""
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(f"{directory}/")]
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


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


# ---- the CRI path (what a kubelet does with a RuntimeClass whose handler is karn)
#
# The CRI is gRPC (k8s.io/cri-api, runtime.v1); its messages are written here in the
# protocol-buffer wire format directly, field numbers from the API's definition, so no
# generated code is needed: a message is {field number: value or [values]}.

K8S_NAMESPACE = "k8s.io"  # where the CRI plugin keeps its images and containers
POD_MODE, CONTAINER_MODE, NODE_MODE = 0, 1, 2  # NamespaceMode
CONTAINER_EXITED = 2  # ContainerState


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def pb_encode(fields: dict[int, object]) -> bytes:
    out = bytearray()
    for number, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, int):  # varint: ints, bools, enums
                out += _varint(number << 3) + _varint(int(item))
                continue
            data = (item.encode() if isinstance(item, str)
                    else pb_encode(item) if isinstance(item, dict) else bytes(item))
            out += _varint(number << 3 | 2) + _varint(len(data)) + data
    return bytes(out)


def pb_decode(data: bytes) -> dict[int, list]:
    """Field number -> its values: ints for varints, bytes for everything else."""
    fields: dict[int, list] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = varint()
        kind = key & 7
        if kind == 0:
            value: object = varint()
        elif kind == 2:
            size = varint()
            value, i = data[i:i + size], i + size
        else:  # fixed 64 or 32 bits
            width = 8 if kind == 1 else 4
            value, i = data[i:i + width], i + width
        fields.setdefault(key >> 3, []).append(value)
    return fields


class Cri:
    """runtime.v1.RuntimeService of containerd's CRI plugin."""

    def __init__(self, containerd: Containerd) -> None:
        import grpc  # the test extra's grpcio

        self.channel = grpc.insecure_channel(f"unix://{containerd.address}")

    def call(self, method: str, request: dict[int, object]) -> dict[int, list]:
        stub = self.channel.unary_unary(f"/runtime.v1.RuntimeService/{method}",
                                        request_serializer=bytes,
                                        response_deserializer=bytes)
        return pb_decode(stub(pb_encode(request), timeout=TIMEOUT))

    def run_pod(self, config: dict[int, object], handler: str) -> str:
        return self.call("RunPodSandbox", {1: config, 2: handler})[1][0].decode()

    def pod_network_namespace(self, pod: str) -> str:
        status = self.call("PodSandboxStatus", {1: pod, 2: True})
        info = {pb_decode(e)[1][0].decode(): pb_decode(e)[2][0].decode()
                for e in status.get(2, [])}
        spec = json.loads(info["info"])["runtimeSpec"]
        return next(n["path"] for n in spec["linux"]["namespaces"] if n["type"] == "network")

    def start_container(self, pod: str, pod_config: dict[int, object], name: str,
                        args: list[str], env: dict[str, str] | None = None,
                        network: int = POD_MODE) -> str:
        config = {1: {1: name}, 2: {1: PAUSE_IMAGE}, 3: args,
                  6: [{1: k, 2: v} for k, v in (env or {}).items()], 11: f"{name}.log",
                  15: {2: {3: {1: network, 2: CONTAINER_MODE, 3: network}}}}
        cid = self.call("CreateContainer", {1: pod, 2: config, 3: pod_config})[1][0].decode()
        self.call("StartContainer", {1: cid})
        return cid

    def wait_exited(self, cid: str) -> int:
        """The exit code once the container has exited."""
        status: dict[int, list] = {}

        def exited() -> bool:
            nonlocal status
            status = pb_decode(self.call("ContainerStatus", {1: cid})[1][0])
            return status.get(3, [0])[0] == CONTAINER_EXITED

        wait_for(exited, f"container {cid} to exit")
        code = status.get(7, [0])[0]
        return code - (1 << 32) if code >= 1 << 31 else code

    def remove_pod(self, pod: str) -> None:
        self.call("StopPodSandbox", {1: pod})
        self.call("RemovePodSandbox", {1: pod})


def remove_all_pods(containerd: Containerd) -> None:
    try:
        cri = Cri(containerd)
        for item in cri.call("ListPodSandbox", {}).get(1, []):
            cri.remove_pod(pb_decode(item)[1][0].decode())
    except Exception:  # noqa: BLE001 - a cleanup after a failure: what can go, goes
        pass


def pod_config(name: str, logs: Path, network: int) -> dict[int, object]:
    """A PodSandboxConfig as a kubelet sends it; a pod on the node's network has no
    hostname of its own (runc refuses one without a UTS namespace)."""
    metadata = {1: name, 2: uuid.uuid4().hex, 3: "default"}
    return {1: metadata, 2: "" if network == NODE_MODE else name, 3: str(logs),
            8: {2: {1: {1: network, 2: CONTAINER_MODE, 3: network}}}}


def log_lines(path: Path) -> list[str]:
    """A CRI log file's lines without their time stamps: `stdout F text`."""
    return [line.split(" ", 1)[1] for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def cri(containerd: Containerd, rootfs: Path,  # noqa: F811 - the fixture
        tmp_path_factory: pytest.TempPathFactory) -> Cri:
    """The CRI client, with the test image in the CRI plugin's store, as the pod
    sandbox image too (a command that waits: the role of Kubernetes' pause)."""
    work = tmp_path_factory.mktemp("pause")
    with tarfile.open(work / "rootfs.tar", "w") as tar:
        tar.add(rootfs, arcname=".")
    subprocess.run(["podman", "import", "--quiet", "--change",
                    'CMD ["/bin/sleep", "2147483647"]', str(work / "rootfs.tar"), PAUSE_IMAGE],
                   check=True, capture_output=True, timeout=TIMEOUT)
    subprocess.run(["podman", "save", "--format", "oci-archive", "-o", str(work / "image.tar"),
                    PAUSE_IMAGE], check=True, capture_output=True, timeout=TIMEOUT)
    done = subprocess.run(["ctr", "--address", containerd.address, "--namespace",
                           K8S_NAMESPACE, "images", "import", "--base-name",
                           PAUSE_IMAGE.rsplit(":", 1)[0], str(work / "image.tar")],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    return Cri(containerd)


def test_cri_pod_runs_with_karn_as_its_runtime_handler(containerd: Containerd, cri: Cri,
                                                       tmp_path: Path) -> None:
    """A pod on the node's network, a container that prints and exits 3 and one stopped
    by StopContainer: the same exit codes and log with the karn handler as with runc's;
    the pod's sandbox and containers are karn containers (their state is in karn-oci's
    root) and go with it."""
    seen = {}
    for handler in ("karn", "runc"):
        logs = tmp_path / handler
        logs.mkdir()
        config = pod_config("pod1", logs, NODE_MODE)
        pod = cri.run_pod(config, handler)
        runtime_root = containerd.directory / f"{handler}-root" / K8S_NAMESPACE
        assert (runtime_root / pod).is_dir()  # the sandbox: a container of this runtime
        cid = cri.start_container(pod, config, "c1", ["/bin/sh", "-c",
                                                      "echo hello from $WHO; exit 3"],
                                  env={"WHO": "the pod"}, network=NODE_MODE)
        code = cri.wait_exited(cid)
        sleeper = cri.start_container(pod, config, "c2", ["/bin/sleep", "600"],
                                      network=NODE_MODE)
        cri.call("StopContainer", {1: sleeper, 2: 1})  # TERM is left alone: KILL after 1 s
        seen[handler] = (code, log_lines(logs / "c1.log"), cri.wait_exited(sleeper))
        for container in (cid, sleeper):
            cri.call("RemoveContainer", {1: container})
        cri.remove_pod(pod)
        assert not (runtime_root / pod).exists() and not (runtime_root / cid).exists()
        assert not container_processes(containerd, pod)
    assert seen["karn"] == seen["runc"]
    assert seen["karn"] == (3, ["stdout F hello from the pod"], 137)


def test_cri_pod_containers_share_the_pods_network_namespace(containerd: Containerd,
                                                             cri: Cri, tmp_path: Path) -> None:
    """Two containers of a pod on a CNI network: a server listening on port 8080 and a
    client connecting to 127.0.0.1:8080 meet in the pod's network namespace, as with
    runc; removing the pod removes the namespace."""
    seen = {}
    for handler in ("karn", "runc"):
        logs = tmp_path / handler
        logs.mkdir()
        config = pod_config("pod2", logs, POD_MODE)
        pod = cri.run_pod(config, handler)
        netns = cri.pod_network_namespace(pod)
        server = cri.start_container(pod, config, "server", [
            "/bin/sh", "-c", "echo pod-local > /f; exec nc -l -p 8080 < /f"])

        def listening(netns: str = netns) -> bool:  # in the pod's network namespace
            tables = subprocess.run(["nsenter", f"--net={netns}", "cat", "/proc/net/tcp",
                                     "/proc/net/tcp6"], capture_output=True, text=True,
                                    timeout=TIMEOUT).stdout
            rows = [line.split() for line in tables.splitlines()]
            return any(len(r) > 3 and r[1].endswith(":1F90") and r[3] == "0A" for r in rows)

        wait_for(listening, "the server to listen in the pod")
        client = cri.start_container(pod, config, "client", ["/bin/nc", "127.0.0.1", "8080"])
        seen[handler] = (cri.wait_exited(client), cri.wait_exited(server),
                         log_lines(logs / "client.log"))
        cri.remove_pod(pod)
        assert not os.path.exists(netns)
    assert seen["karn"] == seen["runc"]
    assert seen["karn"][2] == ["stdout F pod-local"]
