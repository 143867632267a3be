"""A bundle's config.json -> a ContainerSpec: the RunConfig of the guest and what the
container's init needs besides (the network namespace to join, the terminal, the user).

The rule: a field karn cannot honour is refused with an error that names it when ignoring
it would give the container more than its config asked for (a device node, a user
namespace's mapping, a limit karn cannot keep). What a unikernel has no use for, and
whose absence takes nothing away from isolation (capabilities, masked /proc paths, a
cgroup or mqueue mount, AppArmor and SELinux labels of a process that does not exist on
the host), is accepted and left out. docs/oci-runtime.md lists both.
"""

from __future__ import annotations

import json
import os

from karn.errors import UsageError
from karn.hints import Any
from karn.image.paths import guest_file
from karn.oci.limits import limits
from karn.run.config import Choices, RunConfig, Volume, resolve

# Mount types a unikernel does not need: leaving them out hides host state from the guest.
OMITTED_MOUNTS = frozenset(("sysfs", "devpts", "mqueue", "cgroup", "cgroup2"))
KARN_TMPFS = frozenset(("/tmp", "/dev/shm"))  # karn mounts its own tmpfs there
# Namespaces a unikernel has in any case: its own PIDs, IPC, hostname, mounts and cgroup
# view exist only inside its monitor.
INHERENT_NAMESPACES = frozenset(("pid", "ipc", "uts", "mount", "cgroup", "time"))
# Hooks that run in the container's namespaces, which a unikernel does not have.
CONTAINER_HOOKS = ("createContainer", "startContainer")


class ContainerSpec:
    """One bundle, translated."""

    def __init__(self, bundle: str, config: dict[str, Any], run: RunConfig,
                 netns: str | None, terminal: bool, console_size: tuple[int, int] | None,
                 uid: int, gid: int, pid_init: bool) -> None:
        self.bundle = bundle
        self.config = config  # the parsed config.json (hooks, annotations, root.path)
        self.run = run
        self.netns = netns  # a network namespace to join (podman's, a pod's)
        self.terminal = terminal
        self.console_size = console_size  # (rows, columns)
        self.uid = uid
        self.gid = gid
        self.pid_init = pid_init  # in a new PID namespace: the program is its init

    @property
    def rootfs(self) -> str:
        return self.run.root or ""

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.config.get("annotations") or {})

    def hooks(self, stage: str) -> list[dict[str, Any]]:
        return list((self.config.get("hooks") or {}).get(stage) or [])


def load(bundle: str) -> ContainerSpec:
    """The bundle's config.json, checked and translated; UsageError names what is wrong."""
    bundle = os.path.abspath(bundle)
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file (not an OCI bundle)") from None
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: {err}") from None
    if not isinstance(config, dict):
        raise UsageError(f"{path}: not a JSON object")
    return translate(bundle, config)


def translate(bundle: str, config: dict[str, Any]) -> ContainerSpec:
    process = config.get("process")
    if not isinstance(process, dict) or not process.get("args"):
        raise UsageError("process.args: the container has no program to run")
    root = _rootfs(bundle, config)
    linux = config.get("linux") or {}
    _refuse_unsupported(config, process, linux)
    volumes, tmpfs = _mounts(config.get("mounts") or [])
    env = [e for e in process.get("env") or [] if "=" in e]
    program = _program(root, process["args"][0], env)
    user = process.get("user") or {}
    uid, gid = int(user.get("uid", 0)), int(user.get("gid", 0))
    root_writable = not (config.get("root") or {}).get("readonly", False)
    if uid != 0 and root_writable:
        raise UsageError("process.user: a non-root user with a writable root.path is not "
                         "supported (karn's monitor writes the root with its own "
                         "credentials); make the root read-only (podman run --read-only)")
    if uid != 0 and any(not v.readonly and os.path.isdir(v.host) for v in volumes):
        raise UsageError("process.user: a non-root user with a writable bind mount of a "
                         "directory is not supported (karn's monitor writes volumes with "
                         "its own credentials); mount it read-only")
    netns, network = _network(linux)
    found = limits(config)
    run = RunConfig(
        program=program, args=[str(a) for a in process["args"][1:]],
        argv0=str(process["args"][0]), env=env, volumes=volumes, tmpfs=tmpfs,
        workdir=process.get("cwd") or "/", hostname=config.get("hostname") or "karn",
        root=root, network=found.policy.pop("network", network),
        cpus=found.cpus or 1, syscall_transport=found.syscall_transport,
        root_writable=root_writable,
    )
    if found.memory is not None:
        run.memory = found.memory
    choices = Choices(memory=found.memory, cpus=found.cpus, workdir=run.workdir,
                      network=run.network, policy=found.policy, trust_image_policy=True)
    resolve(run, choices)
    size = process.get("consoleSize") or {}
    console = (int(size["height"]), int(size["width"])) if size.get("height") else None
    pid_init = any(ns.get("type") == "pid" and not ns.get("path")
                   for ns in linux.get("namespaces") or [])
    return ContainerSpec(bundle, config, run, netns, bool(process.get("terminal")), console,
                         uid, gid, pid_init)


