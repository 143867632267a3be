"""karn as an OCI runtime (karn/oci/, docs/oci-runtime.md), against real clients.

- Each operation and state transition of `karn-oci` on a busybox-static bundle, beside
  runc's on the same bundle (crun refuses this host's hybrid cgroup set-up; runc is the
  reference here): the same exit statuses, states and program output.
- A "conmon" of a few lines (a subreaper that runs `create`, reads --pid-file, runs
  `start` and waits for the init) reads the container's exit status as conmon does.
- podman (Debian's, with conmon and netavark) runs a busybox-static image imported from a
  local directory with `--runtime karn-oci`: -e, -v, --read-only, -w, -t, -p, --memory,
  ps/logs/stop/kill/rm, exit statuses compared with runc's.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "true", "false", "echo", "env", "pwd", "cat", "ls", "sleep", "hostname",
           "touch", "nc", "test")
TIMEOUT = 60
IMAGE = "localhost/karn-test-busybox:1"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="an OCI runtime runs as root")


@pytest.fixture(scope="session")
def karn_oci(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An executable `karn-oci` of this checkout (podman and conmon run it by path)."""
    script = tmp_path_factory.mktemp("bin") / "karn-oci"
    script.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m karn.oci \"$@\"\n")
    script.chmod(0o755)
    return str(script)


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rootfs")
    (root / "bin").mkdir()
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "www").mkdir()
    (root / "www" / "index.html").write_text("hello from the guest\n")
    return root


