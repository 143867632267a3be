"""Guest threads: one host thread and one vCPU per task (both kept by the platform for
the next task when one ends), the kernel side of the exit loop
(and of the fast transport's server, which serves calls through the same loop), signal
delivery at the points Linux delivers them, and the --cpus gate.
"""

from __future__ import annotations

import errno
import threading

from karn.abi.errno import ERESTARTSYS, SyscallError
from karn.abi.faults import GuestFault, fault_signal
from karn.abi.signals import SIGSEGV
from karn.hints import TYPE_CHECKING, Any, Protocol
from karn.kernel import jobcontrol
from karn.kernel.blocking import WouldBlock, forbid_waits
from karn.kernel.cpugate import CpuGate
from karn.kernel.cputime import thread_start_times
from karn.kernel.fastmap import may_wait
from karn.kernel.process import COUNTED_SYSCALLS, Forked, ProcessExit, ThreadExit
from karn.kernel.signals import (
    SA_NODEFER,
    SA_RESETHAND,
    SA_RESTART,
    SIG_DFL,
    SIG_IGN,
    FrameError,
    MaskCell,
    SigAction,
    SigInfo,
    bit,
    build_frame,
    default_action,
)
from karn.kernel.syscalls import TABLE, finish, serve

if TYPE_CHECKING:
    from karn.kernel.futex import GuestWaiters
    from karn.kernel.process import Process, Task

SYSCALL_INSN_LEN = 2  # `syscall` is 0f 05: a restart re-executes it
_RESTART = -ERESTARTSYS


class TaskLoop:
    """The kernel's side of one vCPU's exit loop (see platform/vcpu.py Vcpu.run)."""

    __slots__ = ("task", "work_pending", "syscall_nr", "serving", "_counts", "_table",
                 "_rest")

    def __init__(self, task: Task) -> None:
        self.task = task
        self.work_pending = False
        self.syscall_nr = -1
        self.serving = -1  # the syscall being served now, for `karn inspect`
        self._counts = task.process.syscall_counts
        self._table = task.process.syscall_table or TABLE  # a policy's restricted_table
        # a call the fast server began and could not finish: (its number and arguments,
        # the WouldBlock that says what is left of it), for its redo on the exit path
        self._rest: tuple[tuple[int, ...], WouldBlock] | None = None

    def syscall(self, nr: int, a0: int, a1: int, a2: int, a3: int, a4: int, a5: int) -> int:
        self.syscall_nr = self.serving = nr
        if nr < COUNTED_SYSCALLS:
            self._counts[nr] += 1
        rest = self._rest
        if rest is None:
            result = serve(self.task, nr, a0, a1, a2, a3, a4, a5, self._table)
        else:  # kept for one call: the redo of the one the server began
            self._rest = None
            result = self._redo(rest, nr, a0, a1, a2, a3, a4, a5)
        self.serving = -1
        if result == _RESTART:
            self.work_pending = True
        return result

    def _redo(self, kept: tuple[tuple[int, ...], WouldBlock], nr: int, a0: int, a1: int,
              a2: int, a3: int, a4: int, a5: int) -> int:
        """The rest of the call the server began, if this is its redo; else that call's
        undo (a signal handler ran first: the call will be made whole) and this call."""
        call, stop = kept
        if call == (nr, a0, a1, a2, a3, a4, a5) and stop.rest is not None:
            return finish(stop.rest)
        if stop.undo is not None:
            stop.undo()
        return serve(self.task, nr, a0, a1, a2, a3, a4, a5, self._table)

    def drop_rest(self) -> None:
        """The thread ends: a call the server began will not be redone (its undo)."""
        kept, self._rest = self._rest, None
        if kept is not None and kept[1].undo is not None:
            kept[1].undo()

    def serve_fast(self, nr: int, a0: int, a1: int, a2: int, a3: int, a4: int,
                   a5: int) -> int | None:
        """Serve a call the fast transport's server took (on the server thread, while the
        task's vCPU spins for the answer); None: redo it on the exit path (it would block).
        ThreadExit and ProcessExit become an exit request the answer's work check sees."""
        forbid_waits()
        try:
            return self.syscall(nr, a0, a1, a2, a3, a4, a5)
        except WouldBlock as stop:
            if stop.rest is not None:  # part done: the redo does only the rest
                self._rest = ((nr, a0, a1, a2, a3, a4, a5), stop)
            self.serving = -1
            if nr < COUNTED_SYSCALLS:
                self._counts[nr] -= 1  # counted when redone
            return None
        except ThreadExit:
            self.task.exit_requested = True
            return 0
        except ProcessExit as done:
            self.task.process.exit_group(done.status)
            return 0

    def attach_waiters(self, waiters: GuestWaiters) -> None:
        """The fast transport's futex waiters spinning in the guest join the process's
        futex table (kernel/futex.py), which turns in-guest futex calls on."""
        self.task.process.futex.attach(waiters)

    def count_calls(self, nr: int, calls: int) -> None:
        """Calls the fast transport's stubs answered in the guest (futex, set_robust_list,
        rt_sigprocmask)."""
        if nr < COUNTED_SYSCALLS:
            self._counts[nr] += calls

    def attach_mask(self, cell: MaskCell) -> None:
        """The fast transport's slot holds the task's signal mask while it runs there."""
        self.task.keep_mask_in(cell)

    def detach_mask(self) -> None:
        self.task.keep_mask_in(None)

    def work_due(self) -> bool:
        task = self.task
        return self.work_pending or task.signal_pending() or \
            task.process.exit_status is not None

    def answered(self, nr: int) -> None:
        """The vCPU returns from fast call nr (its result in rax) with work due."""
        self.syscall_nr = nr
        self.do_work()

    def do_work(self) -> None:
        """After a syscall or an interrupted KVM_RUN: exit requests and signals."""
        task = self.task
        self.work_pending = False
        if task.process.exit_status is not None or task.exit_requested:
            raise ThreadExit
        if task.process.job_stop and not jobcontrol.park(task):  # another thread stopped it
            raise ThreadExit
        restart = self.syscall_nr >= 0 and task.vcpu.get_context()["rax"] == (-ERESTARTSYS) & (
            (1 << 64) - 1)
        delivered = deliver_signal(task, restart_nr=self.syscall_nr if restart else -1)
        if restart and not delivered:
            _restart_syscall(task, self.syscall_nr)
        self.syscall_nr = -1
        task.refresh_posted()  # what was delivered no longer sends the stub here
        if task.signal_pending():
            self.work_pending = True

    def interrupted(self) -> None:
        self.syscall_nr = -1
        if self.task.vcpu.interruptible():
            self.do_work()
        else:
            self.work_pending = True

    def fault(self, fault: GuestFault) -> None:
        self.syscall_nr = -1
        task = self.task
        sig, code, addr, _cause, _access = fault_signal(fault)
        info = SigInfo.fault(sig, code, addr)
        action = task.process.actions[sig]
        blocked = task.blocked & bit(sig)
        if action.handler in (SIG_DFL, SIG_IGN) or blocked:
            # Linux forces a synchronous fault's default action when it cannot be handled.
            task.process.crash(fault, sig)
            raise ThreadExit
        trap = fault.vector
        if task.process.observer is not None:
            task.process.observer.signal_delivered(task, info)
        _enter_handler(task, info, action, (fault.error_code or 0, trap, fault.cr2))


