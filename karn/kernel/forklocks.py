"""The locks a host fork must not copy half-taken (docs/design/processes.md, 3.1 step 3).

A lock another monitor thread holds at the moment of os.fork() stays held forever in the
child (only the forking thread exists there). So the forking thread first takes every
lock that guards state the child goes on using (the fd table, signal state, the memory
account, the network stack), in one fixed order, as Linux holds mmap_lock across
dup_mmap: the child then copies consistent state. After the fork both sides drop them;
the child also gets fresh locks for what it rebuilds (it never waits on a parent's).

Locks of objects the child does not keep (gate, futex table, timers, other threads'
wakers) are not taken: the child makes new objects instead (kernel/fork.py).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from karn.hints import TYPE_CHECKING, NamedTuple
from karn.kernel import syscalls
from karn.kernel.process import ThreadExit

if TYPE_CHECKING:
    from karn.kernel.process import Process, Task

TRY_FOR = 0.05  # seconds one lock is tried before all are dropped and taken again


class LockSite(NamedTuple):
    """Where a lock lives: re-made in the child as `owner.attr = kind()`."""

    owner: object
    attr: str
    kind: type


def process_locks(proc: Process) -> list[LockSite]:
    """The process's kernel locks that a fork takes, in the order it takes them (first
    the monitor's import of syscall areas: no import is halfway at the fork)."""
    sites = [LockSite(syscalls, "import_lock", threading.RLock),
             LockSite(proc, "signal_lock", threading.RLock),
             LockSite(proc.fds, "_lock", threading.Lock),
             LockSite(proc.mm.account, "_lock", threading.Lock)]
    if proc.net is not None:
        sites.append(LockSite(proc.net, "lock", threading.Lock))
    buffers = getattr(proc, "buffers", None)  # limits.BufferBudget, made on first use
    if buffers is not None:
        sites.append(LockSite(buffers, "lock", threading.Lock))
    return sites


@contextmanager
def quiesced(task: Task, sites: list[LockSite]) -> Iterator[None]:
    """Hold every lock of `sites` for the body (the fork). Taken with a bounded try each
    and all dropped on a miss, so a thread taking two of them in another order cannot
    deadlock with the fork; a task told to end meanwhile ends (ThreadExit)."""
    locks = [getattr(site.owner, site.attr) for site in sites]
    while True:
        taken = []
        for lock in locks:
            if not lock.acquire(timeout=TRY_FOR):
                break
            taken.append(lock)
        if len(taken) == len(locks):
            break
        for lock in reversed(taken):
            lock.release()
        if task.exit_requested or task.process.exit_status is not None:
            raise ThreadExit
        time.sleep(0.001)
    try:
        yield
    finally:
        for lock in reversed(locks):
            lock.release()


def drop_halfway_imports() -> None:
    """In the child, first: forget the imports other threads had under way at the fork.
    Python's import holds a lock per module while it runs the module; a fork copies the
    lock held by a thread that the child does not have (and the half-made module in
    sys.modules), so the child's first import of that module waited forever: seen as a
    forked monitor stuck importing `array`, which the parent's main thread was importing
    (a late import for `karn ps`) at the fork. The child's only thread imports nothing at
    this point, so every module lock in the table belongs to a thread that is gone: the
    table is emptied (the next import makes a fresh lock) and the half-made modules go,
    to be made again, as after a failed import. CPython's own table
    (importlib._bootstrap._module_locks)."""
    from importlib import _bootstrap

    _bootstrap._module_locks.clear()  # type: ignore[attr-defined]
    for name, module in list(sys.modules.items()):
        if getattr(getattr(module, "__spec__", None), "_initializing", False):
            del sys.modules[name]


def renew(sites: list[LockSite]) -> None:
    """In the child, after the fork: fresh locks in place of the inherited ones."""
    for site in sites:
        setattr(site.owner, site.attr, site.kind())
