"""Resource limits (getrlimit/setrlimit/prlimit64) with Linux's defaults for a process."""

from __future__ import annotations

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
STACK_SIZE = 8 << 20


def default_rlimits(memory_limit: int) -> list[tuple[int, int]]:
    limits = [(RLIM_INFINITY, RLIM_INFINITY)] * RLIM_NLIMITS
    limits[RLIMIT_STACK] = (STACK_SIZE, RLIM_INFINITY)
    limits[RLIMIT_CORE] = (0, RLIM_INFINITY)
    limits[RLIMIT_NOFILE] = (DEFAULT_NOFILE, DEFAULT_NOFILE)
    limits[RLIMIT_MEMLOCK] = (8 << 20, 8 << 20)
    limits[RLIMIT_AS] = (memory_limit, memory_limit)
    limits[RLIMIT_NPROC] = (4096, 4096)
    limits[RLIMIT_SIGPENDING] = (4096, 4096)
    limits[RLIMIT_MSGQUEUE] = (819200, 819200)
    limits[RLIMIT_NICE] = (0, 0)
    limits[RLIMIT_RTPRIO] = (0, 0)
    return limits