def make_bundle(directory: Path, rootfs: Path, args: list[str], **process: object) -> Path:
    """A bundle as `runc spec` makes one (minus cgroups and capabilities)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(rootfs, directory / "rootfs", symlinks=True)  # runc refuses a link
    config = {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": args,
                    "env": ["PATH=/bin", "TERM=xterm"], "cwd": "/",
                    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
                    "noNewPrivileges": True, **process},
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "oci-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
        ],
        "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts",
                                                       "mount")],
                  "resources": {"devices": [{"allow": False, "access": "rwm"}]}},
    }
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def runtimes(karn_oci: str) -> dict[str, str]:
    runc = shutil.which("runc")
    assert runc, "runc is needed as the reference runtime (apt-get install runc)"
    return {"karn": karn_oci, "runc": runc}


def oci(runtime: str, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Output to files, not pipes: a created container's init holds create's stdio (as
    conmon's pipes) for as long as it lives."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        done = subprocess.run([runtime, "--root", str(root), *args], stdout=out, stderr=err,
                              text=True, timeout=TIMEOUT)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(done.args, done.returncode, out.read(), err.read())


def status_of(runtime: str, root: Path, cid: str) -> str:
    done = oci(runtime, root, "state", cid)
    return json.loads(done.stdout)["status"] if done.returncode == 0 else "gone"


def wait_status(runtime: str, root: Path, cid: str, wanted: str) -> str:
    deadline = time.monotonic() + TIMEOUT
    status = status_of(runtime, root, cid)
    while status != wanted and time.monotonic() < deadline:
        time.sleep(0.05)
        status = status_of(runtime, root, cid)
    return status


def lifecycle(runtime: str, bundle: Path, root: Path) -> list[tuple[str, object]]:
    """Every operation in every state it can meet; what a caller sees of each."""
    cid = "c-" + uuid.uuid4().hex[:8]
    seen: list[tuple[str, object]] = []

    def op(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = oci(runtime, root, *args)
        seen.append((name, done.returncode))
        return done

    op("state of a missing container", "state", cid)
    op("kill of a missing container", "kill", cid, "KILL")
    op("delete of a missing container", "delete", cid)
    op("delete --force of a missing container", "delete", "--force", cid)
    pid_file = root.parent / f"{cid}.pid"
    op("create", "create", "--bundle", str(bundle), "--pid-file", str(pid_file), cid)
    pid = int(pid_file.read_text())
    state = json.loads(op("state (created)", "state", cid).stdout)
    seen.append(("created state", (state["status"], state["pid"] == pid, state["id"] == cid,
                                   state["bundle"] == str(bundle), state["ociVersion"][:3])))
    op("create with the same id", "create", "--bundle", str(bundle), cid)
    listed = json.loads(op("list", "list", "--format", "json").stdout)
    seen.append(("listed", [(s["id"] == cid, s["status"], s["pid"] == pid) for s in listed]))
    seen.append(("ps --format json", json.loads(op("ps", "ps", "--format", "json",
                                                   cid).stdout)[0] == pid))
    op("kill with signal 0", "kill", cid, "0")
    op("kill with a bad signal", "kill", cid, "NOSUCH")
    op("start", "start", cid)
    seen.append(("after start", wait_status(runtime, root, cid, "running")))
    op("start again", "start", cid)
    op("delete while running", "delete", cid)
    op("kill TERM (the init does not handle it)", "kill", cid, "TERM")
    time.sleep(0.3)  # a signal that ended it would have done so by now; it must not
    seen.append(("after TERM", status_of(runtime, root, cid)))
    op("kill KILL", "kill", cid, "KILL")
    seen.append(("after KILL", wait_status(runtime, root, cid, "stopped")))
    state = json.loads(op("state (stopped)", "state", cid).stdout)
    seen.append(("stopped state pid", state["pid"]))
    op("kill when stopped", "kill", cid, "KILL")
    op("start when stopped", "start", cid)
    op("delete", "delete", cid)
    op("delete again", "delete", cid)
    seen.append(("list when empty", op("list", "list", "--format", "json").stdout.strip()))
    return seen


def test_lifecycle_matches_runc(karn_oci: str, rootfs: Path, tmp_path: Path) -> None:
    results = {}
    for name, runtime in runtimes(karn_oci).items():
        bundle = make_bundle(tmp_path / name / "bundle", rootfs, ["/bin/sleep", "60"])
        results[name] = lifecycle(runtime, bundle, tmp_path / name / "root")
    assert results["karn"] == results["runc"]
    assert ("after start", "running") in results["karn"]  # a check that can fail


def test_delete_of_a_created_container_ends_its_init(karn_oci: str, rootfs: Path,
                                                     tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", rootfs, ["/bin/true"])
    root = tmp_path / "root"
    assert oci(karn_oci, root, "create", "--bundle", str(bundle), "--pid-file",
               str(tmp_path / "pid"), "c1").returncode == 0
    pid = int((tmp_path / "pid").read_text())
    assert os.path.exists(f"/proc/{pid}")
    assert oci(karn_oci, root, "delete", "c1").returncode == 0
    assert not (root / "c1").exists()
    assert oci(karn_oci, root, "state", "c1").returncode == 1


# A conmon of a few lines: the subreaper that waits for the container's init.
MINI_CONMON = r"""
import ctypes, os, subprocess, sys
runtime, root, bundle, cid = sys.argv[1:5]
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: the orphaned init comes to us
pid_file = os.path.join(root, cid + ".pid")
create = subprocess.run([runtime, "--root", root, "create", "--bundle", bundle,
                         "--pid-file", pid_file, cid])
if create.returncode:
    print(f"create failed: {create.returncode}", file=sys.stderr)
    sys.exit()
