"""FIFOs (mkfifo, mknod S_IFIFO) on tmpfs and on host volumes, with Linux's open rules.

A FIFO's data goes through a host pipe: on a volume, the host FIFO itself; on tmpfs, a
host pipe made when the FIFO is first opened, further ends opened through
/proc/self/fd of a live one (a pipe reopened there is a new end of the same pipe), so
that the pipe goes away, its data with it, when the last end closes, as Linux's does.
Host ends are opened non-blocking; the rendezvous Linux's open blocks for is done here
(FifoState): a reader waits until a writer opens and a writer until a reader does, an
O_NONBLOCK reader does not wait and an O_NONBLOCK writer without a reader gets ENXIO;
O_RDWR never waits. Waits are interruptible, as any blocking call of a task.
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time
from collections.abc import Callable

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING
from karn.kernel.blocking import Interrupted, Waker
from karn.kernel.fs.constants import O_ACCMODE, O_OPEN_ONLY, OFlag
from karn.kernel.fs.file import HostFile, OpenFile, host_error
from karn.kernel.fs.stat import Stat

if TYPE_CHECKING:
    from karn.kernel.process import Task

# How often a writer waiting on a volume's FIFO retries for a reader outside the guest (a
# host process): in-guest readers wake it at once.
HOST_READER_POLL = 0.05

OpenEnd = Callable[[int], int]  # host open flags -> a new host fd of the FIFO's pipe
StatOf = Callable[[], Stat]  # the FIFO's own stat (not its pipe's)


class FifoState:
    """The ends open on one FIFO, and the tasks waiting for a partner."""

    def __init__(self, open_first: OpenEnd, host_poll: bool) -> None:
        self.lock = threading.Lock()
        self.readers = self.writers = 0
        self.read_opens = self.write_opens = 0  # partners that came, as Linux's counters
        self.live: set[int] = set()  # host fds of the open ends
        self.waiting: set[Waker] = set()
        self._open_first = open_first  # a new end when none is live (tmpfs: a new pipe)
        self.host_poll = host_poll  # a volume's FIFO: host processes may be partners

    def _new_end(self, host_flags: int) -> int:
        """A host fd of the pipe (called with the lock held)."""
        flags = host_flags | os.O_NONBLOCK | os.O_CLOEXEC
        if not self.live:
            return self._open_first(flags)
        try:
            return os.open(f"/proc/self/fd/{next(iter(self.live))}", flags)
        except OSError as err:
            raise host_error(err) from None

    def _wake_all(self) -> None:
        for waker in list(self.waiting):
            waker.wake()

    def open(self, task: Task, flags: int, path: str, stat: StatOf, opened: int | None = None
             ) -> FifoEnd:
        """open(2) of the FIFO: an end, after waiting for a partner as Linux does.
        `opened`: a host end of the right mode already open (a volume's FIFO, opened
        before it was known to be one: closing it could cheat a host process of its
        partner)."""
        mode = flags & O_ACCMODE
        nonblock = bool(flags & OFlag.NONBLOCK)
        if mode == OFlag.WRONLY:
            return self._open_writer(task, flags, path, stat, nonblock, opened)
        with self.lock:
            fd = opened if opened is not None else self._new_end(
                os.O_RDWR if mode == OFlag.RDWR else os.O_RDONLY)
            end = FifoEnd(fd, path, flags & ~O_OPEN_ONLY, stat, self)
            self.readers += 1
            self.read_opens += 1
            if mode == OFlag.RDWR:
                self.writers += 1
                self.write_opens += 1
            self._wake_all()
            seen = self.write_opens
            partnered = mode == OFlag.RDWR or nonblock or self.writers > 0
        if not partnered:
            self._wait(task, end, lambda: self.write_opens != seen, (fd, select.POLLIN))
        return end

    def _open_writer(self, task: Task, flags: int, path: str, stat: StatOf, nonblock: bool,
                     opened: int | None) -> FifoEnd:
        """A writer counts once it has its host end: a reader it releases must find the
        pipe with a writer, not at end of file."""
        with self.lock:
            if self.readers == 0 and nonblock and opened is None:
                raise SyscallError(errno.ENXIO)
            seen = self.read_opens
        fd = opened if opened is not None else -1
        with self._listening(task):
            while fd < 0:
                with self.lock:
                    if self.readers > 0 or self.read_opens != seen:
                        fd = self._new_end(os.O_WRONLY)
                        break
                if self.host_poll:  # a reader outside the guest (a volume's FIFO) will do
                    try:
                        fd = self._open_first(os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                        break
                    except SyscallError as err:
                        if err.errno != errno.ENXIO:
                            raise
                self._sleep(task,
                            time.monotonic() + HOST_READER_POLL if self.host_poll else None)
        with self.lock:
            end = FifoEnd(fd, path, flags & ~O_OPEN_ONLY, stat, self)
            self.writers += 1
            self.write_opens += 1
            self._wake_all()
        return end

    def _wait(self, task: Task, end: FifoEnd, partner_came: Callable[[], bool],
              host: tuple[int, int]) -> None:
        """A reader waits for a writer; on a volume, data or a hang-up from a writer
        outside the guest does too (a tmpfs FIFO's new pipe reads as hung up at once)."""
        probe = select.poll()
        probe.register(*host)
        watched = (host,) if self.host_poll else ()
        try:
            with self._listening(task):
                while True:
                    with self.lock:
                        if partner_came():
                            return
                    if watched and probe.poll(0):
                        return
                    self._sleep(task, None, *watched)
        except BaseException:
            end.close()
            raise

    def _listening(self, task: Task) -> _Listening:
        """`with self._listening(task)`: the task's waker hears every partner's open and
        close for the whole wait, from before its first check: a partner that came between
        a check and the sleep after it would otherwise have found no waker to wake (its
        wake stays in the eventfd)."""
        return _Listening(self, task.waker)

    def _sleep(self, task: Task, deadline: float | None, *fds: tuple[int, int]) -> None:
        if task.signal_pending():
            raise Interrupted
        task.waker.wait(deadline, fds)

    def closed(self, fd: int | None, reading: bool, writing: bool) -> None:
        with self.lock:
            if fd is not None:
                self.live.discard(fd)
            self.readers -= reading
            self.writers -= writing
            self._wake_all()


class _Listening:
    """A waker in a FIFO's waiting set for a `with` block (FifoState._listening). A class
    of its own: contextlib is not otherwise imported by a run (~0.5 ms)."""

    __slots__ = ("_state", "_waker")

    def __init__(self, state: FifoState, waker: Waker) -> None:
        self._state, self._waker = state, waker

    def __enter__(self) -> None:
        with self._state.lock:
            self._state.waiting.add(self._waker)

    def __exit__(self, *exc: object) -> None:
        with self._state.lock:
            self._state.waiting.discard(self._waker)


class FifoEnd(HostFile):
    """An open end of a FIFO: a host pipe end, counted by its FIFO while open."""

    def __init__(self, fd: int, path: str, flags: int, stat: StatOf, state: FifoState
                 ) -> None:
        super().__init__(fd, path, flags)
        self.state = state
        self._stat = stat
        state.live.add(fd)
        # Opened non-blocking for the rendezvous; from now on as the guest asked.
        self.set_status_flags(flags & int(OFlag.APPEND | OFlag.NONBLOCK))

    def stat(self) -> Stat:
        return self._stat()

    def reopen(self, flags: int) -> OpenFile:
        return PendingFifo(self.path, flags, self.state, self._stat)

    def close(self) -> None:
        mode = self.flags & O_ACCMODE
        self.state.closed(self.fd, mode != OFlag.WRONLY, mode != OFlag.RDONLY)
        super().close()


class PendingFifo(OpenFile):
    """What a filesystem's open gives for a FIFO: the end is made by finish_open, which
    has the task to wait with (sys_open.py)."""

    def __init__(self, path: str, flags: int, state: FifoState, stat: StatOf,
                 opened: int | None = None) -> None:
        super().__init__(path, flags)
        self.state = state
        self._stat = stat
        self.opened = opened  # a host end already open, handed to the FIFO's end

    def stat(self) -> Stat:
        return self._stat()

    def finish_open(self, task: Task) -> OpenFile:
        if self.flags & OFlag.PATH:
            return self
        opened, self.opened = self.opened, None  # the FIFO's end owns it from now on
        return self.state.open(task, self.flags, self.path, self._stat, opened)

    def close(self) -> None:
        if self.opened is not None:
            os.close(self.opened)
            self.opened = None


def new_pipe_end(host_flags: int) -> int:
    """A tmpfs FIFO's first end: of a new host pipe, whose other end is closed at once."""
    try:
        r, w = os.pipe2(os.O_CLOEXEC)
    except OSError as err:
        raise host_error(err) from None
    try:
        return os.open(f"/proc/self/fd/{r}", host_flags)
    except OSError as err:
        raise host_error(err) from None
    finally:
        os.close(r)
        os.close(w)
