"""The host system calls a confined monitor may still make: data, read by seccomp.py.

Grouped by why the monitor needs them. Calls with argument conditions are listed
separately; everything else is denied (EPERM), and KILL lists the calls that no monitor
code path makes at all, so reaching one means the monitor is no longer running karn's
code: the process is killed on the spot.
"""

from __future__ import annotations

import _socket as socket  # not socket.py: ~3 ms of start-up (enums, selectors)

UNCONDITIONAL: tuple[str, ...] = (
    # Python itself: memory, locks, threads' lifecycle, signals, time
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "futex",
    "set_robust_list",
    "rseq", "exit", "exit_group", "restart_syscall", "rt_sigaction", "rt_sigprocmask",
    "rt_sigreturn", "rt_sigtimedwait", "sigaltstack", "getpid", "gettid", "getuid", "geteuid",
    "getgid", "getegid", "getppid", "clock_gettime", "clock_getres", "clock_nanosleep",
    "nanosleep", "gettimeofday", "sched_yield", "sched_getaffinity", "getrandom", "times",
    "getrusage", "prlimit64", "getrlimit", "uname", "sysinfo",
    # the first monitor waits, as the run ends, until its forked monitors are gone (only
    # its own children: coordinator.end_run)
    "waitid",
    # files: guest files in the root and volumes, lazy imports, core dumps, AF_UNIX names
    # (where: Landlock decides; these only say how)
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
    "preadv2", "pwritev2", "lseek", "close", "close_range", "openat", "openat2", "open", "fstat",
    "newfstatat", "stat", "lstat", "statx", "statfs", "fstatfs", "getdents64", "readlink",
    "readlinkat", "access", "faccessat", "faccessat2", "getcwd", "dup", "dup2", "dup3",
    "fcntl", "pipe2", "mkdirat", "mkdir", "unlinkat", "unlink", "rmdir", "renameat",
    "renameat2", "rename", "linkat", "symlinkat", "mknodat", "chmod", "fchmod", "fchmodat",
    "fchown", "fchownat", "utimensat", "ftruncate", "truncate", "fsync", "fdatasync",
    "syncfs",  # the guest's sync and syncfs, of its volumes' host filesystems
    "fallocate", "flock", "fadvise64", "copy_file_range", "sendfile", "splice", "tee",
    "umask",
    "getxattr", "setxattr", "listxattr", "removexattr",  # volumes' xattrs, by /proc/self/fd
    # the shared tmpfs's xattrs and owners, by fd (a forked monitor has no /proc/self/fd)
    "fgetxattr", "fsetxattr", "flistxattr", "fremovexattr",
    # readiness and waiting: eventfds, epoll/poll/select, timerfds
    "eventfd2", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
    "poll", "ppoll", "select", "pselect6", "timerfd_create", "timerfd_settime",
    "timerfd_gettime",
    # sockets the guest's are served with (creation is conditional, below)
    "bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername",
    "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
    "setsockopt", "getsockopt",
)

# Allowed only with the arguments seccomp.py checks.
CONDITIONAL: tuple[str, ...] = ("clone", "socket", "socketpair", "ioctl", "kill", "tgkill",
                                 "prctl")
CLONE_VM = 0x00000100
CLONE_THREAD = 0x00010000
CLONE_NAMESPACES = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
PR_SET_CHILD_SUBREAPER = 36  # the first monitor adopts orphaned monitors (coordinator.py)
SOCKET_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)
SOCKET_TYPES = (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET)  # not raw/packet
SOCK_TYPE_MASK = 0xF
KVMIO = 0xAE  # every KVM ioctl has this type byte (bits 8..15 of the request)
# Terminal ioctls the guest's tty calls pass through (kernel/fs/sys_fd.py), FIONREAD for
# readiness; never TIOCSTI (typing into the host's terminal).
# The guest's ptys (kernel/fs/pty.py): a new one's number, unlocking, its slave.
# (Numbers, not the termios module's names: its import is ~0.3 ms of every start-up.)
IOCTLS = (0x5401, 0x5402, 0x5403, 0x5404,  # TCGETS, TCSETS, TCSETSW, TCSETSF
          0x5413, 0x5414, 0x541B, 0x5421,  # TIOCGWINSZ, TIOCSWINSZ, FIONREAD, FIONBIO
          0x80045430, 0x40045431, 0x5441)  # TIOCGPTN, TIOCSPTLCK, TIOCGPTPEER

# New processes, other programs, other processes' memory, the kernel's own state.
KILL: tuple[str, ...] = (
    "execve", "execveat", "fork", "vfork", "ptrace", "process_vm_readv", "process_vm_writev",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "init_module",
    "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot", "bpf",
    "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd", "open_by_handle_at",
    "iopl", "ioperm", "swapon", "swapoff", "acct", "settimeofday", "clock_settime",
    "adjtimex", "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
    "setgroups", "capset",
)
# clone3 passes its flags in memory, where seccomp cannot look: ENOSYS makes glibc fall
# back to clone, whose flags are checked.
ENOSYS: tuple[str, ...] = ("clone3",)
