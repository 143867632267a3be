"""The debug features' side of the kernel's Observer hook (kernel/threads.py).

Each feature (tracer, syscall history, gdb stub, core dumps) subclasses BaseObserver and
overrides what it needs; `combine` joins several into the one observer a process holds.
No feature is attached unless asked for, so a plain `karn run` pays nothing.
"""

from __future__ import annotations

from collections import deque

from karn.hints import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from karn.abi.faults import GuestFault
    from karn.kernel.process import Task
    from karn.kernel.signals import SigInfo


class BaseObserver:
    """Does nothing at every hook point."""

    def thread_started(self, task: Task) -> None:
        pass

    def syscall_enter(self, task: Task, nr: int, args: tuple[int, ...]) -> object:
        return None

    def syscall_exit(self, task: Task, nr: int, args: tuple[int, ...], result: int | None,
                     token: Any) -> None:
        pass

    def fault(self, task: Task, fault: GuestFault) -> bool:
        return False

    def signal_delivered(self, task: Task, info: SigInfo) -> None:
        pass

    def crashed(self, task: Task, fault: GuestFault) -> None:
        pass

    def interrupted(self, task: Task) -> None:
        pass

    def forked(self) -> BaseObserver | None:
        """What observes a forked child process, in the child's monitor: by default
        nothing (gdb, the syscall history, core dumps and summaries stay with the first
        process)."""
        return None

    def finish(self) -> None:
        """The process has ended (called on the main thread, memory still readable)."""


class Combined(BaseObserver):
    """Several observers as one; the first to consume a fault wins."""

    def __init__(self, parts: list[BaseObserver]) -> None:
        self.parts = parts

    def thread_started(self, task: Task) -> None:
        for p in self.parts:
            p.thread_started(task)

    def syscall_enter(self, task: Task, nr: int, args: tuple[int, ...]) -> object:
        return [p.syscall_enter(task, nr, args) for p in self.parts]

    def syscall_exit(self, task: Task, nr: int, args: tuple[int, ...], result: int | None,
                     token: Any) -> None:
        for p, t in zip(self.parts, token, strict=True):
            p.syscall_exit(task, nr, args, result, t)

    def fault(self, task: Task, fault: GuestFault) -> bool:
        return any(p.fault(task, fault) for p in self.parts)

    def signal_delivered(self, task: Task, info: SigInfo) -> None:
        for p in self.parts:
            p.signal_delivered(task, info)

    def crashed(self, task: Task, fault: GuestFault) -> None:
        for p in self.parts:
            p.crashed(task, fault)

    def interrupted(self, task: Task) -> None:
        for p in self.parts:
            p.interrupted(task)

    def forked(self) -> BaseObserver | None:
        return combine([f for p in self.parts if (f := p.forked()) is not None])

    def finish(self) -> None:
        for p in self.parts:
            p.finish()


def combine(parts: list[BaseObserver]) -> BaseObserver | None:
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else Combined(parts)


class SyscallRecord(NamedTuple):
    tid: int
    nr: int
    args: tuple[int, ...]
    result: int | None


class History(BaseObserver):
    """The last N syscalls of the process (all threads), for crash reports."""

    def __init__(self, size: int = 20) -> None:
        self.records: deque[SyscallRecord] = deque(maxlen=size)

    def syscall_exit(self, task: Task, nr: int, args: tuple[int, ...], result: int | None,
                     token: Any) -> None:
        self.records.append(SyscallRecord(task.tid, nr, args, result))
