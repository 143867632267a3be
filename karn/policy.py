"""The run policy: one model for what a guest may do (docs/security.md).

Defaults are deny-by-default where Linux programs still run: a read-only root, no network
(karn/kernel/net/policy.py), bounded memory, threads, files and tmpfs. An image's
Karnfile `[policy]` table sets it; `karn run` options override it, key by key:

    Karnfile [policy]   karn run option          enforced by
    syscalls = [...]    --syscalls LIST          the per-process syscall table (kernel)
    on_denied = "..."   --on-denied eperm|kill   same
    network = "..."     --network ...            kernel/net (policy.py)
    threads = N         --pids-limit N           RLIMIT_NPROC hard limit
    open_files = N      --ulimit nofile=N        RLIMIT_NOFILE (1024; hard: host's, <= 65536)
    cpu_time = S        --ulimit cpu=S           RLIMIT_CPU: SIGXCPU, then SIGKILL
    file_size = SIZE    --ulimit fsize=SIZE      RLIMIT_FSIZE: EFBIG and SIGXFSZ
    tmpfs_size = SIZE   --tmpfs-size SIZE        /tmp and /dev/shm: ENOSPC
    aslr = bool         --no-aslr                the loader and mm placement
    vdso = bool         --no-vdso                the loader: clocks without a VM exit
    (memory, top level) -m/--memory              mappings + tmpfs data: ENOMEM/ENOSPC

An image may tighten these by itself; what loosens karn's defaults (loosenings()) needs
the user's consent at run time: --trust-image-policy, or the option on the command line.
"""

from __future__ import annotations

import os
from resource import RUSAGE_SELF, getrusage

from karn import log
from karn.errors import UsageError
from karn.hints import Any
from karn.kernel.limits import host_nofile_hard
from karn.sizes import parse_size

DEFAULT_THREADS = 1024  # one vCPU and one host thread each: keep a thread bomb small
DEFAULT_OPEN_FILES = 1024  # the soft limit, the hard one the host's, unless set
DEFAULT_CPUS = 1
MAX_THREADS = 4096
ON_DENIED = ("eperm", "kill")


class Policy:
    __slots__ = ("syscalls", "on_denied", "network", "threads", "open_files", "cpu_time",
                 "file_size", "tmpfs_size", "aslr", "vdso")

    def __init__(self) -> None:
        self.syscalls: str | None = None  # allow-list (names and classes); None: all
        self.on_denied = "eperm"
        self.network: str | None = None  # --network spec; None: none
        self.threads = DEFAULT_THREADS
        self.open_files: int | None = None  # None: soft DEFAULT_OPEN_FILES, hard the host's
        self.cpu_time: int | None = None  # seconds of CPU; None: unlimited
        self.file_size: int | None = None  # bytes per written file; None: unlimited
        self.tmpfs_size: int | None = None  # bytes per tmpfs; None: half of --memory
        self.aslr = True
        self.vdso = True  # map a vDSO (platform/vdso); off: every clock read is a syscall

    def update(self, values: dict[str, Any], source: str) -> Policy:
        """Apply settings (a Karnfile table, or command-line overrides), checking each."""
        for key, value in values.items():
            if value is None:
                continue
            check = _CHECKS.get(key)
            if check is None:
                known = ", ".join(sorted(_CHECKS))
                raise UsageError(f"{source}: unknown policy key {key!r} (known: {known})")
            try:
                setattr(self, key, check(value))
            except (TypeError, ValueError) as err:
                raise UsageError(f"{source}: policy {key} = {value!r}: {err}") from None
        return self

    def syscall_names(self) -> frozenset[str] | None:
        if self.syscalls is None:
            return None
        from karn.kernel.syscall_groups import expand

        return expand(self.syscalls)

    def describe(self) -> dict[str, Any]:
        names = self.syscall_names()
        return {
            "syscalls": "all implemented" if names is None else sorted(names),
            "on_denied": self.on_denied, "max_threads": self.threads,
            "max_open_files": self.open_files or host_nofile_hard(), "cpu_time": self.cpu_time,
            "file_size": self.file_size, "tmpfs_size": self.tmpfs_size, "aslr": self.aslr,
            "vdso": self.vdso,
        }


def _count(low: int, high: int):
    def check(value: Any) -> int:
        if isinstance(value, bool) or int(value) != value or not low <= int(value) <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return int(value)
    return check