class Observer(Protocol):
    """Optional debug features (tracer, gdb stub, core dumps: karn/debug/) around one
    process's threads. Set as Process.observer before the first thread starts; with none
    set, threads run the plain TaskLoop and pay nothing."""

    def thread_started(self, task: Task) -> None: ...

    def syscall_enter(self, task: Task, nr: int, args: tuple[int, ...]) -> object: ...

    def syscall_exit(self, task: Task, nr: int, args: tuple[int, ...], result: int | None,
                     token: Any) -> None:
        """result None: the call did not return (exit, exit_group, a thread told to stop)."""
        ...

    def fault(self, task: Task, fault: GuestFault) -> bool:
        """True if the observer consumed the fault (a debugger's breakpoint or step)."""
        ...

    def signal_delivered(self, task: Task, info: SigInfo) -> None:
        """A signal is about to run its handler, or its default action (not ignored)."""
        ...

    def crashed(self, task: Task, fault) -> None:
        """The fault ends the process (called before the other threads are gone); for a
        core-dumping signal the thread sent itself, `fault` is a process.SignalSnapshot."""
        ...

    def interrupted(self, task: Task) -> None: ...

    def forked(self) -> Observer | None:
        """What observes a forked child process (in the child's monitor); None: nothing."""
        ...


class ObservedTaskLoop(TaskLoop):
    """TaskLoop with an Observer called around syscalls, faults and kicks."""

    __slots__ = ("observer",)

    def __init__(self, task: Task, observer: Observer) -> None:
        super().__init__(task)
        self.observer = observer

    def syscall(self, nr: int, a0: int, a1: int, a2: int, a3: int, a4: int, a5: int) -> int:
        observer = self.observer
        task = self.task
        args = (a0, a1, a2, a3, a4, a5)
        token = observer.syscall_enter(task, nr, args)
        try:
            result = TaskLoop.syscall(self, nr, a0, a1, a2, a3, a4, a5)
        except Forked:
            raise  # a forked child: the parent reports the call (its result is the pid)
        except WouldBlock:
            raise  # redone on the exit path, which reports it (a walk of another
            # process's /proc link, a lock wait: calls the observed server does serve)
        except BaseException:
            observer.syscall_exit(task, nr, args, None, token)
            raise
        observer.syscall_exit(task, nr, args, result, token)
        return result

    def serve_fast(self, nr: int, a0: int, a1: int, a2: int, a3: int, a4: int,
                   a5: int) -> int | None:
        if may_wait(nr, a1):
            return None  # a redone call would reach the observer twice
        return TaskLoop.serve_fast(self, nr, a0, a1, a2, a3, a4, a5)

    def attach_waiters(self, waiters: GuestWaiters) -> None:
        """None: every futex call must reach the observer (no in-guest answers)."""

    def attach_mask(self, cell: MaskCell) -> None:
        """None: every rt_sigprocmask must reach the observer (the mask stays here)."""

    def interrupted(self) -> None:
        self.observer.interrupted(self.task)
        TaskLoop.interrupted(self)

    def fault(self, fault: GuestFault) -> None:
        if self.observer.fault(self.task, fault):
            self.syscall_nr = -1
            return
        try:
            TaskLoop.fault(self, fault)
        except ThreadExit:
            if self.task.process.crash_fault is fault:
                self.observer.crashed(self.task, fault)
            raise


