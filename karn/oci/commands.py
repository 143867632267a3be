"""The operations, with runc's meaning and errors (runtime-spec runtime.md): each takes
the parsed command line and returns the exit status; KarnError is an error (exit 1)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

from karn.errors import NotFoundError, UsageError
from karn.oci.state import OCI_VERSION, Container, container_ids

KILL_WAIT = 10.0  # seconds `delete --force` waits for a killed init to end


def create(args: argparse.Namespace) -> int:
    from karn.oci.hooks import run_hooks
    from karn.oci.init import spawn_init
    from karn.oci.spec import load

    if args.preserve_fds:
        raise UsageError("--preserve-fds is not supported: the guest gets stdio only")
    container = Container(args.root, args.id)
    spec = load(args.bundle)
    container.make(spec.bundle, spec.rootfs, spec.annotations)
    try:
        pid = spawn_init(spec, container, args.console_socket)
        container.set_init(pid)
        try:
            for stage in ("prestart", "createRuntime"):
                run_hooks(stage, spec.hooks(stage), container.state())
        except BaseException:
            os.kill(pid, signal.SIGKILL)
            raise
        if args.pid_file:
            _write_atomically(args.pid_file, str(pid))
    except BaseException:
        container.remove()
        raise
    return 0


def start(args: argparse.Namespace) -> int:
    from karn.oci.hooks import run_hooks
    from karn.oci.spec import load

    container = Container.load(args.root, args.id)
    status = container.status
    if status == "stopped":
        raise UsageError("cannot start a container that has stopped")
    if status != "created":
        raise UsageError(f"cannot start an already {status} container")
    hooks = _poststart_hooks(container, load)
    fifo = os.open(container.fifo, os.O_RDONLY | os.O_NONBLOCK)  # the init's open returns
    try:
        _wait_for_init(fifo, container)
    finally:
        os.close(fifo)
    os.unlink(container.fifo)
    run_hooks("poststart", hooks, container.state())
    return 0


def _poststart_hooks(container: Container, load) -> list:  # noqa: ANN001 - spec.load
    """The poststart hooks, read before the guest starts (the bundle may go later)."""
    try:
        return load(container.record["bundle"]).hooks("poststart")
    except UsageError:
        return []


def _wait_for_init(fifo: int, container: Container) -> None:
    """The init writes one byte once its open of the fifo has returned: it then runs."""
    while True:
        try:
            if os.read(fifo, 1):
                return
        except BlockingIOError:
            pass  # its open has returned, its write has not yet happened
        if not container.alive():
            raise UsageError("the container's init ended before it started")
        time.sleep(0.002)


def state(args: argparse.Namespace) -> int:
    container = Container.load(args.root, args.id)
    print(json.dumps(container.state(), indent=2))
    return 0


def kill(args: argparse.Namespace) -> int:
    container = Container.load(args.root, args.id)
    sig = parse_signal(args.signal)
    if container.status not in ("created", "running"):
        raise UsageError("container not running")
    os.kill(container.pid, sig)
    return 0


def parse_signal(text: str) -> int:
    """9, KILL or SIGKILL -> 9 (0 is allowed: it only checks the container is there)."""
    name = text.upper()
    if name.isdigit():
        number = int(name)
        if number < 65:
            return number
    else:
        found = getattr(signal.Signals, name if name.startswith("SIG") else "SIG" + name, None)
        if isinstance(found, signal.Signals):
            return int(found)
    raise UsageError(f"unknown signal {text!r}")


def delete(args: argparse.Namespace) -> int:
    from karn.oci.hooks import run_hooks
    from karn.oci.spec import load

    try:
        container = Container.load(args.root, args.id)
    except NotFoundError:
        if args.force:
            return 0
        raise
    status = container.status
    if status == "running" and not args.force:
        raise UsageError(f"cannot delete container {args.id} that is not stopped: running")
    if status in ("created", "running"):  # a created container goes without --force
        os.kill(container.pid, signal.SIGKILL)
        _wait_ended(container)
    try:
        hooks = load(container.record["bundle"]).hooks("poststop")
    except UsageError:
        hooks = []
    state_before = container.state()
    container.remove()
    run_hooks("poststop", hooks, state_before, must_succeed=False)
    return 0


def _wait_ended(container: Container) -> None:
    deadline = time.monotonic() + KILL_WAIT
    while container.alive():
        if time.monotonic() > deadline:
            raise UsageError(f"container {container.id}: init {container.pid} did not end")
        time.sleep(0.01)


def list_containers(args: argparse.Namespace) -> int:
    states = []
    for name in container_ids(args.root):
        try:
            states.append(Container.load(args.root, name).state())
        except (NotFoundError, UsageError):
            continue  # deleted meanwhile
    if args.quiet:
        for item in states:
            print(item["id"])
    elif args.format == "json":
        print(json.dumps(states or None))
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        rows += [(s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], s["owner"])
                 for s in states]
        widths = [max(len(r[i]) for r in rows) for i in range(6)]
        for row in rows:
            print("   ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def ps(args: argparse.Namespace) -> int:
    """The container's host processes: its init, the monitor (every guest thread lives
    in it)."""
    container = Container.load(args.root, args.id)
    pids = [container.pid] if container.status in ("created", "running") else []
    if args.format == "json":
        print(json.dumps(pids))
        return 0
    if not pids:
        return 0
    sys.stdout.flush()
    ps_args = args.ps_args or ["-f"]
    return subprocess.run(["ps", *ps_args, "-p", str(pids[0])]).returncode


def exec_(args: argparse.Namespace) -> int:
    raise UsageError("exec is not supported yet: a karn unikernel runs one process; "
                     "a new process inside it comes with process support (fork/exec)")


def features(args: argparse.Namespace) -> int:
    from karn.oci.limits import ANNOTATIONS
    from karn.oci.spec import INHERENT_NAMESPACES

    out = {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["bind", "rbind", "ro", "rw"],
        "linux": {
            "namespaces": sorted({*INHERENT_NAMESPACES, "network"}),
            "capabilities": [],
            "cgroup": {"v1": False, "v2": False, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": False},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {"io.karn.runtime": "karn unikernel (KVM)",
                        "io.karn.annotations": ",".join(sorted(ANNOTATIONS))},
    }
    print(json.dumps(out, indent=2))
    return 0


def _write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
