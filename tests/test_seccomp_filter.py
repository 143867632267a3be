"""The monitor's seccomp filter (karn/sandbox/seccomp.py, bpf.py) loaded into a real
process: what it allows, denies and kills, decided by the kernel."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

# Runs in a child: no_new_privs, the filter, then each attempt; prints the outcomes.
CHILD = r"""
import ctypes, errno, fcntl, json, os, socket, sys, termios, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as err:
        return errno.errorcode.get(err.errno, str(err.errno))

def raw_syscall(nr, *args):
    if libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)) < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))

def thread():
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()

def tty_inject():
    r, w = os.openpty()
    fcntl.ioctl(r, termios.TIOCSTI, b"x")

ATTEMPTS = {
    "getpid": os.getpid,
    "thread": thread,
    "tcp-socket": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close(),
    "tcp-socket-nonblock-cloexec": lambda: socket.socket(
        socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC).close(),
    "unix-socketpair": lambda: [s.close() for s in socket.socketpair()],
    "raw-socket": lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    "packet-socket": lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW),
    "inet-socketpair": lambda: raw_syscall(53, socket.AF_INET, socket.SOCK_STREAM, 0, 0),
    "fionread": lambda: fcntl.ioctl(os.pipe()[0], termios.FIONREAD, b"\0" * 4),
    "tiocsti": tty_inject,
    "kill-self": lambda: os.kill(os.getpid(), 0),
    "kill-parent": lambda: os.kill(os.getppid(), 0),
    "clone3": lambda: raw_syscall(435, 0, 0),
    "x32-getpid": lambda: raw_syscall(0x40000000 | 39),
    "unlisted-syslog": lambda: raw_syscall(103, 10, 0, 0),
    "glibc-fork": lambda: os.fork() or os._exit(0),
}
libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
if sys.argv[1] == "filtered":
    from karn.sandbox.seccomp import load_filter
    load_filter()
print(json.dumps({name: attempt(fn) for name, fn in ATTEMPTS.items()}), flush=True)
if sys.argv[2] == "fork":
    raw_syscall(57)  # fork(2) itself; glibc's fork() is a clone (allowed above)
elif sys.argv[2] == "setuid":
    os.setuid(0)
