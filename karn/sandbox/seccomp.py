"""The seccomp-bpf filter: allowlist.py compiled with libseccomp (the pyseccomp bindings)."""

from __future__ import annotations

import errno
import os
from types import ModuleType

from karn import log
from karn.sandbox import allowlist as A


def allowed_names() -> list[str]:
    """The system calls the filter lets through, with or without argument conditions."""
    return sorted({*A.UNCONDITIONAL, *A.CONDITIONAL})


# The libraries pyseccomp loads, by their ABI sonames: it would look them up with
# ctypes.util.find_library, which runs ldconfig twice (~10 ms, more on a busy host).
SONAMES = {"c": "libc.so.6", "seccomp": "libseccomp.so.2"}


def import_bindings() -> ModuleType:
    """pyseccomp; OSError when libseccomp.so.2 is not installed (Debian: libseccomp2)."""
    import ctypes.util

    find = ctypes.util.find_library
    ctypes.util.find_library = lambda name: SONAMES.get(name) or find(name)
    try:
        import pyseccomp
    finally:
        ctypes.util.find_library = find
    return pyseccomp


def load_filter() -> int:
    """Install the filter on every thread (TSYNC); the number of calls it allows."""
    sc = import_bindings()

    pid = os.getpid()
    f = sc.SyscallFilter(sc.ERRNO(errno.EPERM))
    f.set_attr(sc.Attr.CTL_TSYNC, 1)  # every thread, those started before included
    # With --debug/--log-level debug, denials are also written to the kernel log (dmesg,
    # audit: "type=1326 ... syscall=N"); not always: clone3's ENOSYS comes once a thread.
    f.set_attr(sc.Attr.CTL_LOG, int(log.enabled("debug")))
    for name in A.UNCONDITIONAL:
        f.add_rule(sc.ALLOW, name)
    f.add_rule(sc.ALLOW, "clone",  # threads only: no fork, no new namespaces
               sc.Arg(0, sc.MASKED_EQ, A.CLONE_THREAD | A.CLONE_NAMESPACES, A.CLONE_THREAD))
    for family in A.SOCKET_FAMILIES:
        for kind in A.SOCKET_TYPES:
            f.add_rule(sc.ALLOW, "socket", sc.Arg(0, sc.EQ, family),
                       sc.Arg(1, sc.MASKED_EQ, A.SOCK_TYPE_MASK, kind))
    f.add_rule(sc.ALLOW, "socketpair", sc.Arg(0, sc.EQ, A.SOCKET_FAMILIES[0]))
    f.add_rule(sc.ALLOW, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFF00, A.KVMIO << 8))
    for request in A.IOCTLS:
        f.add_rule(sc.ALLOW, "ioctl", sc.Arg(1, sc.EQ, request))
    f.add_rule(sc.ALLOW, "tgkill", sc.Arg(0, sc.EQ, pid))  # own threads only (vCPU kicks)
    f.add_rule(sc.ALLOW, "kill", sc.Arg(0, sc.EQ, pid))
    for name in A.KILL:
        f.add_rule(sc.KILL_PROCESS, name)
    for name in A.ENOSYS:
        f.add_rule(sc.ERRNO(errno.ENOSYS), name)
    f.load()
    return len(allowed_names())
