"""Named groups of syscalls: `--trace=FILTER` classes and policy allow-lists share them.

The classes follow strace's (`strace -e trace=%file`); `base` is what a C program needs
to start, print and exit under glibc or musl (the loader, TLS set-up, stdio, abort).
"""

from __future__ import annotations

from karn.abi.syscalls import SYSCALL_NUMBERS

CLASSES: dict[str, frozenset[str]] = {
    "file": frozenset(
        "open openat creat stat lstat newfstatat statx access faccessat faccessat2 chdir mkdir "
        "mkdirat rmdir unlink unlinkat rename renameat renameat2 link linkat symlink symlinkat "
        "readlink readlinkat chmod fchmodat chown fchownat lchown truncate statfs utimensat "
        "execve getcwd mknod mknodat".split()),
    "desc": frozenset(
        "read write pread64 pwrite64 readv writev preadv pwritev open openat creat close fstat "
        "lseek dup dup2 dup3 pipe pipe2 fcntl ioctl getdents64 fchdir fchmod fchown ftruncate "
        "fsync fdatasync fstatfs sendfile copy_file_range poll ppoll select pselect6 "
        "epoll_create1 epoll_ctl epoll_wait epoll_pwait eventfd2 mmap newfstatat".split()),
    "net": frozenset(
        "socket connect bind listen accept accept4 sendto recvfrom sendmsg recvmsg shutdown "
        "getsockname getpeername setsockopt getsockopt socketpair sendmmsg recvmmsg".split()),
    "memory": frozenset(
        "brk mmap munmap mprotect mremap madvise msync mlock munlock mincore".split()),
    "signal": frozenset(
        "rt_sigaction rt_sigprocmask rt_sigreturn rt_sigsuspend rt_sigpending rt_sigtimedwait "
        "rt_sigqueueinfo sigaltstack kill tkill tgkill alarm pause signalfd4".split()),
    "process": frozenset(
        "clone clone3 fork vfork execve exit exit_group wait4 kill tkill tgkill".split()),
    "time": frozenset(
        "clock_gettime clock_getres clock_nanosleep nanosleep gettimeofday time alarm "
        "setitimer getitimer timer_create timer_settime timer_gettime timer_delete".split()),
    "base": frozenset(
        "read write writev close fstat newfstatat openat pread64 lseek ioctl access faccessat "
        "readlink mmap munmap mprotect brk arch_prctl set_tid_address set_robust_list rseq "
        "prlimit64 getrandom futex rt_sigaction rt_sigprocmask rt_sigreturn getpid gettid "
        "tgkill uname exit exit_group".split()),
}
CLASSES["network"] = CLASSES["net"]
CLASSES["mem"] = CLASSES["memory"]


def expand(text: str) -> frozenset[str]:
    """Comma-separated syscall names and classes (strace's `%file` form too) -> names.
    ValueError names what is unknown."""
    names: set[str] = set()
    for word in text.split(","):
        word = word.strip().lstrip("%")
        if not word:
            continue
        if word in CLASSES:
            names |= CLASSES[word]
        elif word in SYSCALL_NUMBERS:
            names.add(word)
        else:
            classes = ", ".join(sorted(c for c in CLASSES if c not in ("network", "mem")))
            raise ValueError(f"unknown syscall or class {word!r} (classes: {classes})")
    return frozenset(names)