print("survived", flush=True)
"""


def run_child(mode: str, last: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, mode, last], capture_output=True,
                          text=True, timeout=120)


def test_filter_allows_what_the_monitor_needs_and_denies_the_rest() -> None:
    unfiltered = json.loads(run_child("plain", "none").stdout.splitlines()[0])
    child = run_child("filtered", "none")
    assert child.returncode == 0, child.stderr
    filtered = json.loads(child.stdout.splitlines()[0])
    allowed = ("getpid", "thread", "tcp-socket", "tcp-socket-nonblock-cloexec",
               "unix-socketpair", "fionread", "kill-self",
               "glibc-fork")  # a guest fork is a fork of its monitor (kernel/fork.py)
    for name in allowed:
        assert filtered[name] == "ok", (name, filtered[name])
    denied = ("raw-socket", "packet-socket", "inet-socketpair", "tiocsti",
              "kill-parent", "x32-getpid", "unlisted-syslog")
    for name in denied:
        assert filtered[name] == "EPERM", (name, filtered[name], unfiltered[name])
    # the filter made these fail: without it they succeed (root) or fail otherwise
    assert unfiltered["raw-socket"] == "ok" and unfiltered["kill-parent"] == "ok"
    assert unfiltered["tiocsti"] != "EPERM" or unfiltered["unlisted-syslog"] != "EPERM"
    assert filtered["clone3"] == "ENOSYS"  # glibc falls back to clone, whose flags are seen
    assert unfiltered["clone3"] != "ENOSYS"


def test_filter_kills_the_monitor_on_calls_it_never_makes() -> None:
    for last in ("fork", "setuid"):
        child = run_child("filtered", last)
        assert child.returncode == -signal.SIGSYS, (last, child.returncode, child.stderr)
        assert "survived" not in child.stdout
        plain = run_child("plain", last)
        assert plain.returncode == 0 and "survived" in plain.stdout


def run_bpf(prog: list[tuple[int, int, int, int]], nr: int, args: tuple[int, ...],
            arch: int) -> int:
    """The classic BPF subset bpf.py emits, run over one struct seccomp_data."""
    from karn.sandbox import bpf

    words = {bpf.OFFSET_NR: nr & 0xFFFFFFFF, bpf.OFFSET_ARCH: arch}
    for i, arg in enumerate(args):
        words[bpf.OFFSET_ARGS + 8 * i] = arg & 0xFFFFFFFF
        words[bpf.OFFSET_ARGS + 8 * i + 4] = arg >> 32
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        if code == bpf.LD_W_ABS:
            acc = words[k]
        elif code == bpf.ALU_AND_K:
            acc &= k
        elif code == bpf.JMP_JA:
            pc += k
        elif code in (bpf.JMP_JEQ_K, bpf.JMP_JGE_K):
            taken = acc == k if code == bpf.JMP_JEQ_K else acc >= k
            pc += jt if taken else jf
        elif code == bpf.RET_K:
            return k
        else:
            raise AssertionError(f"unexpected instruction {code:#x}")


def expected_action(rules: dict, nr: int, args: tuple[int, ...], default: int) -> int:
    for rule in rules.get(nr, []):
        if all(args[a.position] & a.mask == a.value for a in rule.conditions):
            return rule.action
    return default


def test_compiled_filter_gives_every_call_its_rules_action() -> None:
    """Every number up to well past the highest, with arguments that meet each of its
    rules' conditions and arguments that miss them, decides as the rules say."""
    import os

    from karn.sandbox import bpf, seccomp

    rules = seccomp.rules(os.getpid())
    prog = bpf.compile_filter(rules, seccomp.DENY)
    arg_sets = [(0,) * 6, ((1 << 64) - 1,) * 6]
    for number_rules in rules.values():
        for rule in number_rules:
            args = [0] * 6
            for cond in rule.conditions:
                args[cond.position] = cond.value
            arg_sets.append(tuple(args))
            arg_sets.append(tuple(a ^ (1 << 63) for a in args))  # high word differs
            arg_sets.append(tuple(a ^ 1 for a in args))  # low word differs
    for nr in range(max(rules) + 64):
        for args in arg_sets:
            got = run_bpf(prog, nr, args, bpf.AUDIT_ARCH_X86_64)
            assert got == expected_action(rules, nr, args, seccomp.DENY), (nr, args)
    assert run_bpf(prog, 39, (0,) * 6, 0x40000003) == bpf.RET_KILL_PROCESS  # i386
    assert run_bpf(prog, bpf.X32_BIT | 39, (0,) * 6, bpf.AUDIT_ARCH_X86_64) == seccomp.DENY
    assert run_bpf(prog, -1, (0,) * 6, bpf.AUDIT_ARCH_X86_64) == seccomp.DENY


def test_consecutive_numbers_with_the_same_rules_are_one_span() -> None:
    from karn.sandbox import bpf

    allow = bpf.RET_ALLOW
    rules = {n: [bpf.Rule(allow)] for n in (0, 1, 2, 5, 6)}
    rules[7] = [bpf.Rule(allow, (bpf.Arg(0, 3),))]
    spans = bpf._spans(rules)
    assert [(first, None if r is None else len(r)) for first, r in spans] == [
        (0, 1), (3, None), (5, 1), (7, 1), (8, None)]
    prog = bpf.compile_filter(rules, 0)
    for nr in range(10):
        for arg in (0, 3):
            args = (arg,) + (0,) * 5
            assert run_bpf(prog, nr, args, bpf.AUDIT_ARCH_X86_64) == expected_action(
                rules, nr, args, 0), (nr, arg)
