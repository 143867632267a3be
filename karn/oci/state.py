"""The state directory (--root, default /run/karn-oci): one directory per container with
state.json (what `create` recorded) and exec.fifo (present until `start`).

The status is read from the init process, never stored: no pid yet is `creating`; a live
init (the same process: its start time is recorded) with the fifo still there is
`created`, without it `running`; an init that has ended (or is a zombie) is `stopped`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time

from karn.errors import NotFoundError, UsageError
from karn.hints import Any
from karn.instance.registry import process_state

OCI_VERSION = "1.0.2"
DEFAULT_ROOT = "/run/karn-oci"
STATE = "state.json"
FIFO = "exec.fifo"
VALID_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+.-]{0,1023}$")


def process_start_time(pid: int) -> int | None:
    """The start time of a live process (clock ticks since boot); None if it has ended or
    is a zombie waiting for its parent."""
    state = process_state(pid)
    return None if state is None or state[0] in (b"Z", b"X") else state[1]


class Container:
    """One container's directory in the state root."""

    def __init__(self, root: str, container_id: str) -> None:
        if not VALID_ID.match(container_id):
            raise UsageError(f"invalid container id {container_id!r}")
        self.id = container_id
        self.directory = os.path.join(root, container_id)
        self.fifo = os.path.join(self.directory, FIFO)
        self.record: dict[str, Any] = {}

    @classmethod
    def load(cls, root: str, container_id: str) -> Container:
        container = cls(root, container_id)
        try:
            with open(os.path.join(container.directory, STATE), "rb") as f:
                container.record = json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError("container does not exist") from None
        except (OSError, ValueError) as err:
            raise UsageError(f"container {container_id}: unreadable state: {err}") from None
        return container

    def make(self, bundle: str, rootfs: str, annotations: dict[str, str]) -> None:
        """The directory of a new container (status creating); UsageError if it exists."""
        os.makedirs(os.path.dirname(self.directory), mode=0o700, exist_ok=True)
        try:
            os.mkdir(self.directory, 0o700)
        except FileExistsError:
            raise UsageError("container with given ID already exists") from None
        os.mkfifo(self.fifo, 0o600)
        self.record = {"id": self.id, "bundle": bundle, "rootfs": rootfs, "pid": 0,
                       "created": _now(), "annotations": annotations}
        self.save()

    def save(self) -> None:
        path = os.path.join(self.directory, STATE)
        with open(path + ".new", "w") as f:
            json.dump(self.record, f)
        os.replace(path + ".new", path)  # readers see the old record or the new one

    def set_init(self, pid: int) -> None:
        self.record["pid"] = pid
        self.record["start_time"] = process_start_time(pid)
        self.save()

    @property
    def pid(self) -> int:
        return int(self.record.get("pid") or 0)

    def alive(self) -> bool:
        pid = self.pid
        start = self.record.get("start_time")
        return pid > 0 and start is not None and process_start_time(pid) == start

    @property
    def status(self) -> str:
        if not self.pid:
            return "creating"
        if not self.alive():
            return "stopped"
        return "created" if os.path.exists(self.fifo) else "running"

    def state(self) -> dict[str, Any]:
        """The state as runc prints it: the spec's fields, then rootfs, created, owner."""
        status = self.status
        out = {"ociVersion": OCI_VERSION, "id": self.id,
               "pid": self.pid if status in ("created", "running") else 0,
               "status": status, "bundle": self.record.get("bundle", ""),
               "rootfs": self.record.get("rootfs", ""), "created": self.record.get("created"),
               "owner": "root" if os.geteuid() == 0 else str(os.geteuid())}
        if self.record.get("annotations"):
            out["annotations"] = self.record["annotations"]
        return out

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def container_ids(root: str) -> list[str]:
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [n for n in names if os.path.isfile(os.path.join(root, n, STATE))]


def _now() -> str:
    """RFC 3339 in UTC with nanoseconds, as runc writes `created`."""
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"