pid = int(open(pid_file).read())
subprocess.run([runtime, "--root", root, "start", cid], check=True)
_, status = os.waitpid(pid, 0)
subprocess.run([runtime, "--root", root, "delete", cid], check=True)
print(f"exit status: {os.waitstatus_to_exitcode(status)}", file=sys.stderr)
"""


def run_as_conmon(runtime: str, bundle: Path, root: Path) -> tuple[str, str]:
    """The container's exit status as its waiting parent sees it (or create's failure),
    and its stdout."""
    root.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", MINI_CONMON, runtime, str(root),
                           str(bundle), "c-" + uuid.uuid4().hex[:8]],
                          capture_output=True, text=True, timeout=TIMEOUT)
    return done.stderr.strip().splitlines()[-1], done.stdout


@pytest.mark.parametrize("args", [
    ["/bin/true"],
    ["/bin/false"],
    ["/bin/sh", "-c", "echo out; exit 7"],
    ["/bin/env"],
    ["/bin/hostname"],
    ["/bin/ls", "/www"],
    ["nosuch-program"],
], ids=["true", "false", "exit7", "env", "hostname", "ls", "missing"])
def test_exit_status_and_output_match_runc(karn_oci: str, rootfs: Path, tmp_path: Path,
                                           args: list[str]) -> None:
    results = {}
    for name, runtime in runtimes(karn_oci).items():
        bundle = make_bundle(tmp_path / name / "bundle", rootfs, args,
                             env=["PATH=/bin", "A=b c"])
        status, out = run_as_conmon(runtime, bundle, tmp_path / name / "root")
        lines = sorted(out.splitlines())
        if args == ["/bin/env"]:  # runc adds HOME; karn adds its default HOME too
            lines = [x for x in lines if not x.startswith("HOME=")]
        results[name] = (status, lines)
    assert results["karn"] == results["runc"]


@pytest.mark.parametrize("readonly", [False, True], ids=["writable", "readonly"])
def test_root_readonly_is_honoured_as_runc_does(karn_oci: str, rootfs: Path, tmp_path: Path,
                                                readonly: bool) -> None:
    """root.readonly false: the guest writes its own root directory (the bundle's rootfs,
    a host directory the engine made for this container), as runc's container does."""
    results = {}
    for name, runtime in runtimes(karn_oci).items():
        bundle = make_bundle(tmp_path / name / "bundle", rootfs,
                             ["/bin/sh", "-c", "echo written > /new-file"])
        config = json.loads((bundle / "config.json").read_text())
        config["root"]["readonly"] = readonly
        (bundle / "config.json").write_text(json.dumps(config))
        status, _ = run_as_conmon(runtime, bundle, tmp_path / name / "root")
        written = bundle / "rootfs" / "new-file"
        results[name] = (status, written.read_text() if written.exists() else None)
    assert results["karn"] == results["runc"]
    assert results["karn"][1] == (None if readonly else "written\n")


def test_a_non_root_user_with_a_writable_root_is_refused(karn_oci: str, rootfs: Path,
                                                        tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", rootfs, ["/bin/true"],
                         user={"uid": 1000, "gid": 1000})
    config = json.loads((bundle / "config.json").read_text())
    config["root"]["readonly"] = False
    (bundle / "config.json").write_text(json.dumps(config))
    done = oci(karn_oci, tmp_path / "root", "create", "--bundle", str(bundle), "c1")
    assert done.returncode == 1
    assert done.stderr.startswith("karn: process.user: a non-root user with a writable "
                                  "root.path"), done.stderr
    config["root"]["readonly"] = True  # the same user with a read-only root runs
    (bundle / "config.json").write_text(json.dumps(config))
    status, _ = run_as_conmon(karn_oci, bundle, tmp_path / "root2")
    assert status == "exit status: 0"


