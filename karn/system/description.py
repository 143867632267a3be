"""The system description: one TOML file -> validated partitions, ports, channels, guards,
schedule and health rules. Every mistake is one precise line (docs/systems.md)."""

from __future__ import annotations

import os
import re
import tomllib

from karn.errors import UsageError
from karn.hints import Any
from karn.system.apex import configure as configure_apex
from karn.system.guards import Guard, check_schema, compile_allow
from karn.system.units import duration_ms, size_bytes

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
SCHEDULES = ("fair", "priority", "cyclic")
ACTIONS = ("restart", "halt", "stop")
FINAL_ACTIONS = ("halt", "stop")
DEFAULT_DEPTH = 16
MAX_MESSAGE = 1 << 16  # one SOCK_SEQPACKET datagram stays well inside the socket buffer
MAX_DEPTH = 4096
SUPERVISOR_OPTIONS = ("--port", "-d", "--detach", "--name", "--gdb")  # set or refused by it
UNSANDBOXED_OPTIONS = ("--no-sandbox",)  # only with allow_unsandboxed = true at the top


def names_option(arg: str, options: tuple[str, ...]) -> str | None:
    """Which of options a `karn run` argument sets, as argparse reads it: a long option
    abbreviated to any prefix of it ("--no-s"), a short flag with others after it ("-dm"),
    both with or without "=VALUE"; None if none."""
    name = arg.split("=", 1)[0]
    for option in options:
        if name.startswith("--"):
            if option.startswith(name):
                return option
        elif not option.startswith("--") and name.startswith(option):
            return option
    return None


class DescriptionError(UsageError):
    """A mistake in a system description, reported as `FILE: where: what`."""


class Port:
    def __init__(self, partition: str, name: str, direction: str, kind: str, max_size: int,
                 depth: int, refresh_ms: float) -> None:
        self.partition = partition
        self.name = name
        self.direction = direction  # "out" (source) or "in" (destination)
        self.kind = kind  # "sampling" or "queuing"
        self.max_size = max_size
        self.depth = depth  # queuing: messages the destination's queue holds
        self.refresh_ms = refresh_ms  # sampling destination: validity period (0: always)

    @property
    def ref(self) -> str:
        return f"{self.partition}.{self.name}"


class Health:
    def __init__(self, on_error: str = "halt", on_exit: str = "halt", max_restarts: int = 3,
                 backoff_ms: float = 100.0, then: str = "halt") -> None:
        self.on_error = on_error  # the partition crashed or exited non-zero
        self.on_exit = on_exit  # the partition exited with status 0
        self.max_restarts = max_restarts
        self.backoff_ms = backoff_ms  # first restart delay; doubles after each restart
        self.then = then  # when the restarts are used up


class Partition:
    def __init__(self, name: str) -> None:
        self.name = name
        self.program = ""  # a host program (absolute) or an image reference
        self.args: list[str] = []
        self.env: list[str] = []
        self.memory: int | None = None
        self.cpus: int | None = None  # guest vCPUs (karn run --cpus)
        self.network: str | None = None  # the partition's network policy (--network)
        self.volumes: list[str] = []
        self.options: list[str] = []  # more `karn run` options: the partition's policy
        self.affinity: list[int] = []  # host CPUs its monitor may run on
        self.priority = 0  # SCHED_FIFO priority under the priority schedule
        self.ports: dict[str, Port] = {}
        self.health = Health()


class Channel:
    def __init__(self, source: Port, dest: Port, diode: bool, guard: Guard | None,
                 max_size: int, mapped_sender: bool = False) -> None:
        self.source = source
        self.dest = dest
        self.diode = diode
        self.guard = guard
        self.max_size = max_size
        # A diode's sender may map its ring only when the system says so: sharing the
        # pages the receiver reads lets it time the receiver's reads through the cache.
        self.sender_maps = mapped_sender or not diode

    @property
    def name(self) -> str:
        return f"{self.source.ref}->{self.dest.ref}"


class Window:
    def __init__(self, partition: str, start_ms: float, duration_ms: float) -> None:
        self.partition = partition
        self.start_ms = start_ms
        self.duration_ms = duration_ms


class Schedule:
    def __init__(self, policy: str = "fair", major_frame_ms: float = 0.0,
                 windows: list[Window] | None = None) -> None:
        self.policy = policy
        self.major_frame_ms = major_frame_ms
        self.windows = windows or []


