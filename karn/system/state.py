"""Where a system's supervisor keeps its state, and how commands reach it.

    $STATE/systems/NAME/meta.json      name, description file, supervisor pid, started
    $STATE/systems/NAME/control.sock   the supervisor's control socket (JSON lines)
    $STATE/systems/NAME/events.log     health-monitor, guard and schedule events
    $STATE/systems/NAME/logs/P.log     partition P's stdout and stderr
    ... .log.1                         the previous part of a full log (RotatingLog)
    $STATE/systems/NAME/status.json    the final status, written when the system stops

$STATE is karn's state directory (docs/instances.md). The directory stays after the
system stops, so `status` and `logs` still answer.
"""

from __future__ import annotations

import json
import os
import socket
import threading

from karn.errors import KarnError, NotFoundError, UsageError
from karn.instance.paths import state_dir
from karn.instance.registry import process_start_time

META, SOCKET, EVENTS, STATUS = "meta.json", "control.sock", "events.log", "status.json"
LOGS = "logs"
REQUEST_TIMEOUT = 10.0
EVENTS_MAX = 1 << 20  # bytes of events.log before it rotates
PARTITION_LOG_MAX = 8 << 20  # bytes of a partition's log before it rotates
OLD = ".1"  # suffix of a rotated log


class RotatingLog:
    """An append-only log of at most `limit` bytes: when the next write would pass it, the
    file becomes NAME.1 (replacing the older one) and a new one starts, so a partition
    cannot fill the disk through its output or the events it causes. At most twice the
    limit on disk. Starts empty. Thread-safe (the cyclic scheduler logs from its thread)."""

    def __init__(self, path: str, limit: int) -> None:
        self.path, self.limit = path, limit
        self.lock = threading.Lock()
        try:
            os.unlink(path + OLD)
        except FileNotFoundError:
            pass
        self.fd = self._open()
        self.size = 0

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC
        return os.open(self.path, flags, 0o600)

    def write(self, data: bytes) -> None:
        with self.lock:
            if self.fd < 0:
                return
            if self.size and self.size + len(data) > self.limit:
                os.close(self.fd)
                os.replace(self.path, self.path + OLD)
                self.fd, self.size = self._open(), 0
            self.size += os.write(self.fd, data[: self.limit])

    def close(self) -> None:
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


def log_parts(path: str) -> list[str]:
    """A log's files, oldest first."""
    return [p for p in (path + OLD, path) if os.path.exists(p)]


def systems_dir() -> str:
    return os.path.join(state_dir(), "systems")


def system_dir(name: str) -> str:
    return os.path.join(systems_dir(), name)


def read_json(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_running(name: str) -> bool:
    meta = read_json(os.path.join(system_dir(name), META))
    if not meta or meta.get("stopped"):
        return False
    return process_start_time(meta["pid"]) == meta.get("pid_start")


def known_systems() -> list[str]:
    try:
        return sorted(n for n in os.listdir(systems_dir())
                      if os.path.isfile(os.path.join(systems_dir(), n, META)))
    except OSError:
        return []


def resolve(name_or_file: str | None) -> str:
    """A system name from NAME, a description FILE, or nothing: the only running system,
    else the one started last."""
    if name_or_file is None:
        known = known_systems()
        running = [n for n in known if is_running(n)]
        if len(running) == 1:
            return running[0]
        if running:
            raise UsageError(f"several systems are running ({', '.join(running)}): name one")
        if not known:
            raise NotFoundError("no system has run here yet")
        return max(known, key=lambda n: (read_json(os.path.join(system_dir(n), META))
                                         or {}).get("started", 0))  # the latest one
    if os.path.isfile(name_or_file):
        from karn.system.description import load

        return load(name_or_file).name
    if name_or_file not in known_systems():
        raise NotFoundError(f"unknown system {name_or_file!r}")
    return name_or_file


def request(name: str, op: str) -> dict:
    """One control request to a running supervisor."""
    path = os.path.join(system_dir(name), SOCKET)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(REQUEST_TIMEOUT)
            sock.connect(path)
            sock.sendall(json.dumps({"op": op}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError as err:
        raise KarnError(f"system {name} does not answer ({err.strerror or err})") from None
    try:
        return json.loads(data)
    except ValueError:
        raise KarnError(f"system {name} sent a malformed answer") from None
