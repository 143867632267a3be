"""Probe for issue 15: what karn's seccomp filter (karn/sandbox/seccomp.py) means for a
forked monitor. (1) Its clone rule (CLONE_THREAD required) refuses CPython's os.fork().
(2) Its tgkill/kill rules are pinned to the pid at filter time; a filter is inherited by a
forked child, whose pid differs: can the child still kick its own threads?

Run as root:  PYTHONPATH=$PWD python3 docs/design/processes-probes/seccomp_fork.py
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading

from karn.sandbox.seccomp import import_bindings

SYS_TGKILL = 234
CLONE_THREAD = 0x10000


def tgkill_self() -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.syscall(SYS_TGKILL, os.getpid(), threading.get_native_id(), 0)
    return "ok" if rc == 0 else errno.errorcode[ctypes.get_errno()]


def in_child(body) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            body()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def clone_rule() -> None:
    sc = import_bindings()
    f = sc.SyscallFilter(sc.ALLOW)
    f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    f.load()
    try:
        pid = os.fork()
    except OSError as err:
        print("os.fork() under karn's clone rule:", errno.errorcode[err.errno], flush=True)
        return
    if pid == 0:
        os._exit(0)
    print("os.fork() under karn's clone rule: allowed (!)", flush=True)


def pinned_pid() -> None:
    sc = import_bindings()
    f = sc.SyscallFilter(sc.ALLOW)
    f.add_rule(sc.ERRNO(errno.EPERM), "tgkill", sc.Arg(0, sc.NE, os.getpid()))
    f.load()
    print("monitor tgkill(own pid, own tid, 0):", tgkill_self(), flush=True)
    pid = os.fork()
    if pid == 0:
        print("forked  tgkill(own pid, own tid, 0):", tgkill_self(), flush=True)
        os._exit(0)
    os.waitpid(pid, 0)


if __name__ == "__main__":
    in_child(clone_rule)
    in_child(pinned_pid)