class SystemDescription:
    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path
        self.partitions: dict[str, Partition] = {}
        self.guards: dict[str, Guard] = {}
        self.channels: list[Channel] = []
        self.schedule = Schedule()
        self.acyclic = False  # no path may lead from a diode's receiver back to its sender
        self.apex: dict[str, Any] = {}  # partition -> its APEX configuration (apex.py)

    def ports(self) -> list[Port]:
        return [port for p in self.partitions.values() for port in p.ports.values()]


def load(path: str) -> SystemDescription:
    """Read and validate a system description; DescriptionError on the first mistake."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as err:
        raise UsageError(f"{path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise DescriptionError(f"{path}: invalid TOML: {err}") from None
    return _Loader(path, doc).load()


class _Loader:
    def __init__(self, path: str, doc: dict[str, Any]) -> None:
        self.path = path
        self.doc = doc
        self.base = os.path.dirname(os.path.abspath(path))
        self.allow_unsandboxed = False

    def fail(self, where: str, what: str) -> DescriptionError:
        return DescriptionError(f"{self.path}: {where}: {what}")

    def load(self) -> SystemDescription:
        doc = self.doc
        self._keys("top level", doc, {"name", "acyclic", "allow_unsandboxed", "partitions",
                                      "channels", "guards", "schedule"})
        self.allow_unsandboxed = self._get("top level", doc, "allow_unsandboxed", bool, False)
        stem = os.path.splitext(os.path.basename(self.path))[0]
        name = self._get("top level", doc, "name", str, stem)
        if not NAME.match(name):
            raise self.fail("name", f"{name!r} is not a valid system name (letters, digits, _ -)")
        system = SystemDescription(name, os.path.abspath(self.path))
        system.acyclic = self._get("top level", doc, "acyclic", bool, False)
        partitions = self._get("top level", doc, "partitions", dict, {})
        if not partitions:
            raise self.fail("partitions", "a system needs at least one partition")
        for pname, table in partitions.items():
            system.partitions[pname] = self._partition(pname, table)
        for gname, table in self._get("top level", doc, "guards", dict, {}).items():
            system.guards[gname] = self._guard(gname, table)
        for i, table in enumerate(self._get("top level", doc, "channels", list, [])):
            system.channels.append(self._channel(system, i, table))
        self._check_ports_connected(system)
        system.schedule = self._schedule(system, self._get("top level", doc, "schedule",
                                                           dict, {}))
        if system.acyclic:
            self._check_acyclic(system)
        configure_apex(system, partitions, self.fail)
        return system

    # -- helpers ---------------------------------------------------------------------
    def _keys(self, where: str, table: dict, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(where, f"unknown key {key!r} (expected one of: "
                                       f"{', '.join(sorted(allowed))})")

    def _get(self, where: str, table: dict, key: str, kind: type | tuple, default: Any) -> Any:
        if key not in table:
            return default
        value = table[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(
                k.__name__ for k in kind)
            raise self.fail(where, f"{key} must be a {names}, not {type(value).__name__}")
        return value

    def _convert(self, where: str, key: str, value: Any, conv: Any) -> Any:
        try:
            return conv(value)
        except ValueError as err:
            raise self.fail(where, f"{key}: {err}") from None

    # -- sections --------------------------------------------------------------------
    def _partition(self, name: str, table: Any) -> Partition:
        where = f"partition {name}"
        if not NAME.match(name):
            raise self.fail(where, "invalid name (letters, digits, _ -)")
        if not isinstance(table, dict):
            raise self.fail(where, "must be a table")
        self._keys(where, table, {"program", "image", "args", "env", "memory", "cpus",
                                  "network", "volumes", "options", "cpu_affinity", "priority",
                                  "ports", "health", "apex"})
        part = Partition(name)
        program = self._get(where, table, "program", str, None)
        image = self._get(where, table, "image", str, None)
        if (program is None) == (image is None):
            raise self.fail(where, "give exactly one of program (a host program) or image")
        if program is not None:
            part.program = program if os.path.sep not in program else os.path.join(
                self.base, program)
            if os.path.sep in program and not os.path.isfile(part.program):
                raise self.fail(where, f"program {part.program} does not exist")
        else:
            part.program = image
        part.args = [str(a) for a in self._get(where, table, "args", list, [])]
        part.env = [str(e) for e in self._get(where, table, "env", list, [])]
        if "memory" in table:
            part.memory = self._convert(where, "memory", table["memory"], size_bytes)
        part.cpus = self._get(where, table, "cpus", int, None)
        if part.cpus is not None and part.cpus < 1:
            raise self.fail(where, "cpus must be at least 1")
        part.network = self._get(where, table, "network", str, None)
        part.volumes = [str(v) for v in self._get(where, table, "volumes", list, [])]
        part.options = [str(o) for o in self._get(where, table, "options", list, [])]
        for option in part.options:
            if not option.startswith("-") or option in ("-", "--") or names_option(
                    option, SUPERVISOR_OPTIONS):
                raise self.fail(where, f"options: {option!r} is not a karn run option the "
                                       "partition may set")
            if names_option(option, UNSANDBOXED_OPTIONS) and not self.allow_unsandboxed:
                raise self.fail(where, f"options: {option!r} runs the partition's monitor "
                                       "unconfined; allow it with allow_unsandboxed = true at "
                                       "the top of the system file")
        part.affinity = self._get(where, table, "cpu_affinity", list, [])
        ncpu = os.cpu_count() or 1
        for cpu in part.affinity:
            if not isinstance(cpu, int) or not 0 <= cpu < ncpu:
                raise self.fail(where, f"cpu_affinity: {cpu!r} is not a host CPU (0-{ncpu - 1})")
        part.priority = self._get(where, table, "priority", int, 0)
        if not 0 <= part.priority <= 98:
            raise self.fail(where, "priority must be between 1 and 98")
        for pname, ptable in self._get(where, table, "ports", dict, {}).items():
            part.ports[pname] = self._port(name, pname, ptable)
        part.health = self._health(where, self._get(where, table, "health", dict, {}))
        return part

    def _port(self, partition: str, name: str, table: Any) -> Port:
        where = f"port {partition}.{name}"
        if not NAME.match(name) or name.endswith(".status"):
            raise self.fail(where, "invalid port name (letters, digits, _ -)")
        if not isinstance(table, dict):
            raise self.fail(where, "must be a table")
        self._keys(where, table, {"direction", "kind", "max_size", "depth", "refresh"})
        direction = self._get(where, table, "direction", str, None)
        if direction not in ("in", "out"):
            raise self.fail(where, "direction must be \"in\" or \"out\"")
        kind = self._get(where, table, "kind", str, "queuing")
        if kind not in ("sampling", "queuing"):
            raise self.fail(where, "kind must be \"sampling\" or \"queuing\"")
        if "max_size" not in table:
            raise self.fail(where, "max_size is required (the largest message in bytes)")
        max_size = self._convert(where, "max_size", table["max_size"], size_bytes)
        if max_size > MAX_MESSAGE:
            raise self.fail(where, f"max_size {max_size} is over the limit of {MAX_MESSAGE}")
        depth = self._get(where, table, "depth", int, DEFAULT_DEPTH)
        if "depth" in table and kind != "queuing":
            raise self.fail(where, "depth applies to queuing ports only")
        if not 1 <= depth <= MAX_DEPTH:
            raise self.fail(where, f"depth must be between 1 and {MAX_DEPTH}")
        refresh = 0.0
        if "refresh" in table:
            if kind != "sampling" or direction != "in":
                raise self.fail(where, "refresh applies to sampling destination (in) ports only")
            refresh = self._convert(where, "refresh", table["refresh"], duration_ms)
        return Port(partition, name, direction, kind, max_size, depth, refresh)

    def _health(self, where: str, table: dict) -> Health:
        where += " health"
        self._keys(where, table, {"on_error", "on_exit", "max_restarts", "backoff", "then"})
        health = Health()
        for key in ("on_error", "on_exit"):
            value = self._get(where, table, key, str, getattr(health, key))
            if value not in ACTIONS:
                raise self.fail(where, f"{key} must be one of {', '.join(ACTIONS)}")
            setattr(health, key, value)
        health.then = self._get(where, table, "then", str, health.then)
        if health.then not in FINAL_ACTIONS:
            raise self.fail(where, f"then must be one of {', '.join(FINAL_ACTIONS)}")
        health.max_restarts = self._get(where, table, "max_restarts", int, health.max_restarts)
        if health.max_restarts < 0:
            raise self.fail(where, "max_restarts must not be negative")
        if "backoff" in table:
            health.backoff_ms = self._convert(where, "backoff", table["backoff"], duration_ms)
        return health

    def _guard(self, name: str, table: Any) -> Guard:
        where = f"guard {name}"
        if not isinstance(table, dict):
            raise self.fail(where, "must be a table")
        self._keys(where, table, {"max_size", "schema", "schema_file", "allow", "deny",
                                  "rate", "burst"})
        guard = Guard(name)
        if "max_size" in table:
            guard.max_size = self._convert(where, "max_size", table["max_size"], size_bytes)
        if "schema" in table and "schema_file" in table:
            raise self.fail(where, "give schema or schema_file, not both")
        if "schema_file" in table:
            guard.schema = self._schema_file(where, self._get(where, table, "schema_file",
                                                              str, ""))
        else:
            guard.schema = self._get(where, table, "schema", dict, None)
        if guard.schema is not None:
            problem = check_schema(guard.schema)
            if problem:
                raise self.fail(where, f"invalid JSON schema: {problem}")
        guard.allow = self._get(where, table, "allow", str, None)
        if guard.allow is not None:
            try:
                compile_allow(guard.allow)
            except ValueError as err:
                raise self.fail(where, f"allow: {err}") from None
        guard.deny = self._get(where, table, "deny", list, [])
        if not all(isinstance(w, str) and w for w in guard.deny):
            raise self.fail(where, "deny must be a list of non-empty strings")
        rate = self._get(where, table, "rate", (int, float), None)
        if rate is not None and rate <= 0:
            raise self.fail(where, "rate must be positive (messages per second)")
        guard.rate = None if rate is None else float(rate)
        guard.burst = self._get(where, table, "burst", int, max(1, int(rate or 1)))
        if guard.burst < 1:
            raise self.fail(where, "burst must be at least 1")
        return guard

    def _schema_file(self, where: str, name: str) -> dict:
        import json

        path = os.path.join(self.base, name)
        try:
            with open(path, "rb") as f:
                schema = json.load(f)
        except OSError as err:
            raise self.fail(where, f"schema_file {path}: {err.strerror}") from None
        except ValueError as err:
            raise self.fail(where, f"schema_file {path}: invalid JSON: {err}") from None
        if not isinstance(schema, dict):
            raise self.fail(where, f"schema_file {path}: a schema is a JSON object")
        return schema

    def _endpoint(self, system: SystemDescription, where: str, key: str, ref: Any) -> Port:
        if not isinstance(ref, str) or ref.count(".") != 1:
            raise self.fail(where, f"{key} must be \"PARTITION.PORT\", not {ref!r}")
        pname, port = ref.split(".")
        part = system.partitions.get(pname)
        if part is None:
            raise self.fail(where, f"{key}: unknown partition {pname!r}")
        if port not in part.ports:
            raise self.fail(where, f"{key}: partition {pname} has no port {port!r}")
        return part.ports[port]

    def _channel(self, system: SystemDescription, index: int, table: Any) -> Channel:
        where = f"channel {index + 1}"
        if not isinstance(table, dict):
            raise self.fail(where, "must be a table")
        self._keys(where, table, {"from", "to", "diode", "guard", "max_size", "mapped_sender"})
        for key in ("from", "to"):
            if key not in table:
                raise self.fail(where, f"{key} is required (\"PARTITION.PORT\")")
        source = self._endpoint(system, where, "from", table["from"])
        dest = self._endpoint(system, where, "to", table["to"])
        where = f"channel {source.ref} -> {dest.ref}"
        if source.direction != "out":
            raise self.fail(where, f"port direction mismatch: {source.ref} is an \"in\" port "
                                   "and cannot send")
        if dest.direction != "in":
            raise self.fail(where, f"port direction mismatch: {dest.ref} is an \"out\" port "
                                   "and cannot receive")
        if source.partition == dest.partition:
            raise self.fail(where, "a channel joins two different partitions")
        if source.kind != dest.kind:
            raise self.fail(where, f"port kind mismatch: {source.ref} is {source.kind}, "
                                   f"{dest.ref} is {dest.kind}")
        max_size = dest.max_size
        if "max_size" in table:
            max_size = self._convert(where, "max_size", table["max_size"], size_bytes)
            for port in (source, dest):
                if port.max_size > max_size:
                    raise self.fail(where, f"message size over the channel's limit: "
                                           f"{port.ref} allows {port.max_size} bytes, the "
                                           f"channel {max_size}")
        if source.max_size > dest.max_size:
            raise self.fail(where, f"message size over the channel's limit: {source.ref} "
                                   f"sends up to {source.max_size} bytes, {dest.ref} "
                                   f"receives at most {dest.max_size}")
        guard = None
        if "guard" in table:
            gname = self._get(where, table, "guard", str, "")
            if gname not in system.guards:
                raise self.fail(where, f"unknown guard {gname!r}")
            guard = system.guards[gname]
        diode = self._get(where, table, "diode", bool, False)
        mapped_sender = self._get(where, table, "mapped_sender", bool, False)
        for ch in system.channels:
            if ch.source is source:
                raise self.fail(where, f"port {source.ref} already feeds {ch.dest.ref}")
            if ch.dest is dest:
                raise self.fail(where, f"port {dest.ref} is already fed by {ch.source.ref}")
        return Channel(source, dest, diode, guard, max_size, mapped_sender)

    def _check_ports_connected(self, system: SystemDescription) -> None:
        joined = {id(ch.source) for ch in system.channels} | {id(ch.dest) for ch in
                                                                system.channels}
        for port in system.ports():
            if id(port) not in joined:
                raise self.fail(f"port {port.ref}", "not connected to any channel")

    def _schedule(self, system: SystemDescription, table: dict) -> Schedule:
        where = "schedule"
        self._keys(where, table, {"policy", "major_frame", "windows"})
        policy = self._get(where, table, "policy", str, "fair")
        if policy not in SCHEDULES:
            raise self.fail(where, f"policy must be one of {', '.join(SCHEDULES)}")
        if policy == "priority":
            for part in system.partitions.values():
                if part.priority == 0:
                    raise self.fail(f"partition {part.name}", "the priority schedule needs a "
                                                              "priority (1-98)")
        if policy != "cyclic":
            if "major_frame" in table or "windows" in table:
                raise self.fail(where, "major_frame and windows belong to the cyclic policy")
            return Schedule(policy)
        if "major_frame" not in table:
            raise self.fail(where, "the cyclic policy needs major_frame")
        frame = self._convert(where, "major_frame", table["major_frame"], duration_ms)
        if frame < 1:
            raise self.fail(where, "major_frame must be at least 1ms")
        windows = []
        for i, w in enumerate(self._get(where, table, "windows", list, [])):
            wwhere = f"schedule window {i + 1}"
            if not isinstance(w, dict):
                raise self.fail(wwhere, "must be a table")
            self._keys(wwhere, w, {"partition", "start", "duration"})
            pname = self._get(wwhere, w, "partition", str, "")
            if pname not in system.partitions:
                raise self.fail(wwhere, f"unknown partition {pname!r}")
            for key in ("start", "duration"):
                if key not in w:
                    raise self.fail(wwhere, f"{key} is required")
            start = self._convert(wwhere, "start", w["start"], duration_ms)
            length = self._convert(wwhere, "duration", w["duration"], duration_ms)
            if length <= 0:
                raise self.fail(wwhere, "duration must be positive")
            if start + length > frame + 1e-9:
                raise self.fail(wwhere, f"window {start:g}-{start + length:g}ms exceeds the "
                                        f"major frame of {frame:g}ms")
            windows.append(Window(pname, start, length))
        ordered = sorted(windows, key=lambda w: w.start_ms)
        for a, b in zip(ordered, ordered[1:], strict=False):
            if a.start_ms + a.duration_ms > b.start_ms + 1e-9:
                raise self.fail(where, f"windows overlap: {a.partition} "
                                       f"{a.start_ms:g}-{a.start_ms + a.duration_ms:g}ms and "
                                       f"{b.partition} {b.start_ms:g}-"
                                       f"{b.start_ms + b.duration_ms:g}ms")
        scheduled = {w.partition for w in windows}
        for pname in system.partitions:
            if pname not in scheduled:
                raise self.fail(where, f"partition {pname} has no window in the cyclic schedule")
        return Schedule(policy, frame, ordered)

    def _check_acyclic(self, system: SystemDescription) -> None:
        """A diode is one-way only if no path of channels leads from its receiver back to
        its sender; report the first such path."""
        edges: dict[str, list[Channel]] = {}
        for ch in system.channels:
            edges.setdefault(ch.source.partition, []).append(ch)
        for diode in (ch for ch in system.channels if ch.diode):
            path = _path(edges, diode.dest.partition, diode.source.partition)
            if path is not None:
                back = " -> ".join(ch.name for ch in path)
                raise self.fail(f"channel {diode.name}", f"cycle through a diode in a system "
                                                         f"declared acyclic: back via {back}")


def _path(edges: dict[str, list[Channel]], start: str, goal: str) -> list[Channel] | None:
    """Channels leading from partition start to partition goal (breadth first), or None."""
    frontier: list[tuple[str, list[Channel]]] = [(start, [])]
    seen = {start}
    while frontier:
        node, path = frontier.pop(0)
        for ch in edges.get(node, []):
            nxt = ch.dest.partition
            if nxt == goal:
                return [*path, ch]
            if nxt not in seen:
                seen.add(nxt)
                frontier.append((nxt, [*path, ch]))
    return None
