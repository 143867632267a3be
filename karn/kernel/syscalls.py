"""The one syscall table: number -> name, handler, and an explicit support status.

Handlers live in area modules (sys_mm, fs.sys_io, ...), each exporting HANDLERS
{name: handler} and optionally NOTES {name: "what is partial"}. The table itself is data,
AREA_CALLS (which area serves which call): an area's module, with all it imports, loads
on the first call it serves, so a run pays only for the areas its guest uses. Every
entry's status is one of three kinds: Supported; Partial(note), served with a stated
limitation (the area's NOTES); Error(code, reason), refused on purpose with a fixed errno
(ERRORS below, the one place those are declared; a refused call no area serves gets a
silent refusal handler). Any other number is -ENOSYS by construction and logged once by
name. docs/syscalls.md is generated from this table and tests/test_syscall_status.py
calls every Error row from a real guest to check that it returns what the table says.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from types import ModuleType

from karn import log
from karn.abi.errno import SyscallError
from karn.abi.signals import SIGSYS
from karn.abi.syscalls import SYSCALL_NAMES, SYSCALL_NUMBERS
from karn.kernel import fdspare
from karn.kernel.process import ProcessExit, ThreadExit

# Each area module of karn.kernel and the calls its HANDLERS serve, in the table's order
# (load_areas holds the modules to this list).
AREA_CALLS: dict[str, str] = {
    # the file calls, by module of karn.kernel.fs: a write loads sys_io alone
    "fs.sys_io": (
        "read write pread64 pwrite64 readv writev preadv pwritev preadv2 pwritev2 lseek sendfile "
        "fsync fdatasync sync syncfs ftruncate getdents64 getdents"),
    "fs.sys_open": (
        "openat open creat fstat newfstatat stat lstat statx readlinkat readlink faccessat2 "
        "faccessat access getcwd chdir fchdir"),
    "fs.sys_names": (
        "mkdirat mkdir mknodat mknod rmdir unlinkat unlink renameat2 renameat rename linkat link "
        "symlinkat symlink fchmodat chmod fchmod utimensat truncate statfs fstatfs umask"),
    "fs.sys_fd": "close dup dup2 dup3 fcntl pipe pipe2 ioctl close_range flock fadvise64",
    "fs.sys_xattr": (
        "getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr setxattr lsetxattr "
        "fsetxattr removexattr lremovexattr fremovexattr fchownat chown lchown fchown"),
    "fs.memfd": "memfd_create",
    "fs.sys_splice": "splice tee vmsplice copy_file_range fallocate",
    "sys_mm": ("brk mmap munmap mprotect mremap madvise msync mlock munlock pkey_mprotect "
               "pkey_alloc pkey_free"),
    "sys_identity": (
        "getpid gettid getppid getuid geteuid getgid getegid getresuid getresgid getgroups setuid "
        "setgid setresuid setresgid setreuid setregid getpgrp getpgid getsid setsid setpgid uname "
        "sethostname setgroups capget capset"),
    "sys_time": (
        "clock_gettime clock_getres clock_settime getrusage gettimeofday time nanosleep "
        "clock_nanosleep times"),
    "sys_misc": (
        "exit_group ptrace arch_prctl set_tid_address set_robust_list get_robust_list getrandom "
        "prlimit64 getrlimit setrlimit sysinfo sched_yield getcpu getpriority "
        "setpriority prctl"),
    "sys_signal": (
        "rt_sigaction rt_sigprocmask rt_sigpending rt_sigsuspend rt_sigtimedwait rt_sigqueueinfo "
        "rt_sigreturn sigaltstack pause kill tgkill tkill"),
    "sys_thread": (
        "sched_rr_get_interval clone clone3 fork vfork exit futex sched_getscheduler "
        "sched_setscheduler sched_getparam sched_setparam sched_get_priority_max "
        "sched_get_priority_min sched_setaffinity sched_getaffinity membarrier"),
    "sys_poll": (
        "poll ppoll select pselect6 epoll_create epoll_create1 epoll_ctl epoll_wait epoll_pwait "
        "epoll_pwait2 eventfd eventfd2"),
    "sys_timer": (
        "alarm getitimer setitimer timer_create timer_settime timer_gettime timer_getoverrun "
        "timer_delete"),
    "sys_net": (
        "socket socketpair bind listen accept accept4 connect getsockname getpeername shutdown "
        "setsockopt getsockopt sendto recvfrom sendmsg recvmsg sendmmsg recvmmsg"),
    "sys_timerfd": "timerfd_create timerfd_settime timerfd_gettime",
    "exec": "execve execveat",
    "sys_wait": "wait4 waitid",
    "sys_pidfd": "pidfd_open pidfd_send_signal",
}

Handler = Callable[..., int]


# The statuses are plain classes, not NamedTuples (each of those costs ~40 µs more to
# create at import, on every run): told apart by type, taken apart by `match`.
class Supported:
    """Served as Linux serves it."""

    __slots__ = ()
    __match_args__ = ()

    def __repr__(self) -> str:
        return "Supported()"


class Partial:
    """Served, with a limitation the note states."""

    __slots__ = ("note",)
    __match_args__ = ("note",)

    def __init__(self, note: str) -> None:
        self.note = note

    def __repr__(self) -> str:
        return f"Partial({self.note!r})"


class Error:
    """Refused on purpose: every well-formed call fails with `code` (an errno)."""

    __slots__ = ("code", "reason")
    __match_args__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason

    def __repr__(self) -> str:
        return f"Error({self.code}, {self.reason!r})"


Status = Supported | Partial | Error


class Denied:
    """Not in a policy's allow-list: only in restricted_table's tables, never in TABLE."""

    __slots__ = ("kill",)
    __match_args__ = ("kill",)

    def __init__(self, kill: bool) -> None:
        self.kill = kill


# The calls refused with a fixed errno. Those an area serves raise it themselves (the
# real-guest test holds them to it); the others are refused here, without a log line.
ERRORS: dict[str, Error] = {
    "rseq": Error(errno.ENOSYS, "as a kernel built without rseq; glibc falls back"),
    "ptrace": Error(errno.EPERM, "nothing in the guest may be traced (as without CAP_SYS_PTRACE)"),
}


class Syscall:
    """One row. A served call's handler, arity (raw arguments it takes) and status come
    from its area's module, loaded on the row's first use (load); a refusal or a policy's
    denial has them from the start."""

    __slots__ = ("number", "name", "area", "_handler", "_arity", "_status")

    def __init__(self, number: int, name: str, area: str, handler: Handler | None = None,
                 arity: int = 0, status: Status | Denied | None = None) -> None:
        self.number = number
        self.name = name
        self.area = area
        self._arity = arity
        self._status = status
        self._handler = handler  # None: not loaded yet

    @property
    def handler(self) -> Handler:
        return self._handler or self.load()

    @property
    def arity(self) -> int:
        if self._handler is None:
            self.load()
        return self._arity

    @property
    def status(self) -> Status | Denied:
        if self._handler is None:
            self.load()
        assert self._status is not None
        return self._status

    def load(self) -> Handler:
        """The handler from the area's module, imported now if it is not yet. Without a
        lock, as threads (vCPUs, the fast transport's server) may make the same first
        call: each finds the same handler (the import system serialises the import), and
        the handler is stored last, so a thread that sees it also sees its arity."""
        module = area_module(self.area)
        handler = module.HANDLERS.get(self.name)
        if handler is None:
            raise RuntimeError(f"{self.area} does not serve {self.name} (AREA_CALLS)")
        self._status = _status(self.name, getattr(module, "NOTES", {}))
        self._arity = handler.__code__.co_argcount - 1  # minus the task
        self._handler = handler
        return handler


# Held while an area is imported, and by a fork (kernel/forklocks.py): a thread halfway
# through an import at the fork would leave the child waiting forever for that module's
# lock. Renewed in the child.
import_lock = threading.RLock()


def area_module(area: str) -> ModuleType:
    """The area's module, imported now if it is not yet (through the spare fd if the
    guest holds every other: kernel/fdspare.py)."""
    with import_lock:
        return fdspare.import_module(f"karn.kernel.{area}")


def _status(name: str, notes: dict[str, str]) -> Status:
    if name in ERRORS:
        if name in notes:
            raise RuntimeError(f"syscall {name} is both refused (ERRORS) and partial (NOTES)")
        return ERRORS[name]
    return Partial(notes[name]) if name in notes else Supported()


def _refusal(code: int) -> Handler:
    def refuse(task, *args: int) -> int:  # noqa: ANN001 - a Task
        raise SyscallError(code)

    return refuse


def _build_table() -> dict[int, Syscall]:
    table: dict[int, Syscall] = {}
    for area, calls in AREA_CALLS.items():
        for name in calls.split():
            number = SYSCALL_NUMBERS[name]
            if number in table:
                raise RuntimeError(f"syscall {name} registered twice")
            table[number] = Syscall(number, name, area)
    for name, status in ERRORS.items():
        number = SYSCALL_NUMBERS[name]
        if number not in table:
            # All six arguments, so that --trace shows them as for any call karn does not serve
            table[number] = Syscall(number, name, "", _refusal(status.code), 6, status)
    return table


TABLE: dict[int, Syscall] = _build_table()


def load_areas() -> list[ModuleType]:
    """Every area's module, each held to AREA_CALLS, and every row loaded (for what reads
    all of the table: the docs, the tests)."""
    modules = []
    for area, calls in AREA_CALLS.items():
        module = area_module(area)
        listed, served = set(calls.split()), set(module.HANDLERS)
        if listed != served:
            raise RuntimeError(f"AREA_CALLS[{area!r}] lacks {sorted(served - listed)} and "
                               f"lists {sorted(listed - served)} it does not serve")
        if stray := set(getattr(module, "NOTES", {})) - set(module.HANDLERS):
            raise RuntimeError(f"notes for syscalls {area} does not serve: {stray}")
        modules.append(module)
    for entry in TABLE.values():
        if entry._handler is None:
            entry.load()
    return modules


_warned: set[int] = set()


def unimplemented(number: int) -> int:
    name = SYSCALL_NAMES.get(number)
    # Numbers outside the table share one key: a guest must not flood the log or grow the set.
    key = number if name is not None else -1
    if key not in _warned:
        _warned.add(key)
        later = "" if name else " (later unknown numbers are not logged)"
        log.warning(
            "unimplemented syscall %s (%d): returning -ENOSYS%s", name or "?", number, later
        )
    return -errno.ENOSYS


def dispatch(
    task: object, number: int, args: tuple[int, ...], table: dict[int, Syscall] = TABLE
) -> int:
    """serve() with the arguments as a tuple (missing ones are 0)."""
    a = (*args, 0, 0, 0, 0, 0, 0)
    return serve(task, number, a[0], a[1], a[2], a[3], a[4], a[5], table)


def serve(task: object, number: int, a0: int, a1: int, a2: int, a3: int, a4: int, a5: int,
          table: dict[int, Syscall] = TABLE) -> int:
    """Serve one syscall; returns the raw result (negative errno on failure). `table` is
    the process's own when a policy restricts it (restricted_table). Every syscall's path:
    the row's slots, not its loading properties, and the handler called with its arity
    spelled out (a call with *args[:arity] costs ~3x as much)."""
    entry = table.get(number)
    if entry is None:
        return unimplemented(number)
    try:
        handler = entry._handler or entry.load()
        arity = entry._arity
        if arity == 0:
            return handler(task)
        if arity == 1:
            return handler(task, a0)
        if arity == 2:
            return handler(task, a0, a1)
        if arity == 3:
            return handler(task, a0, a1, a2)
        if arity == 4:
            return handler(task, a0, a1, a2, a3)
        if arity == 5:
            return handler(task, a0, a1, a2, a3, a4)
        return handler(task, a0, a1, a2, a3, a4, a5)
    except SyscallError as err:
        return -err.errno
    except (OverflowError, ValueError, UnicodeError) as err:
        # Guest values that do not fit a host call: the guest gets EINVAL, we keep running.
        log.debug("%s: guest argument rejected: %s", entry.name, err)
        return -errno.EINVAL
    except (ProcessExit, ThreadExit):
        raise
    except Exception as err:  # a monitor bug: keep the guest running, make it visible
        _internal_error(entry.name, err)
        return -errno.EINVAL


def finish(rest: Callable[[], int]) -> int:
    """The rest of a call the fast transport's server began but could not finish without
    waiting (blocking.WouldBlock.rest), run on the exit path: its result as serve's."""
    try:
        return rest()
    except SyscallError as err:
        return -err.errno