def _syscalls(value: Any) -> str | None:
    text = ",".join(value) if isinstance(value, list) else str(value)
    if text.strip() == "all":
        return None
    from karn.kernel.syscall_groups import expand

    if not expand(text):  # ValueError names what is unknown
        raise ValueError("the allow-list is empty (use 'all' for no list)")
    return text


def _on_denied(value: Any) -> str:
    if value not in ON_DENIED:
        raise ValueError("must be eperm (the call fails) or kill (the guest is killed)")
    return value


def _network(value: Any) -> str:
    from karn.kernel.net.policy import NetPolicy, PolicyError

    try:
        NetPolicy.parse(str(value))
    except PolicyError as err:
        raise ValueError(str(err)) from None
    return str(value)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


_CHECKS = {
    "syscalls": _syscalls, "on_denied": _on_denied, "network": _network,
    "threads": _count(1, MAX_THREADS), "open_files": _count(3, 1 << 20),
    "cpu_time": _count(1, 1 << 31), "file_size": parse_size, "tmpfs_size": parse_size,
    "aslr": _flag, "vdso": _flag,
}


# Keys no value of which loosens the default: it allows every call (a list is tighter),
# fails denied calls with EPERM (kill is stricter) and sets no CPU time or file size limit;
# without a vDSO the guest only makes more system calls.
_NEVER_LOOSER = frozenset(("syscalls", "on_denied", "cpu_time", "file_size", "vdso"))
# What overrides each key on the `karn run` command line (aslr=false has no opposite).
OVERRIDE_OPTIONS = {"memory": "-m", "cpus": "--cpus", "network": "--network",
                    "threads": "--pids-limit", "open_files": "--ulimit nofile=N",
                    "tmpfs_size": "--tmpfs-size"}


def loosenings(values: dict[str, Any], memory: int, default_memory: int) -> list[str]:
    """The settings among `values` (checked policy keys, plus "memory" and "cpus") that
    are looser than karn's defaults for a guest of `memory` bytes, as "key=value"; any key
    not known here counts as looser. Networks order none < egress < host."""
    default = Policy()
    out = []
    for key, value in values.items():
        if value is None or key in _NEVER_LOOSER:
            continue
        if key == "memory":
            looser = value > default_memory
        elif key == "cpus":
            looser = value > DEFAULT_CPUS
        elif key == "network":
            from karn.kernel.net.policy import NetPolicy

            looser = NetPolicy.parse(value).mode != "none"
        elif key == "threads":
            looser = value > default.threads
        elif key == "open_files":
            looser = value > DEFAULT_OPEN_FILES
        elif key == "tmpfs_size":
            looser = value > memory // 2
        elif key == "aslr":
            looser = value is False
        else:
            looser = True
        if looser:
            shown = _size(value) if key in ("memory", "tmpfs_size") else value
            out.append(f"{key}={str(shown).lower() if isinstance(value, bool) else shown}")
    return out


def _size(n: int) -> str:
    for unit, shift in (("g", 30), ("m", 20), ("k", 10)):
        if n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def parse_ulimit(text: str) -> dict[str, Any]:
    """--ulimit nofile=N | cpu=SECONDS | fsize=SIZE (docker's names) -> policy keys."""
    name, sep, value = text.partition("=")
    keys = {"nofile": "open_files", "cpu": "cpu_time", "fsize": "file_size",
            "nproc": "threads"}
    if not sep or name not in keys:
        raise UsageError(f"--ulimit {text!r}: use nofile=N, nproc=N, cpu=SECONDS or "
                         "fsize=SIZE")
    soft = value.split(":")[0]  # SOFT[:HARD] as docker takes it: karn enforces one limit
    key = keys[name]
    return {key: soft if key == "file_size" else _number(soft, text)}


def _number(text: str, spec: str) -> int:
    if not text.isdigit():
        raise UsageError(f"--ulimit {spec!r}: {text!r} is not a number")
    return int(text)


