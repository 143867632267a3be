"""config.json's limits -> karn's: process.rlimits, linux.resources (memory, CPU, pids)
and the io.karn.* annotations. A limit karn cannot enforce is refused by name; a limit
beyond karn's own maximum is lowered to it (tighter, never looser)."""

from __future__ import annotations

import math

from karn.errors import UsageError
from karn.hints import Any
from karn.policy import MAX_THREADS
from karn.run.config import MIB

MAX_OPEN_FILES = 1 << 20
# Limits that karn's own bounds already cover: the address space, data and resident set
# by --memory, locked memory (nothing is ever locked on the host for a guest), the stack
# (a fixed 8 MiB), core files (written only with --core-dump), and the scheduling and
# queue limits that have no host effect from inside a unikernel.
COVERED_RLIMITS = frozenset((
    "RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_RSS", "RLIMIT_MEMLOCK", "RLIMIT_STACK", "RLIMIT_CORE",
    "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME", "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE",
    "RLIMIT_LOCKS",
))
# io.karn.* annotation -> (policy key or RunConfig attribute, parser)
ANNOTATIONS = {
    "io.karn.cpus": "cpus",
    "io.karn.memory": "memory",
    "io.karn.syscalls": "syscalls",
    "io.karn.on-denied": "on_denied",
    "io.karn.tmpfs-size": "tmpfs_size",
    "io.karn.aslr": "aslr",
    "io.karn.vdso": "vdso",
    "io.karn.syscall-transport": "syscall_transport",
    "io.karn.network": "network",
}


class Limits:
    """What the limits of one config.json come to."""

    def __init__(self) -> None:
        self.memory: int | None = None
        self.cpus: int | None = None
        self.syscall_transport: str | None = None
        self.policy: dict[str, Any] = {}  # karn policy keys (karn/policy.py)


def limits(config: dict[str, Any]) -> Limits:
    out = Limits()
    process = config.get("process") or {}
    for rlimit in process.get("rlimits") or []:
        _rlimit(out, rlimit)
    resources = (config.get("linux") or {}).get("resources") or {}
    _resources(out, resources)
    for key, value in (config.get("annotations") or {}).items():
        if key.startswith("io.karn."):
            _annotation(out, key, value)
    return out


def _rlimit(out: Limits, rlimit: dict[str, Any]) -> None:
    kind, soft = rlimit.get("type"), rlimit.get("soft")
    if not isinstance(soft, int) or soft < 0:
        raise UsageError(f"process.rlimits: {kind}: soft must be a whole number")
    if kind == "RLIMIT_NOFILE":
        out.policy["open_files"] = max(3, min(soft, MAX_OPEN_FILES))
    elif kind == "RLIMIT_NPROC":
        _fewer_threads(out, soft, "process.rlimits RLIMIT_NPROC")
    elif kind == "RLIMIT_CPU":
        out.policy["cpu_time"] = max(1, min(soft, 1 << 31))
    elif kind == "RLIMIT_FSIZE":
        out.policy["file_size"] = soft
    elif kind not in COVERED_RLIMITS:
        raise UsageError(f"process.rlimits: {kind} is not supported by karn")


def _fewer_threads(out: Limits, count: int, field: str) -> None:
    if count < 1:
        raise UsageError(f"{field}: must be at least 1")
    out.policy["threads"] = min(count, out.policy.get("threads", MAX_THREADS))


def _resources(out: Limits, resources: dict[str, Any]) -> None:
    memory = resources.get("memory") or {}
    limit = memory.get("limit")
    if isinstance(limit, int) and limit > 0:
        if limit < 16 * MIB:
            raise UsageError("linux.resources.memory.limit: karn needs at least 16 MiB")
        out.memory = limit
    cpu = resources.get("cpu") or {}
    quota, period = cpu.get("quota"), cpu.get("period")
    if isinstance(quota, int) and quota > 0:
        out.cpus = max(1, math.ceil(quota / (period or 100000)))
    elif cpu.get("cpus"):  # a cpuset: as many vCPUs as it names CPUs
        out.cpus = _cpuset_size(str(cpu["cpus"]))
    pids = (resources.get("pids") or {}).get("limit")
    if isinstance(pids, int) and pids > 0:
        _fewer_threads(out, pids, "linux.resources.pids.limit")
    for field in ("blockIO", "rdma", "network"):  # limits karn has no means to keep
        if resources.get(field):
            raise UsageError(f"linux.resources.{field} is not supported by karn")


def _cpuset_size(text: str) -> int:
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        try:
            count += int(high or low) - int(low) + 1
        except ValueError:
            raise UsageError(f"linux.resources.cpu.cpus: invalid cpuset {text!r}") from None
    return max(1, count)


def _annotation(out: Limits, key: str, value: str) -> None:
    from karn.sizes import parse_size

    target = ANNOTATIONS.get(key)
    if target is None:
        raise UsageError(f"annotation {key}: unknown (known: {', '.join(sorted(ANNOTATIONS))})")
    try:
        if target == "cpus":
            out.cpus = int(value)
        elif target == "memory":
            out.memory = parse_size(value)
        elif target == "syscall_transport":
            out.syscall_transport = value
        elif target in ("aslr", "vdso"):
            if value not in ("true", "false"):
                raise ValueError("use true or false")
            out.policy[target] = value == "true"
        else:
            out.policy[target] = value
    except ValueError as err:
        raise UsageError(f"annotation {key}={value!r}: {err}") from None
