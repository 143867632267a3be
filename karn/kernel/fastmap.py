"""Which system calls the fast transport's server may serve (docs/design/fast-syscalls.md,
section 5). Everything else leaves through the exit path, in the calling vCPU's thread.

Never here: calls that read or replace the caller's registers (clone, execve, exit,
rt_sigreturn, sigaltstack, arch_prctl), that must block in the caller's own thread or
change its signal mask around a wait (sigsuspend, ppoll, pselect6, epoll_pwait, sleeps,
wait4, accept, connect), that signal (the kill family: a core-dumping self-signal
snapshots the calling thread), and sched_yield (the caller's time slice).

futex is served by operation: the in-guest stub (platform/fastcall/entry.S) reads the word
of a FUTEX_WAIT(_BITSET) and sends a wait that would block straight to the exit path, so
the server never serves a wait up to its block only to have it redone (that made a
hand-over slower than the exit path: 1268 us against 721 us a round, when futex went to
the server whole); wakes, requeues and waits on a changed word (EAGAIN) are served fast.
"""

from __future__ import annotations

from karn.abi.fastcall import FUTEX
from karn.abi.syscalls import SYSCALL_NUMBERS

# Served at once, never waiting.
NONBLOCKING = frozenset(SYSCALL_NUMBERS[name] for name in """
    close stat fstat lstat newfstatat statx lseek access faccessat faccessat2
    mmap mprotect munmap mremap madvise brk rt_sigaction rt_sigprocmask ioctl pread64
    pwrite64 pipe pipe2 dup dup2 dup3 fcntl fsync fdatasync ftruncate getcwd mkdir mkdirat
    rmdir unlink unlinkat umask getdents64 statfs fstatfs uname
    getpid gettid getppid getuid getgid geteuid getegid getpgrp getpgid getsid getgroups
    gettimeofday time clock_gettime clock_getres getrlimit prlimit64 sysinfo times
    getrandom set_tid_address set_robust_list sched_getaffinity rseq
    eventfd2 epoll_create1 epoll_ctl getsockname getpeername setsockopt getsockopt
""".split())

# Served fast unless they would wait: then they are redone on the exit path (WouldBlock in
# kernel/blocking.py); each waits only through Waker.wait, and what a redo must not repeat
# is handed to it (WouldBlock.rest: a stream send's bytes sent, a host FIFO's end opened).
# An open waits only for a FIFO's other end: the exit path finishes such an open (the one
# opening the other end may need the server); an open or readlink of another process's
# /proc entry waits for that process's monitor to answer (up to seconds when it is busy).
MAY_BLOCK = frozenset(SYSCALL_NUMBERS[name] for name in """
    read readv write writev recvfrom recvmsg sendto sendmsg poll select epoll_wait open openat
    readlink readlinkat
""".split())

FAST = NONBLOCKING | MAY_BLOCK | {FUTEX}

FUTEX_WAIT, FUTEX_WAIT_BITSET = 0, 9
FUTEX_CMD_MASK = ~0x180  # FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME off


def may_wait(nr: int, a1: int) -> bool:
    """Call nr (a1: its second argument) may wait on the server thread, to be redone on
    the exit path: a futex wait the stub let through (its word changed in between) may."""
    return nr in MAY_BLOCK or (
        nr == FUTEX and (a1 & 0xFFFFFFFF & FUTEX_CMD_MASK) in (FUTEX_WAIT, FUTEX_WAIT_BITSET))


def fastmap(table: dict | None, observed: bool) -> list[int]:
    """The fast calls of a process whose syscall table is `table` (None: all of karn's):
    only those served by karn's own handlers (a policy's denials leave through the exit
    path: a denial that kills snapshots its caller), and with debug hooks observing the
    calls (observed) only those that never wait, and futex (whose waits the observed
    server redoes unserved, threads.py), so none reaches an observer twice."""
    from karn.kernel.syscalls import TABLE

    calls = NONBLOCKING | {FUTEX} if observed else FAST
    if table is None:
        return sorted(calls)
    return sorted(nr for nr in calls if nr in table and table[nr] is TABLE.get(nr))