def apply_policy(proc: Any, policy: Policy) -> None:
    """Set a kernel Process's limits and syscall table from the policy."""
    from karn.kernel import fdspare
    from karn.kernel.limits import (
        RLIMIT_CPU,
        RLIMIT_FSIZE,
        RLIMIT_NOFILE,
        RLIMIT_NPROC,
        raise_monitor_nofile,
    )
    from karn.kernel.syscalls import restricted_table

    limits = {RLIMIT_NPROC: policy.threads, RLIMIT_NOFILE: policy.open_files,
              RLIMIT_CPU: policy.cpu_time, RLIMIT_FSIZE: policy.file_size}
    for resource, value in limits.items():
        if value is not None:
            proc.rlimits[resource] = (value, value)
            proc.rlimit_ceilings[resource] = value
    proc.fds.limit = proc.rlimits[RLIMIT_NOFILE][0]
    raise_monitor_nofile()
    fdspare.hold()
    names = policy.syscall_names()
    if names is not None:
        proc.syscall_table = restricted_table(names, kill=policy.on_denied == "kill")


class LimitWatch:
    """Limits checked on the monitor's main thread while the guest runs, a few times a
    second: CPU time (RLIMIT_CPU: SIGXCPU, SIGKILL a second later) and the monitor's
    resident memory, the backstop for guest memory not charged up front (MAP_STACK,
    MAP_NORESERVE): beyond the limit plus the monitor's own, the guest is killed, as by
    the OOM killer of a memory cgroup."""

    TICK = 0.25
    SLACK = 16 << 20  # the monitor's own growth while it runs (buffers, imports)
    # Guest pages are touched without exits, at up to ~1 GiB/s here: the next check comes
    # before the guest could touch the headroom left at TOUCH_RATE (at most TICK, at least
    # MIN_TICK apart), so it stops within a few MiB of the limit, not 250 ms later.
    TOUCH_RATE = 2 << 30
    MIN_TICK = 0.002

    def __init__(self, proc: Any, policy: Policy, memory_limit: int) -> None:
        self.proc = proc
        self.cpu_time = policy.cpu_time
        # Opened once and kept: a guest that exhausts the monitor's fds (EMFILE) must not
        # blind the watch.
        self.statm: int | None = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        self.rss_limit = resident_bytes(self.statm) + memory_limit + self.SLACK
        self.tick = self.TICK
        self.warned_cpu = False

    def forked(self) -> LimitWatch:
        """The watch of a forked monitor: the same limits over its own CPU time (a child's
        starts at zero, as RLIMIT_CPU counts per process) and its own resident memory.
        The inherited statm names the parent's /proc/PID; the sandbox may not let this
        monitor open its own, and then its peak resident memory (getrusage) stands in."""
        import copy  # (not at start-up: only a forked monitor comes here)

        watch = copy.copy(self)
        if self.statm is not None:
            os.close(self.statm)
        try:
            watch.statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            watch.statm = None
        watch.warned_cpu = False
        watch.tick = self.TICK
        return watch

    def _resident(self) -> int:
        if self.statm is None:
            return getrusage(RUSAGE_SELF).ru_maxrss * 1024
        return resident_bytes(self.statm)

    def check(self) -> None:
        if self.cpu_time is not None:
            times = os.times()
            used = times.user + times.system
            if used >= self.cpu_time + 1:
                self._kill(9)
            elif used >= self.cpu_time and not self.warned_cpu:
                self.warned_cpu = True
                log.warning("policy: CPU time limit of %d s reached: SIGXCPU", self.cpu_time)
                self._kill(24)  # SIGXCPU
        rss = self._resident()
        self.tick = min(self.TICK, max(self.MIN_TICK, (self.rss_limit - rss) / self.TOUCH_RATE))
        if rss > self.rss_limit:
            log.warning("policy: out of memory: the monitor holds %d MiB, over the limit "
                        "(--memory plus its own): killing the guest", rss >> 20)
            self._kill(9)
            self.rss_limit = 1 << 62  # said once

    def _kill(self, sig: int) -> None:
        from karn.abi.signals import SI_KERNEL
        from karn.kernel.signals import SigInfo

        self.proc.signal_process(SigInfo.from_sender(sig, SI_KERNEL, 0))


def resident_bytes(statm: int | None = None) -> int:
    """The monitor process's resident memory (guest pages it touched, Python, tmpfs), from
    statm: an open /proc/self/statm, read again at offset 0."""
    if statm is None:
        with open("/proc/self/statm", "rb") as f:
            data = f.read()
    else:
        data = os.pread(statm, 128, 0)
    return int(data.split()[1]) * os.sysconf("SC_PAGE_SIZE")