def _rootfs(bundle: str, config: dict[str, Any]) -> str:
    path = (config.get("root") or {}).get("path")
    if not path:
        raise UsageError("root.path: the bundle has no root filesystem")
    root = os.path.normpath(os.path.join(bundle, path))
    if not os.path.isdir(root):
        raise UsageError(f"root.path: {root} is not a directory")
    return root


def _refuse_unsupported(config: dict[str, Any], process: dict[str, Any],
                        linux: dict[str, Any]) -> None:
    for stage in CONTAINER_HOOKS:
        if (config.get("hooks") or {}).get(stage):
            raise UsageError(f"hooks.{stage}: not supported (a unikernel has no container "
                             "namespaces to run it in)")
    if linux.get("devices"):
        raise UsageError("linux.devices: karn gives the guest its own /dev; host device "
                         "nodes are not supported")
    for field in ("uidMappings", "gidMappings", "intelRdt", "personality"):
        if linux.get(field):
            raise UsageError(f"linux.{field} is not supported by karn")
    for ns in linux.get("namespaces") or []:
        kind = ns.get("type")
        if kind == "user":
            raise UsageError("linux.namespaces: a user namespace is not supported (karn's "
                             "monitor would not run as the mapped user)")
        if kind != "network" and kind not in INHERENT_NAMESPACES:
            raise UsageError(f"linux.namespaces: unknown namespace type {kind!r}")


def _mounts(mounts: list[dict[str, Any]]) -> tuple[list[Volume], list[str]]:
    volumes: list[Volume] = []
    tmpfs: list[str] = []
    for mount in mounts:
        dest = os.path.normpath(str(mount.get("destination", "")))
        kind = mount.get("type") or ""
        options = mount.get("options") or []
        if not dest.startswith("/"):
            raise UsageError(f"mounts: destination {dest!r} must be an absolute path")
        if kind == "bind" or "bind" in options or "rbind" in options:
            source = str(mount.get("source", ""))
            if not os.path.exists(source):
                raise UsageError(f"mounts: bind source {source} does not exist")
            volumes.append(Volume(source, dest, "ro" in options))
        elif kind == "proc" and dest == "/proc":
            continue  # karn's own /proc
        elif kind == "tmpfs":
            if dest == "/dev" or dest in KARN_TMPFS:
                continue  # karn's devfs, or karn's own tmpfs
            tmpfs.append(dest)
        elif kind in OMITTED_MOUNTS:
            continue
        else:
            raise UsageError(f"mounts: {kind or 'untyped'} mount at {dest} is not supported "
                             "(karn has bind, tmpfs and its own /proc and /dev)")
    return volumes, tmpfs


def _network(linux: dict[str, Any]) -> tuple[str | None, str]:
    """The namespace to join and karn's network mode: the caller's namespace (podman's,
    a pod's) or the host's is reached directly; a new empty namespace is karn's `none`."""
    for ns in linux.get("namespaces") or []:
        if ns.get("type") == "network":
            path = ns.get("path")
            if not path:
                return None, "none"
            if not os.path.exists(path):
                raise UsageError(f"linux.namespaces: network namespace {path} does not exist")
            return path, "host"
    return None, "host"


def _program(root: str, name: str, env: list[str]) -> str:
    """process.args[0] as a guest path: a name without a slash is looked up in the
    process's PATH inside the root, as runc does."""
    if "/" in name:
        path = name if name.startswith("/") else "/" + name
        if guest_file(root, path) is None:
            raise UsageError(f"exec: {name!r}: no such file or directory")
        return path
    search = next((e[5:] for e in env if e.startswith("PATH=")), "/usr/bin:/bin")
    for directory in search.split(":"):
        candidate = os.path.join(directory or "/", name)
        if candidate.startswith("/") and guest_file(root, candidate) is not None:
            return candidate
    raise UsageError(f"exec: {name!r}: executable file not found in $PATH")
