"""Where running and detached instances are recorded, and how to find one by id or name.

One directory per instance under the state directory (docs/instances.md):

    meta.json     written at start: id, name, program, args, pid, pid start time, created,
                  published ports
    control.sock  the monitor's control socket (JSON lines; karn/debug/control.py)
    output.log    a detached instance's stdout and stderr
    status.json   written at exit: exit code, fatal signal, finished

A foreground run's directory is removed when it ends; a detached one stays (for `logs`
and `ps -a`) until `karn rm ID`, unless it was started with --rm.
"""

from __future__ import annotations

import json
import os
import shutil
import time

from karn.errors import NotFoundError, UsageError
from karn.instance.paths import instances_dir

META, STATUS, SOCKET, LOG = "meta.json", "status.json", "control.sock", "output.log"


def process_state(pid: int) -> tuple[bytes, int] | None:
    """Fields 3 and 22 of /proc/PID/stat (state letter, start time); None once gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0], int(fields[19])


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: tells a live monitor from a reused pid."""
    state = process_state(pid)
    return None if state is None else state[1]


class Instance:
    """One recorded instance, read from its directory."""

    def __init__(self, directory: str, meta: dict, status: dict | None) -> None:
        self.directory = directory
        self.meta = meta
        self.status = status

    id = property(lambda self: self.meta["id"])
    name = property(lambda self: self.meta.get("name") or "")
    pid = property(lambda self: self.meta["pid"])
    detached = property(lambda self: bool(self.meta.get("detached")))
    socket_path = property(lambda self: os.path.join(self.directory, SOCKET))
    log_path = property(lambda self: os.path.join(self.directory, LOG))
    ports = property(lambda self: self.meta.get("ports") or [])

    def alive(self) -> bool:
        return self.status is None and process_start_time(self.pid) == self.meta["pid_start"]

    def state(self) -> str:
        if self.status is not None:
            return "exited"
        return "running" if self.alive() else "dead"  # dead: the monitor itself was killed

    def describe_state(self) -> str:
        state = self.state()
        if state == "exited":
            assert self.status is not None
            return f"exited ({self.status['exit_code']})"
        return state

    def refresh(self) -> Instance:
        return load(self.directory) or self


def load(directory: str) -> Instance | None:
    try:
        with open(os.path.join(directory, META)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None  # being created, or not ours
    status = None
    try:
        with open(os.path.join(directory, STATUS)) as f:
            status = json.load(f) or None
    except (OSError, ValueError):
        pass
    return Instance(directory, meta, status)


def all_instances() -> list[Instance]:
    """Every recorded instance, oldest first; leftovers of dead foreground runs are removed."""
    root = instances_dir()
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        inst = load(os.path.join(root, name))
        if inst is None:
            continue
        if not inst.detached and not inst.alive():
            shutil.rmtree(inst.directory, ignore_errors=True)
            continue
        found.append(inst)
    return sorted(found, key=lambda i: i.meta["created"])


def find(ref: str) -> Instance:
    """By name, full id or unique id prefix; UsageError otherwise."""
    inst = lookup(ref)
    if inst is None:
        raise NotFoundError(f"no such instance: {ref}")
    return inst


def lookup(ref: str) -> Instance | None:
    instances = all_instances()
    for inst in instances:
        if ref in (inst.id, inst.name):
            return inst
    matches = [i for i in instances if ref and i.id.startswith(ref)]
    if len(matches) > 1:
        raise UsageError(f"instance id prefix {ref!r} is ambiguous")
    return matches[0] if matches else None


def new_id() -> str:
    return os.urandom(6).hex()


class Registration:
    """The monitor's own entry: created at start, status written (or removed) at exit."""

    def __init__(self, program: str, args: list[str], name: str | None, detached: bool,
                 instance_id: str | None = None, ports: list[str] | None = None,
                 remove: bool = False) -> None:
        if name is not None:
            _check_name(name)
        self.id = instance_id or new_id()
        self.directory = os.path.join(instances_dir(), self.id)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)  # -d: made by the parent
        self.detached = detached
        self.remove = remove  # --rm: the record goes when the instance ends
        pid = os.getpid()
        self.meta = {"id": self.id, "name": name, "program": program, "args": args,
                     "pid": pid, "pid_start": process_start_time(pid),
                     "created": time.time(), "detached": detached, "ports": ports or []}
        self.socket_path = os.path.join(self.directory, SOCKET)
        self.log_path = os.path.join(self.directory, LOG)
        # Opened now: the status is written at exit through this descriptor, so a
        # confined monitor (karn/sandbox) need not open files then.
        self._status_fd = os.open(os.path.join(self.directory, STATUS),
                                  os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def publish(self) -> None:
        """Make the instance visible (meta.json appears atomically, last)."""
        tmp = os.path.join(self.directory, META + ".tmp")
        with open(tmp, "w") as f:
            json.dump(self.meta, f)
        os.rename(tmp, os.path.join(self.directory, META))

    def discard(self) -> None:
        os.close(self._status_fd)
        shutil.rmtree(self.directory, ignore_errors=True)

    def finish(self, exit_code: int, signal: int = 0) -> None:
        if not self.detached or self.remove:
            self.discard()
            return
        status = {"exit_code": exit_code, "signal": signal, "finished": time.time()}
        os.write(self._status_fd, json.dumps(status).encode())
        os.close(self._status_fd)


def _check_name(name: str) -> None:
    ok = name and len(name) <= 64 and name[0].isalnum() and all(
        c.isalnum() or c in "_.-" for c in name)
    if not ok:
        raise UsageError(f"invalid instance name {name!r} (letters, digits, '_', '.', '-')")
    if lookup(name) is not None:
        raise UsageError(f"the name {name!r} is already used by an instance (karn rm {name})")


def remove(inst: Instance) -> None:
    shutil.rmtree(inst.directory, ignore_errors=True)