def test_unsupported_fields_are_refused_by_name(karn_oci: str, rootfs: Path,
                                                tmp_path: Path) -> None:
    cases = {
        "linux.devices": {"linux": {"devices": [{"path": "/dev/kvm", "type": "c",
                                                  "major": 10, "minor": 232}]}},
        "linux.namespaces": {"linux": {"namespaces": [{"type": "user"}]}},
        "linux.resources.blockIO": {"linux": {"resources": {"blockIO": {"weight": 10}}}},
        "mounts": {"mounts": [{"destination": "/mnt", "type": "nfs", "source": "x:/y"}]},
        "hooks.startContainer": {"hooks": {"startContainer": [{"path": "/bin/true"}]}},
        "process.rlimits": {"process": {"args": ["/bin/true"], "rlimits": [
            {"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]}},
        "annotation io.karn.bogus": {"annotations": {"io.karn.bogus": "1"}},
    }
    for field, change in cases.items():
        bundle = make_bundle(tmp_path / field / "b", rootfs, ["/bin/true"])
        config = json.loads((bundle / "config.json").read_text())
        for key, value in change.items():
            config[key] = {**config.get(key, {}), **value} if key != "mounts" else value
        (bundle / "config.json").write_text(json.dumps(config))
        log = tmp_path / field / "log.json"
        done = oci(karn_oci, tmp_path / "root", "--log", str(log), "--log-format", "json",
                   "create", "--bundle", str(bundle), "c1")
        assert done.returncode == 1, field
        assert done.stderr.startswith("karn: ") and field in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
        entry = json.loads(log.read_text().splitlines()[-1])
        assert entry["level"] == "error" and field in entry["msg"]
        assert not (tmp_path / "root" / "c1").exists()  # nothing left behind


def test_exec_is_refused_clearly(karn_oci: str) -> None:
    done = subprocess.run([karn_oci, "exec", "c1", "/bin/sh"], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert done.returncode == 1
    assert done.stderr.startswith("karn: exec is not supported yet")


def test_features_and_version(karn_oci: str) -> None:
    out = json.loads(subprocess.run([karn_oci, "features"], capture_output=True, text=True,
                                    check=True, timeout=TIMEOUT).stdout)
    assert "network" in out["linux"]["namespaces"]
    assert "poststop" in out["hooks"]
    version = subprocess.run([karn_oci, "--version"], capture_output=True, text=True,
                             timeout=TIMEOUT).stdout
    assert version.startswith("karn-oci version")


# ---- podman


def podman(*args: str, check: bool = True, timeout: float = 120
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check,
                          timeout=timeout)


def runc_options() -> list[str]:
    """runc applies podman's default rlimits itself: without CAP_SYS_RESOURCE (as here)
    it can only keep the hard limits it has."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(4096, resource.getrlimit(resource.RLIMIT_NPROC)[1])
    return ["--runtime", "runc", "--ulimit", f"nofile={nofile}:{nofile}",
            "--ulimit", f"nproc={nproc}:{nproc}"]


@pytest.fixture(scope="module")
def image(rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    assert shutil.which("podman"), "podman is needed (apt-get install podman)"
    archive = tmp_path_factory.mktemp("image") / "rootfs.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(rootfs, arcname=".")
    podman("import", "--quiet", str(archive), IMAGE)
    return IMAGE


def podman_run(runtime: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return podman("run", "--rm", *runtime, *args, check=False)


@pytest.mark.slow
def test_podman_run_matches_runc(karn_oci: str, image: str, tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    volume.mkdir()
    (volume / "f").write_text("from the host\n")
    cases = [
        [image, "/bin/echo", "hello"],
        [image, "/bin/sh", "-c", "exit 7"],
        [image, "/nosuch"],
        ["-e", "GREETING=hi there", image, "/bin/sh", "-c", 'echo "$GREETING"'],
        ["-v", f"{volume}:/data:ro", image, "/bin/cat", "/data/f"],
        ["-w", "/www", image, "/bin/pwd"],
        [image, "/bin/touch", "/new-file"],
        ["--read-only", image, "/bin/touch", "/new-file"],
        ["--read-only", image, "/bin/touch", "/tmp/new-file"],
        ["--hostname", "guest1", image, "/bin/hostname"],
    ]
    for case in cases:
        karn = podman_run(["--runtime", karn_oci], *case)
        runc = podman_run(runc_options(), *case)
        assert (karn.returncode, karn.stdout) == (runc.returncode, runc.stdout), case


@pytest.mark.slow
def test_podman_root_writes_land_in_the_containers_layer(karn_oci: str, image: str) -> None:
    """Without --read-only the guest writes its root: podman sees the file in the
    container's own layer (`podman diff`), the image is unchanged."""
    cid = podman("create", "--runtime", karn_oci, image, "/bin/sh", "-c",
                 "echo data > /www/new-file").stdout.strip()
    try:
        podman("start", "--attach", cid)
        assert podman("inspect", cid, "--format", "{{.State.ExitCode}}").stdout.strip() == "0"
        assert "A /www/new-file" in podman("diff", cid).stdout.splitlines()
        mounted = podman("mount", cid).stdout.strip()
        assert (Path(mounted) / "www" / "new-file").read_text() == "data\n"
        podman("unmount", cid)
    finally:
        podman("rm", "-f", cid, check=False)
    done = podman_run(["--runtime", karn_oci], image, "/bin/ls", "/www")
    assert done.stdout.split() == ["index.html"]  # a new container: a fresh layer


@pytest.mark.slow
def test_podman_writes_through_a_volume_and_gives_a_terminal(karn_oci: str, image: str,
                                                             tmp_path: Path) -> None:
    done = podman_run(["--runtime", karn_oci], "-v", f"{tmp_path}:/out", image,
                      "/bin/sh", "-c", "echo written > /out/file")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "file").read_text() == "written\n"
    done = podman_run(["--runtime", karn_oci], "-t", image, "/bin/sh", "-c",
                      "test -t 0 && test -t 1 && echo a-tty")
    assert (done.returncode, done.stdout.strip()) == (0, "a-tty")
    done = podman_run(["--runtime", karn_oci], "--memory", "64m", image, "/bin/cat",
                      "/proc/meminfo")
    assert done.stdout.startswith("MemTotal:          65536 kB")


def wait_for(condition, what: str) -> None:  # noqa: ANN001 - a callable returning a truth
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.slow
def test_podman_detached_ps_logs_stop_kill_rm(karn_oci: str, image: str) -> None:
    runtime = ["--runtime", karn_oci]
    cid = podman("run", "-d", *runtime, image, "/bin/sh", "-c",
                 "echo started; exec sleep 60").stdout.strip()
    try:
        wait_for(lambda: "started" in podman("logs", cid).stdout, "the container's output")
        running = podman("ps", "--format", "{{.ID}}", "--no-trunc").stdout.split()
        assert cid in running
        state = json.loads(subprocess.run(
            [karn_oci, "state", cid], capture_output=True, text=True, check=True).stdout)
        assert state["status"] == "running"
        podman("stop", "-t", "1", cid)  # sleep leaves SIGTERM alone: SIGKILL, as runc
        assert podman("inspect", cid, "--format", "{{.State.ExitCode}}").stdout.strip() \
            == "137"
        podman("rm", cid)
        assert not os.path.exists(f"/run/karn-oci/{cid}")  # delete left nothing
        cid = podman("run", "-d", *runtime, image, "/bin/sleep", "60").stdout.strip()
        podman("kill", "--signal", "KILL", cid)
        wait_for(lambda: podman("inspect", cid, "--format", "{{.State.Status}}")
                 .stdout.strip() == "exited", "the killed container to exit")
        assert podman("inspect", cid, "--format", "{{.State.ExitCode}}").stdout.strip() \
            == "137"
    finally:
        podman("rm", "-f", cid, check=False)


@pytest.mark.slow
def test_podman_network_namespace_and_published_port(karn_oci: str, image: str) -> None:
    """The guest's listener lives in podman's network namespace: netavark's published
    port reaches it."""
    import socket

    port = 18000 + os.getpid() % 1000
    cid = podman("run", "-d", "--runtime", karn_oci, "-p", f"127.0.0.1:{port}:8080", image,
                 "/bin/sh", "-c", "exec nc -l -p 8080 < /www/index.html").stdout.strip()
    try:
        received = b""

        def answered() -> bool:
            nonlocal received
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"hi\n")
                    received = s.recv(100)
            except OSError:
                return False
            return bool(received)

        wait_for(answered, "the published port")
        assert received == b"hello from the guest\n"
    finally:
        podman("rm", "-f", cid, check=False)


def test_state_after_the_init_is_killed(karn_oci: str, rootfs: Path, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", rootfs, ["/bin/sleep", "60"])
    root = tmp_path / "root"
    oci(karn_oci, root, "create", "--bundle", str(bundle), "--pid-file",
        str(tmp_path / "pid"), "c1")
    oci(karn_oci, root, "start", "c1")
    os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)
    assert wait_status(karn_oci, root, "c1", "stopped") == "stopped"
    assert oci(karn_oci, root, "delete", "c1").returncode == 0
