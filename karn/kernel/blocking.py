"""How a guest thread blocks inside a syscall, and how others wake or interrupt it.

Every blocking wait polls the task's own eventfd (plus any host fds the call waits on):
a futex wake, a signal, or process exit writes to it. One primitive serves futexes,
sleeps, sigsuspend and readiness waits, and all of them are interruptible by signals.

The fast-syscall server thread must never block (it serves every vCPU): there a wait that
would block raises WouldBlock instead, and the call is redone on the exit path, in the
calling vCPU's own thread. Handlers make no change before their wait that a redo would
repeat (a futex waiter is dequeued, nothing is consumed), or say what is left to do
(WouldBlock.rest: a blocking stream send that sent part of its data).
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable

from karn.abi.errno import ERESTARTSYS, SyscallError

_EFD_FLAGS = os.EFD_NONBLOCK | os.EFD_CLOEXEC

# The longest single host wait, in seconds: poll(2) takes an int of milliseconds and
# Python's locks a bounded float, while a guest may ask for centuries (Linux saturates
# such timeouts). Every waiter loops and re-checks its deadline, so a wait this long
# ends early only to be resumed.
MAX_HOST_WAIT = 86400.0


class Interrupted(SyscallError):
    """A signal arrived while blocked: restart or -EINTR, decided at signal delivery."""

    def __init__(self) -> None:
        super().__init__(ERESTARTSYS)


class WouldBlock(BaseException):
    """A wait on a thread that must not block (not an Exception: no handler swallows it).
    A handler that has already done what its redo must not do again (a blocking stream
    send that sent part of its data, a host FIFO end opened) gives `rest`: what is left of
    the call, which the redo on the exit path runs instead of the whole call (threads.py),
    and `undo`, run if the call is made whole instead (a signal handler ran first)."""

    def __init__(self, rest: Callable[[], int] | None = None,
                 undo: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.rest = rest
        self.undo = undo


_thread = threading.local()


def forbid_waits() -> None:
    """From now on, waits on this thread that would block raise WouldBlock."""
    _thread.nowait = True


def waits_forbidden() -> bool:
    """This thread may not wait (the fast transport's server)."""
    return getattr(_thread, "nowait", False)


class Waker:
    """A task's wake-up eventfd. Other threads may wake it while its task exits: wake and
    close are serialised, so a wake never writes to a closed (or reused) fd number."""

    __slots__ = ("fd", "_lock")

    def __init__(self) -> None:
        self.fd = os.eventfd(0, _EFD_FLAGS)
        self._lock = threading.RLock()  # a host signal handler may wake it too

    def wake(self) -> None:
        with self._lock:
            if self.fd < 0:
                return  # the task has exited
            try:
                os.eventfd_write(self.fd, 1)
            except BlockingIOError:  # counter saturated: a wake is already pending
                pass

    def drain(self) -> None:
        try:
            os.eventfd_read(self.fd)
        except BlockingIOError:
            pass

    def wait(self, deadline: float | None, fds: tuple[tuple[int, int], ...] = ()) -> list:
        """Block until woken, a host fd is ready, or the monotonic deadline passes.

        Returns the ready (fd, events) pairs of `fds` (empty when woken or timed out).
        """
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        for fd, events in fds:
            poller.register(fd, events)
        if deadline is None:
            timeout_ms = None
        else:
            left = min(deadline - time.monotonic(), MAX_HOST_WAIT)
            timeout_ms = max(0, int(left * 1000 + 0.999))
        if timeout_ms != 0 and getattr(_thread, "nowait", False):
            ready = poller.poll(0)
            if not ready:
                raise WouldBlock
        else:
            ready = poller.poll(timeout_ms)
        out = []
        for fd, events in ready:
            if fd == self.fd:
                self.drain()
            else:
                out.append((fd, events))
        return out

    def close(self) -> None:
        with self._lock:
            fd, self.fd = self.fd, -1
        os.close(fd)
