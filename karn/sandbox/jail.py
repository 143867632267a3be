"""Confine a monitor whose set-up is done: what it may still touch, then lock it in."""

from __future__ import annotations

import fcntl
import os
import site
import stat
import sys
import time

import karn
from karn import log
from karn.errors import KarnError
from karn.hints import TYPE_CHECKING
from karn.instance.paths import instances_dir
from karn.kernel.tty import TERMINAL
from karn.sandbox import landlock as L
from karn.sandbox import privileges, seccomp
from karn.sandbox.probe import armed
from karn.sandbox.threads import ThreadRoutine

if TYPE_CHECKING:
    from karn.run.guest import Guest

_confined: Confinement | None = None


class Confinement:
    """What confine() did; `describe()` is what `karn inspect` shows. (A plain class:
    importing dataclasses costs ~12 ms of every start-up.)"""

    def __init__(self, syscalls: int, landlock_abi: int, landlock_rules: int, threads: int,
                 seconds: float, namespaces: list[str], capabilities: list[str] | None,
                 pinned: list[int]) -> None:
        self.syscalls = syscalls  # host system calls the monitor may still make
        self.landlock_abi = landlock_abi  # 0: not available, files not confined
        self.landlock_rules = landlock_rules
        self.threads = threads
        self.seconds = seconds  # how long confining took (start-up cost)
        self.namespaces = namespaces
        self.capabilities = capabilities  # kept; None: had none to drop
        self.pinned = pinned  # fds open for good (landlock)

    def describe(self) -> dict:
        return {
            "seccomp": f"{self.syscalls} host syscalls allowed; others fail with EPERM, "
                       "exec/ptrace/mount/module loading kill the monitor",
            "no_new_privs": True,
            "threads": self.threads,
            "took_ms": round(self.seconds * 1e3, 2),
            "landlock": (f"ABI {self.landlock_abi}, {self.landlock_rules} rules"
                         if self.landlock_abi else "not available: host files not confined"),
            "namespaces": self.namespaces or ["none"],
            "capabilities": ("none held" if self.capabilities is None
                             else "kept: " + (", ".join(self.capabilities) or "none")),
        }


def allowed_syscall_count() -> int | None:
    """Host system calls this (confined) monitor may still make; None if not confined."""
    return None if _confined is None else _confined.syscalls


class Jail:
    """The RunPlugin (karn/run/guest.py) that confines the monitor once the guest is set
    up, before it runs; `karn inspect` shows what it did (guest.sandbox)."""

    def attach(self, guest: Guest) -> None:
        guest.sandbox = confine(guest)

    def started(self) -> None:
        pass

    def finish(self, status: int, signal: int) -> None:
        pass  # confined for the rest of the process's life


def confine(guest: Guest) -> Confinement:
    """Confine this process for the rest of its life; KarnError if it cannot be."""
    global _confined
    probe = armed()
    start = time.perf_counter()
    try:
        result = _confine(guest, start)
    except (OSError, ImportError) as err:
        raise KarnError(f"cannot confine the monitor ({_reason(err)}); run with "
                        "--no-sandbox to go without") from None
    _confined = result
    log.debug("sandbox: %s", result.describe())
    if probe is not None:
        probe.fire()
    return result


def _reason(err: OSError | ImportError) -> str:
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return str(err)


# Extension modules imported after confinement whose shared libraries lie outside what
# the monitor may read then (Python's paths, not the system's library directories): loaded
# before. zlib: pyelftools imports it (a crash report's symbols, `karn inspect`), and its
# libz.so.1 is a system library.
LOADED_BEFORE = ("zlib",)


def _confine(guest: Guest, start: float) -> Confinement:
    for module in LOADED_BEFORE:
        __import__(module)
    policy = guest.net.policy
    abi = L.abi_version()
    ruleset = _ruleset(guest, abi, restrict_bind=policy.mode != "host") if abi else None
    if ruleset is None:
        log.warning("sandbox: Landlock is not available on this kernel: the monitor's "
                    "host file access is not confined (seccomp only)")
    namespaces: list[str] = []
    netns, keep = -1, None
    caps = privileges.effective_capabilities()
    if caps:
        if privileges.private_network_wanted(caps, policy):
            netns = privileges.private_network()
            namespaces.append("net")
            guest.net.private = True
        privileged_bind = policy.mode == "host" or any(
            p.host_port < 1024 for p in policy.publish)
        keep = privileges.capabilities_to_keep(caps, privileged_bind)
    try:
        threads = ThreadRoutine(-1 if ruleset is None else ruleset.fd, netns, keep)
        count = threads.apply_everywhere()
    finally:
        if ruleset is not None:
            ruleset.close()
        if netns >= 0:
            os.close(netns)
    allowed = seccomp.load_filter()
    return Confinement(
        syscalls=allowed, landlock_abi=abi, landlock_rules=ruleset.rules if ruleset else 0,
        threads=count, seconds=time.perf_counter() - start, namespaces=namespaces,
        capabilities=None if keep is None else privileges.describe_caps(keep),
        pinned=ruleset.pinned if ruleset else [])


