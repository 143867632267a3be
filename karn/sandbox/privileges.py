"""What a privileged monitor (root, or any capabilities) gives up: capabilities, and the
host's network when the guest has none (Firecracker's jailer does the same with
namespaces and a uid)."""

from __future__ import annotations

import _socket
import ctypes
import fcntl
import os
import struct
import threading

from karn.errors import KarnError
from karn.hints import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from karn.kernel.net.policy import NetPolicy
    from karn.run.config import RunConfig

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
# Kept: what serving the guest's files in its volumes as root takes (owner, mode and
# permission checks of a root guest); Landlock still limits *where*.
CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID = 0, 1, 2, 3, 4
CAP_NET_BIND_SERVICE = 10
FILE_CAPS = (CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID)
CAP_NAMES = {CAP_CHOWN: "chown", CAP_DAC_OVERRIDE: "dac_override",
             CAP_DAC_READ_SEARCH: "dac_read_search", CAP_FOWNER: "fowner",
             CAP_FSETID: "fsetid", CAP_NET_BIND_SERVICE: "net_bind_service"}

_libc = ctypes.CDLL(None, use_errno=True)
_prepared: int | None = None  # a namespace made ahead (prepare_private_network)


CAP_SYS_ADMIN = 21


def effective_capabilities() -> int:
    """This thread's effective capability mask (0 for an ordinary user)."""
    with open("/proc/thread-self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def can_unshare(caps: int) -> bool:
    return bool(caps & (1 << CAP_SYS_ADMIN))


def capabilities_to_keep(caps: int, privileged_bind: bool) -> int:
    """The part of `caps` the monitor keeps (everything else is dropped)."""
    wanted = FILE_CAPS + ((CAP_NET_BIND_SERVICE,) if privileged_bind else ())
    return caps & sum(1 << c for c in wanted)


def describe_caps(mask: int) -> list[str]:
    return [name for cap, name in sorted(CAP_NAMES.items()) if mask & (1 << cap)]


def private_network() -> int:
    """An fd of a new network namespace with only a loopback (up), for the monitor's
    threads to join, so the guest's own loopback keeps working and nothing of the host's
    network is reachable: the one prepare_private_network() made, if it did."""
    global _prepared
    if _prepared is not None:
        fd, _prepared = _prepared, None
        return fd
    return _new_private_network()


def private_network_wanted(caps: int, policy: NetPolicy) -> bool:
    """A privileged monitor whose guest has no network gets none of the host's."""
    return can_unshare(caps) and policy.mode == "none" and not policy.publish


def ahead_of_time(config: RunConfig) -> Callable[[], None] | None:
    """What confinement (jail.py) will need that can be made before the guest is built,
    on a thread that is otherwise waiting (karn/run/vmstart.py): the private network
    namespace, unless it was made before the run was known (a `karn daemon`'s spare);
    one made so for a run with no use for it is closed. (Here, not in jail.py: the run
    starts that thread before it imports the rest of the sandbox.)"""
    global _prepared
    if config.sandbox:
        try:
            policy = config.net_policy()
        except KarnError:
            return None  # the build reports it, in its order
        caps = effective_capabilities()
        if caps and private_network_wanted(caps, policy):
            return None if _prepared is not None else prepare_private_network
    if _prepared is not None:
        os.close(_prepared)
        _prepared = None
    return None


def prepare_private_network_ahead() -> None:
    """For a run not known yet (karn daemon's spare): its private network namespace,
    made on a thread of its own (unshare moves the thread that calls it)."""
    if can_unshare(effective_capabilities()):
        maker = threading.Thread(target=prepare_private_network, name="karn-netns-ahead")
        maker.start()
        maker.join()


def prepare_private_network() -> None:
    """Make private_network()'s namespace ahead, on a thread of the run's set-up that has
    nothing else to do (karn/run/vmstart.py): unshare(CLONE_NEWNET) took 0.7 ms of CPU
    and, now and then, 5-8 ms of waiting in the kernel. A failure is left for
    private_network() to meet again, where it is reported."""
    global _prepared
    try:
        _prepared = _new_private_network()
    except OSError:
        _prepared = None


def _new_private_network() -> int:
    """Move this thread into a new network namespace, its loopback up; an fd of it."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
    # _socket, not socket: the socket module costs ~4 ms of start-up
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        ifreq = bytearray(struct.pack("16sH22x", b"lo", 0))
        fcntl.ioctl(s, SIOCGIFFLAGS, ifreq)
        flags = struct.unpack_from("H", ifreq, 16)[0] | IFF_UP
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags))
    finally:
        s.close()
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
