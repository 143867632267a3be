"""Job-control stops (man 7 signal): SIGSTOP, and SIGTSTP, SIGTTIN or SIGTTOU left at
SIG_DFL, stop every thread of the process until a SIGCONT (or its end by SIGKILL).

The thread that takes the stop signal (threads.py deliver_signal) marks the process
stopped, makes every other thread come to its delivery point (a kick out of guest mode;
a thread blocked in a call stops when the call returns, which the guest cannot tell
apart) and parks there itself. A SIGCONT acts when it is sent, as Linux's: it discards
pending stop signals and, once queued (for a handler), wakes the parked threads, whatever
its disposition or mask; it also cancels a stop signal already taken but not yet acted
on. A stop signal sent discards a pending SIGCONT. Each change goes to the process table
(link.py job_state), which tells the parent: SIGCHLD with CLD_STOPPED or CLD_CONTINUED,
and what wait's WUNTRACED and WCONTINUED report.
"""

from __future__ import annotations

from karn.abi.signals import SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU
from karn.hints import TYPE_CHECKING

if TYPE_CHECKING:
    from karn.kernel.process import Process, Task

STOP_SIGNALS = (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU)


def signal_sent(proc: Process, sig: int) -> None:
    """A signal is being sent to the process (before it is queued or dropped): a SIGCONT
    discards pending stop signals, a stop signal a pending SIGCONT."""
    if sig == SIGCONT or sig in STOP_SIGNALS:
        with proc.signal_lock:
            _discard(proc, STOP_SIGNALS if sig == SIGCONT else (SIGCONT,))


def continued(proc: Process) -> None:
    """A SIGCONT was sent (and queued if it has a handler): a stopped process goes on."""
    with proc.signal_lock:
        resumed = proc.job_stop != 0
        proc.job_stop = 0
        proc.job_continues += 1
        tasks = list(proc.tasks.values())
    if resumed:
        for task in tasks:
            task.waker.wake()
        _report(proc, 0)


def _discard(proc: Process, signals: tuple[int, ...]) -> None:
    for pending in (proc.pending, *(t.pending for t in proc.tasks.values())):
        for sig in signals:
            pending.discard(sig)


def stop(task: Task, sig: int, continues: int) -> bool:
    """The task took stop signal `sig` at SIG_DFL (when proc.job_continues was
    `continues`): the process stops, unless a SIGCONT came since. Returns once it is
    continued (True) or ending (False). Discarded for the first process, whose parent is
    outside the guest (nothing could continue it: a container's init ignores them too),
    and SIGTSTP, SIGTTIN and SIGTTOU in an orphaned process group (nobody in the session
    could continue it)."""
    proc = task.process
    if proc.ppid == 0 or sig != SIGSTOP and orphaned(proc):
        return True
    with proc.signal_lock:
        if proc.job_continues != continues:
            return True
        first = proc.job_stop == 0 and proc.exit_status is None
        if first:
            proc.job_stop = sig
        others = [t for t in proc.tasks.values() if t is not task]
    if first:
        for other in others:
            other.notify_signal()
        _report(proc, sig)
    return park(task)


def orphaned(proc: Process) -> bool:
    """Whether the process's group is orphaned (alone, pid 1's group is not)."""
    return proc.link is not None and bool(proc.link.call("orphaned"))


def park(task: Task) -> bool:
    """Wait at a signal delivery point while the process is stopped: True once it is
    continued, False when it is ending (SIGKILL, another thread's exit_group)."""
    proc = task.process
    while proc.job_stop:
        if task.exit_requested or proc.exit_status is not None:
            return False
        task.waker.wait(None)
    return True


def _report(proc: Process, sig: int) -> None:
    link = proc.link
    if link is not None:  # alone (never forked), pid 1 has no parent to tell
        link.job_state(sig)