def _restart_syscall(task: Task, nr: int) -> None:
    ctx = task.vcpu.get_context()
    ctx["rax"] = nr
    ctx["rip"] -= SYSCALL_INSN_LEN
    task.vcpu.set_context(ctx)


def deliver_signal(task: Task, restart_nr: int = -1) -> bool:
    """Deliver one pending unblocked signal; True if a handler was entered."""
    proc = task.process
    while True:
        continues = proc.job_continues  # before the take: a SIGCONT after it cancels a stop
        info = task.take_signal(~task.blocked)
        if info is None:
            return False
        sig = info.signo
        action = proc.actions[sig]
        if action.handler == SIG_IGN:
            continue
        if action.handler == SIG_DFL and default_action(sig) == "ignore":
            continue
        if action.handler == SIG_DFL and default_action(sig) == "stop":
            if not jobcontrol.stop(task, sig, continues):
                raise ThreadExit
            continue
        if proc.observer is not None:
            proc.observer.signal_delivered(task, info)
        if action.handler == SIG_DFL:
            proc.terminate_by_signal(sig, core=default_action(sig) == "core")
            raise ThreadExit
        if restart_nr >= 0:
            if action.flags & SA_RESTART:
                _restart_syscall(task, restart_nr)
            else:
                ctx = task.vcpu.get_context()
                ctx["rax"] = -errno.EINTR & ((1 << 64) - 1)
                task.vcpu.set_context(ctx)
        _enter_handler(task, info, action)
        return True


def _enter_handler(task: Task, info: SigInfo, action: SigAction,
                   fault: tuple[int, int, int] = (0, 0, 0)) -> None:
    cpu = task.vcpu
    ctx = cpu.get_context()
    frame_mask = task.saved_mask if task.saved_mask is not None else task.blocked
    task.saved_mask = None
    try:
        entry = build_frame(task.mem, ctx, cpu.get_fpu(), cpu.xcr0, info, action, frame_mask,
                            task.altstack, fault)
    except FrameError:
        task.process.terminate_by_signal(SIGSEGV, core=True)
        raise ThreadExit from None
    cpu.set_context(entry)
    sig = info.signo
    task.set_blocked(task.blocked | action.mask | (0 if action.flags & SA_NODEFER else bit(sig)))
    if action.flags & SA_RESETHAND:
        task.process.actions[sig] = SigAction()


def run_task(task: Task, gate: CpuGate | None) -> None:
    """Body of a guest thread's host thread."""
    proc: Process = task.process
    observer = proc.observer
    loop = TaskLoop(task) if observer is None else ObservedTaskLoop(task, observer)
    task.loop = loop
    if task.signal_pending():  # sent before the loop existed (a Ctrl-C while karn starts):
        loop.work_pending = True  # delivered at the first chance, not left to make EINTRs
    task.cpu_base = thread_start_times()
    task.host_thread = threading.get_ident()
    try:
        if observer is not None:
            observer.thread_started(task)
        task.vcpu.run(loop, gate)
    except Forked as forked:  # this is now the child's monitor: it never comes back here
        forked.become()
    except ThreadExit:
        pass
    except ProcessExit as done:
        proc.exit_group(done.status)
    except SyscallError:
        raise
    except BaseException as err:  # a monitor bug: end the guest, keep the report
        proc.internal_error(err)
    finally:
        task.host_thread = 0  # its CPU clock stops; the host thread may run another task
        loop.drop_rest()
        proc.task_exited(task)
