"""Which system calls the fast transport's server may serve (docs/design/fast-syscalls.md,
section 5). Everything else leaves through the exit path, in the calling vCPU's thread.

Never here: calls that read or replace the caller's registers (clone, execve, exit,
rt_sigreturn, sigaltstack, arch_prctl), that must block in the caller's own thread or
change its signal mask around a wait (sigsuspend, ppoll, pselect6, epoll_pwait, sleeps,
wait4, accept, connect, open of a FIFO: the one opening its other end may need the
server), that signal (the kill family: a core-dumping self-signal snapshots the calling
thread), sched_yield (the caller's time slice), and futex: measured, a futex hand-over
got slower through the server (most FUTEX_WAITs block, and each was served up to its
wait, then redone on the exit path: 1268 us against 721 us a round); serving FUTEX_WAKE
alone needs the stub to look at the operation, not only the number.
"""

from __future__ import annotations

from karn.abi.syscalls import SYSCALL_NUMBERS

# Served at once, never waiting.
NONBLOCKING = frozenset(SYSCALL_NUMBERS[name] for name in """
    close stat fstat lstat newfstatat statx lseek access faccessat faccessat2
    mmap mprotect munmap mremap madvise brk rt_sigaction rt_sigprocmask ioctl pread64
    pwrite64 pipe pipe2 dup dup2 dup3 fcntl fsync fdatasync ftruncate getcwd mkdir mkdirat
    rmdir unlink unlinkat readlink readlinkat umask getdents64 statfs fstatfs uname
    getpid gettid getppid getuid getgid geteuid getegid getpgrp getpgid getsid getgroups
    gettimeofday time clock_gettime clock_getres getrlimit prlimit64 sysinfo times
    getrandom set_tid_address set_robust_list sched_getaffinity rseq
    eventfd2 epoll_create1 epoll_ctl getsockname getpeername setsockopt getsockopt
""".split())

# Served fast unless they would wait: then they are redone on the exit path (WouldBlock in
# kernel/blocking.py); each waits only through Waker.wait, with nothing done before it
# that a redo would repeat.
MAY_BLOCK = frozenset(SYSCALL_NUMBERS[name] for name in """
    read readv write writev recvfrom recvmsg sendto sendmsg poll select epoll_wait
""".split())

FAST = NONBLOCKING | MAY_BLOCK


def fastmap(table: dict | None, observed: bool) -> list[int]:
    """The fast calls of a process whose syscall table is `table` (None: all of karn's):
    only those served by karn's own handlers (a policy's denials leave through the exit
    path: a denial that kills snapshots its caller), and with debug hooks observing the
    calls (observed) only those that never wait, so none reaches an observer twice."""
    from karn.kernel.syscalls import TABLE

    calls = NONBLOCKING if observed else FAST
    if table is None:
        return sorted(calls)
    return sorted(nr for nr in calls if nr in table and table[nr] is TABLE.get(nr))
