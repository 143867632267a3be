"""/proc/sys: the kernel settings programs read at start, as a Linux host's defaults (or
karn's own limits where karn sets one). Read-only, as in a container."""

from __future__ import annotations

import errno
from collections.abc import Callable

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING
from karn.kernel.limits import NR_OPEN, PIPE_MAX_SIZE, RLIMIT_NPROC
from karn.kernel.sys_identity import KERNEL_RELEASE, KERNEL_VERSION

if TYPE_CHECKING:
    from karn.kernel.process import Process

Value = Callable[["Process"], str]
if TYPE_CHECKING:  # a recursive alias: only the type checker reads it
    Tree = dict[str, "Tree | Value"]

_boot_id: list[str] = []  # one boot per monitor (one guest), made when first read


def _uuid4() -> str:
    import uuid  # here: the uuid module (and platform, which it imports) cost ~5 ms of start-up

    return str(uuid.uuid4())


def _read_boot_id(proc: Process) -> str:
    if not _boot_id:
        _boot_id.append(_uuid4())
    return _boot_id[0]


def _const(text: str) -> Value:
    return lambda proc: text


TREE: Tree = {
    "fs": {
        "pipe-max-size": _const(str(PIPE_MAX_SIZE)),
        "nr_open": _const(str(NR_OPEN)),
        "file-max": _const("9223372036854775807"),
        "file-nr": lambda proc: f"{len(proc.fds.fds())}\t0\t9223372036854775807",
        "inotify": {
            "max_user_instances": _const("128"),
            "max_user_watches": _const("8192"),
            "max_queued_events": _const("16384"),
        },
    },
    "kernel": {
        "hostname": lambda proc: proc.config.hostname,
        "domainname": _const("(none)"),
        "ostype": _const("Linux"),
        "osrelease": _const(KERNEL_RELEASE),
        "version": _const(KERNEL_VERSION),
        "pid_max": _const("4194304"),
        "threads-max": lambda proc: str(proc.rlimits[RLIMIT_NPROC][0]),
        "ngroups_max": _const("65536"),
        "cap_last_cap": _const("40"),
        "overflowuid": _const("65534"),
        "overflowgid": _const("65534"),
        "shmmax": _const("18446744073692774399"),
        "shmall": _const("18446744073692774399"),
        "shmmni": _const("4096"),
        "random": {
            "boot_id": _read_boot_id,
            "uuid": lambda proc: _uuid4(),
            "entropy_avail": _const("256"),
            "poolsize": _const("256"),
        },
    },
    "vm": {
        "overcommit_memory": _const("0"),
        "overcommit_ratio": _const("50"),
        "max_map_count": _const("65530"),
        "swappiness": _const("60"),
    },
    "net": {
        "core": {"somaxconn": _const("4096")},
        "ipv4": {"ip_local_port_range": _const("32768\t60999")},
    },
}


def lookup(rel: tuple[str, ...]) -> Tree | Value:
    """The directory or file at rel below /proc/sys (ENOENT, or ENOTDIR past a file)."""
    node: Tree | Value = TREE
    for name in rel:
        if not isinstance(node, dict):
            raise SyscallError(errno.ENOTDIR)
        child = node.get(name)
        if child is None:
            raise SyscallError(errno.ENOENT)
        node = child
    return node


def read(proc: Process, rel: tuple[str, ...]) -> bytes:
    value = lookup(rel)
    if isinstance(value, dict):
        raise SyscallError(errno.EISDIR)
    return (value(proc) + "\n").encode()