def _ruleset(guest: Guest, abi: int, restrict_bind: bool) -> L.Ruleset:
    """Everything the monitor may still open, and how."""
    config = guest.config
    rules = L.Ruleset(abi, restrict_bind)
    # the guest's files
    if config.root is not None:
        rules.allow(config.root, L.READ | L.WRITE if config.root_writable else L.READ)
    rules.allow_all(guest.manifest.files.values(), L.READ_FILE)
    for vol in config.volumes:
        rules.allow(vol.host, L.READ if vol.readonly else L.READ | L.WRITE)
    _allow_stdio_files(rules)
    # The guest's /dev/ptmx opens the host's and its slave (karn/kernel/fs/pty.py), which
    # Landlock checks as /dev/pts/N: every host pty of the user. Only a run the user gave
    # a terminal (-t) may; without -t the guest's posix_openpt fails with EACCES.
    if TERMINAL.active:
        rules.allow("/dev/ptmx", L.READ_FILE | L.WRITE_FILE | L.IOCTL_DEV)
        rules.allow("/dev/pts", L.READ_FILE | L.WRITE_FILE | L.IOCTL_DEV)
    net = guest.net
    unix_dir = net.unix_dir()  # made now: guest AF_UNIX names live there
    rules.allow(unix_dir, L.READ | L.WRITE)
    rules.allow(os.path.dirname(unix_dir), L.REMOVE_DIR)  # removed at exit
    # the host directory the tmpfs mounts move to at the first fork (made now)
    shared_tmp = guest.fs.shared_tmp.path()
    rules.allow(shared_tmp, L.READ | L.WRITE)
    rules.allow(os.path.dirname(shared_tmp), L.REMOVE_DIR)  # removed at exit
    # Python's own modules and karn's, read-only, for imports made after confinement
    rules.allow_all(_python_paths(), L.READ)
    # /proc/cpuinfo (the guest's copy), /proc/self/{statm,fd/N} (inspect, reopening)
    rules.allow_pinned("/proc/cpuinfo", L.READ_FILE)
    rules.allow_pinned(f"/proc/{os.getpid()}", L.READ)
    # debugging and the instance record
    debug = config.debug
    if debug is not None and debug.core_dir is not None:
        rules.allow(debug.core_dir, L.MAKE_REG | L.WRITE_FILE | L.TRUNCATE)
    # A foreground run registers for `karn ps` after 50 ms, confined by then: its own
    # directory (record, control socket) is made, written and removed in the state dir.
    instances = instances_dir()
    try:
        os.makedirs(instances, exist_ok=True)
    except OSError:
        pass  # no usable state directory: the run goes unlisted (karn/instance/monitor.py)
    rules.allow(instances, L.READ_DIR | L.MAKE_DIR | L.MAKE_REG | L.MAKE_SOCK | L.WRITE_FILE
                | L.TRUNCATE | L.REMOVE_FILE | L.REMOVE_DIR)
    # TCP binds: ephemeral ports (the guest's loopback) and the published ports
    rules.allow_bind(0)
    for pub in net.policy.publish:
        rules.allow_bind(pub.host_port)
    return rules


def _allow_stdio_files(rules: L.Ruleset) -> None:
    """The guest opens /dev/stdout as /proc/self/fd/1, which reopens karn's own fd: where
    that is a regular file (`karn run ... 2>err.log`), the file itself, with the access
    the fd has. (Pipes and terminals are duplicated, not reopened.)"""
    for fd in (0, 1, 2):
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            mode = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        except OSError:
            continue  # closed
        access = {os.O_RDONLY: L.READ_FILE, os.O_WRONLY: L.WRITE_FILE}.get(
            mode, L.READ_FILE | L.WRITE_FILE)
        rules.allow(f"/proc/self/fd/{fd}", access)  # O_PATH through the link: the file


def _python_paths() -> set[str]:
    """The import path inside Python's installation (and the user's site-packages), and
    karn's package; not sys.path[0], which `python -m` sets to the working directory."""
    homes = (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             site.getusersitepackages())
    inside = {p for p in sys.path if p and p.startswith(homes) and os.path.isdir(p)}
    return inside | set(site.getsitepackages()) | {os.path.dirname(karn.__file__)}
