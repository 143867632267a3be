"""The monitor's seccomp filter: allowlist.py compiled to BPF by bpf.py and installed."""

from __future__ import annotations

import errno
import os

from karn import log
from karn.abi.syscalls import SYSCALL_NUMBERS
from karn.hints import TYPE_CHECKING
from karn.sandbox import allowlist as A
from karn.sandbox import bpf
from karn.sandbox.bpf import Arg, Rule

if TYPE_CHECKING:
    import signal
else:  # the C module: `signal` makes enums of its names at import, ~0.5 ms of start-up
    import _signal as signal

ALLOW = bpf.RET_ALLOW
DENY = bpf.errno_action(errno.EPERM)
KICK_SIGNAL = signal.SIGRTMIN + 2  # platform/vcpu.py's (not imported: it loads KVM)
_ahead: tuple[int, list[bpf.Insn]] | None = None  # (pid, program) compiled ahead


def allowed_names() -> list[str]:
    """The system calls the filter lets through, with or without argument conditions."""
    return sorted({*A.UNCONDITIONAL, *A.CONDITIONAL})


def rules(pid: int) -> dict[int, list[Rule]]:
    """allowlist.py as rules by syscall number; everything else is denied (EPERM)."""
    allow = [Rule(ALLOW)]  # one list for all: bpf's spans compare it once
    by_name: dict[str, list[Rule]] = dict.fromkeys(A.UNCONDITIONAL, allow)
    # threads, and copies of the monitor for guest fork (kernel/fork.py: same filter, same
    # Landlock domain); never new namespaces, never a process sharing memory
    by_name["clone"] = [
        Rule(ALLOW, (Arg(0, A.CLONE_THREAD, A.CLONE_THREAD | A.CLONE_NAMESPACES),)),
        Rule(ALLOW, (Arg(0, 0, A.CLONE_VM | A.CLONE_THREAD | A.CLONE_NAMESPACES),))]
    by_name["socket"] = [Rule(ALLOW, (Arg(0, family), Arg(1, kind, A.SOCK_TYPE_MASK)))
                         for family in A.SOCKET_FAMILIES for kind in A.SOCKET_TYPES]
    by_name["socketpair"] = [Rule(ALLOW, (Arg(0, A.SOCKET_FAMILIES[0]),))]
    by_name["ioctl"] = [Rule(ALLOW, (Arg(1, A.KVMIO << 8, 0xFF00),)),
                        *(Rule(ALLOW, (Arg(1, request),)) for request in A.IOCTLS)]
    # vCPU kicks: own threads; a forked monitor's pid differs from `pid`, so the kick
    # signal itself is allowed too (to another monitor's thread at worst a spurious EINTR)
    by_name["tgkill"] = [Rule(ALLOW, (Arg(0, pid),)), Rule(ALLOW, (Arg(2, KICK_SIGNAL),))]
    by_name["prctl"] = [Rule(ALLOW, (Arg(0, A.PR_SET_CHILD_SUBREAPER),))]
    by_name["kill"] = [Rule(ALLOW, (Arg(0, pid),))]
    for name in A.KILL:
        by_name[name] = [Rule(bpf.RET_KILL_PROCESS)]
    for name in A.ENOSYS:
        by_name[name] = [Rule(bpf.errno_action(errno.ENOSYS))]
    return {SYSCALL_NUMBERS[name]: r for name, r in by_name.items()}


def compile_ahead() -> None:
    """Compile this process's filter before its run is known (a `karn daemon`'s spare):
    the program depends only on the pid."""
    global _ahead
    _ahead = (os.getpid(), bpf.compile_filter(rules(os.getpid()), DENY))


def load_filter() -> int:
    """Install the filter on every thread (TSYNC); the number of calls it allows."""
    flags = bpf.FLAG_TSYNC  # every thread, those started before included
    # With --debug/--log-level debug, denials are also written to the kernel log (dmesg,
    # audit: "type=1326 ... syscall=N").
    if log.enabled("debug"):
        flags |= bpf.FLAG_LOG
    pid = os.getpid()
    ahead = _ahead[1] if _ahead is not None and _ahead[0] == pid else None
    bpf.install(ahead or bpf.compile_filter(rules(pid), DENY), flags)
    return len(allowed_names())
