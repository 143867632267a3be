"""Resource limits (getrlimit/setrlimit/prlimit64) with Linux's defaults for a process."""

from __future__ import annotations

import resource
import threading

from karn.hints import Any

RLIM_INFINITY = (1 << 64) - 1

RLIMIT_CPU = 0
RLIMIT_FSIZE = 1
RLIMIT_DATA = 2
RLIMIT_STACK = 3
RLIMIT_CORE = 4
RLIMIT_RSS = 5
RLIMIT_NPROC = 6
RLIMIT_NOFILE = 7
RLIMIT_MEMLOCK = 8
RLIMIT_AS = 9
RLIMIT_LOCKS = 10
RLIMIT_SIGPENDING = 11
RLIMIT_MSGQUEUE = 12
RLIMIT_NICE = 13
RLIMIT_RTPRIO = 14
RLIMIT_RTTIME = 15
RLIM_NLIMITS = 16

DEFAULT_NOFILE = 1024
NR_OPEN = 1 << 20  # Linux fs.nr_open default: the most fds RLIMIT_NOFILE can give
# Each guest fd is a host fd of the monitor, whose kernel memory --memory does not see:
# without --ulimit nofile, the hard limit is the host's but at most this many.
MAX_DEFAULT_NOFILE_HARD = 1 << 16
STACK_SIZE = 8 << 20


def host_nofile_hard() -> int:
    """The host's RLIMIT_NOFILE hard limit, at most MAX_DEFAULT_NOFILE_HARD: the guest's
    default hard limit and karn's nr_open, as the fds the guest opens are the monitor's."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    cap = min(NR_OPEN, MAX_DEFAULT_NOFILE_HARD)
    return cap if hard == resource.RLIM_INFINITY else min(hard, cap)


def raise_monitor_nofile() -> None:
    """Let the monitor hold as many host fds as the guest may ask for (its soft limit up
    to its hard one), as Go and systemd services do for themselves."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def default_rlimits(memory_limit: int) -> list[tuple[int, int]]:
    limits = [(RLIM_INFINITY, RLIM_INFINITY)] * RLIM_NLIMITS
    limits[RLIMIT_STACK] = (STACK_SIZE, RLIM_INFINITY)
    limits[RLIMIT_CORE] = (0, RLIM_INFINITY)
    limits[RLIMIT_NOFILE] = (DEFAULT_NOFILE, max(host_nofile_hard(), DEFAULT_NOFILE))
    limits[RLIMIT_MEMLOCK] = (8 << 20, 8 << 20)
    limits[RLIMIT_AS] = (memory_limit, memory_limit)
    limits[RLIMIT_NPROC] = (4096, 4096)
    limits[RLIMIT_SIGPENDING] = (4096, 4096)
    limits[RLIMIT_MSGQUEUE] = (819200, 819200)
    limits[RLIMIT_NICE] = (0, 0)
    limits[RLIMIT_RTPRIO] = (0, 0)
    return limits


# -- kernel buffers the guest's sockets and pipes pin on the host ----------------------
SOCK_BUF_MAX = 212992  # Linux's default net.core.wmem_max/rmem_max: SO_SNDBUF/SO_RCVBUF cap
SOCK_MIN_SNDBUF = 4608  # Linux's floors (the kernel keeps at least these)
SOCK_MIN_RCVBUF = 2304
PIPE_MAX_SIZE = 1 << 20  # fs.pipe-max-size: F_SETPIPE_SZ beyond it is EPERM unprivileged
PIPE_DEF_SIZE = 16 * 4096
PIPE_MIN_SIZE = 2 * 4096  # what a pipe gets past the budget (Linux: pipe-user-pages-soft)
BUFFER_SHARE = 4  # the guest's sockets and pipes may hold a quarter of --memory


class BufferBudget:
    """The buffer capacity of the guest's sockets and pipes, charged to --memory: data
    queued there is host kernel memory the guest's own limit does not otherwise see.
    A socket or pipe is charged what its buffers may hold while it exists; past the
    budget new ones get Linux's minimal buffers (bounded by RLIMIT_NOFILE), and a guest's
    request for more is clamped (SO_SNDBUF, SO_RCVBUF) or refused (F_SETPIPE_SZ: EPERM)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self.lock = threading.Lock()


class Charge:
    """What one socket or pipe holds of the budget, per buffer; given back when its last
    user (a pipe has two ends) closes."""

    def __init__(self, budget: BufferBudget, users: int = 1) -> None:
        self.budget = budget
        self.held: dict[int, int] = {}
        self.users = users

    def resize(self, key: int, want: int, floor: int, exact: bool = False) -> int | None:
        """Charge buffer key want bytes instead of what it held: up to what the budget
        has left, at least floor; None (nothing changed) if exact and it does not fit."""
        budget = self.budget
        with budget.lock:
            old = self.held.get(key, 0)
            room = budget.total - budget.used + old
            if exact and want > max(room, old):
                return None
            n = max(floor, min(want, room))
            budget.used += n - old
            self.held[key] = n
            return n

    def settle(self, key: int, actual: int) -> None:
        """The host's value for buffer key, which its own rounding made."""
        with self.budget.lock:
            self.budget.used += actual - self.held.get(key, 0)
            self.held[key] = actual

    def drop(self) -> None:
        with self.budget.lock:
            self.users -= 1
            if self.users == 0:
                self.budget.used -= sum(self.held.values())
                self.held.clear()


_budget_lock = threading.Lock()


def buffer_budget(process: Any) -> BufferBudget:
    """The process's budget (made on first use, from its memory limit)."""
    budget = getattr(process, "buffers", None)
    if budget is None:
        with _budget_lock:
            budget = getattr(process, "buffers", None)
            if budget is None:
                budget = BufferBudget(process.config.memory_limit // BUFFER_SHARE)
                process.buffers = budget
    return budget