_reported: set[str] = set()


def _internal_error(name: str, err: Exception) -> None:
    if name not in _reported:
        _reported.add(name)
        log.error(
            "internal error serving %s (%s: %s); returning -EINVAL. Please report "
            "this with `karn --debug run ...` output.",
            name,
            type(err).__name__,
            err,
        )
    if log.enabled("debug"):
        import traceback

        log.debug("%s", "".join(traceback.format_exception(err)))


def restricted_table(allowed: frozenset[str], kill: bool) -> dict[int, Syscall]:
    """The table under a syscall allow-list: every other known call is denied, failing
    with EPERM (logged once by name) or killing the guest with SIGSYS, as seccomp would."""
    table = {nr: e for nr, e in TABLE.items() if e.name in allowed}
    for number, name in SYSCALL_NAMES.items():
        if name not in allowed:
            table[number] = Syscall(number, name, "policy", _denial(name, kill), 0, Denied(kill))
    return table


def _denial(name: str, kill: bool) -> Handler:
    warned = False

    def denied(task) -> int:  # noqa: ANN001 - a Task
        nonlocal warned
        if not warned:
            warned = True
            action = "killing the guest (SIGSYS)" if kill else "returning -EPERM"
            log.warning("policy: syscall %s is not in the allow-list; %s", name, action)
        if kill:
            task.process.terminate_by_signal(SIGSYS, core=False)
            raise ThreadExit
        raise SyscallError(errno.EPERM)

    return denied
