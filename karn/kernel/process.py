"""The guest process and its tasks: the state syscall handlers work on.

Handlers hold no state of their own; everything lives here or in the subsystems these
objects point to (address space, fd table, filesystem context).
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterable

from karn.abi.errno import SyscallError
from karn.abi.signals import NSIG, SIGCONT, SIGKILL, SIGSEGV
from karn.hints import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar
from karn.kernel import caps, jobcontrol
from karn.kernel.blocking import Waker
from karn.kernel.cpugate import CpuGate
from karn.kernel.cputime import CpuFloor, CpuTimes, monitor_times
from karn.kernel.futex import FutexTable
from karn.kernel.limits import RLIMIT_NPROC, default_rlimits
from karn.kernel.signals import (
    FULL_MASK,
    SIG_DFL,
    UNBLOCKABLE,
    AltStack,
    MaskCell,
    PendingSignals,
    SigAction,
    SigInfo,
    bit,
    default_action,
    read_frame,
)
from karn.kernel.timers import TimerService

if TYPE_CHECKING:
    from karn.abi.faults import GuestFault
    from karn.kernel.cputimers import CpuTimer, CpuTimerService
    from karn.kernel.fs.context import FsContext
    from karn.kernel.fs.fdtable import FdTable
    from karn.kernel.guestmem import GuestMemory
    from karn.kernel.link import Link
    from karn.kernel.mm import AddressSpace, CodeWatcher
    from karn.kernel.net.stack import NetStack
    from karn.kernel.sys_timer import PosixTimer
    from karn.kernel.threads import Observer, TaskLoop
    from karn.kernel.timers import Timer
    from karn.loader.program import LoadSettings, ProgramImage


class Cpu(Protocol):
    """What the kernel may ask of the vCPU a task runs on."""

    xcr0: int
    xsave_size: int  # bytes of an XSAVE image (get_fpu)

    def get_fs_base(self) -> int: ...

    def set_fs_base(self, value: int) -> None: ...

    def get_gs_base(self) -> int: ...

    def set_gs_base(self, value: int) -> None: ...

    def get_context(self) -> dict[str, int]:
        """The user-mode registers the task resumes with (after a syscall: rip = return)."""
        ...

    def set_context(self, regs: dict[str, int]) -> None:
        """Resume in user mode with these registers instead (signals, sigreturn)."""
        ...

    def get_fpu(self) -> bytes: ...

    def set_fpu(self, state: bytes) -> None: ...

    def interruptible(self) -> bool:
        """Whether the task stopped in user code (a kick can land in the trampoline)."""
        ...

    def kick(self) -> None:
        """Make the vCPU leave guest mode soon (from any host thread)."""
        ...

    def runs_here(self) -> bool:
        """Whether the calling host thread is the one that runs the vCPU."""
        ...

    def start(self, regs: dict[str, int], fs_base: int, fpu: bytes | None = None) -> None:
        """Initial user-mode state; fpu: an XSAVE image (get_fpu) to start from, None:
        the FPU's reset state."""
        ...

    def run(self, loop: object, gate: object) -> None: ...


CpuT = TypeVar("CpuT", bound=Cpu)


class Machine(Protocol[CpuT]):
    """The platform as the kernel sees it: a source of vCPUs for new threads, each given
    back to the machine it came from."""

    def new_cpu(self) -> CpuT: ...

    def thread_cpu(self) -> CpuT:
        """A vCPU for a thread to start on (new_cpu, with what a thread's start brings)."""
        ...

    def release_cpu(self, cpu: CpuT) -> None: ...

    def launch(self, cpu: CpuT, body: Callable[[], None]) -> None:
        """Run body on a host thread for cpu (one the platform may keep for the vCPU's
        next thread), without waiting for it to start; body releases cpu before it ends.
        PlatformError if no thread can be had."""
        ...

    def close_workers(self) -> None:
        """The process has no threads left: the platform's idle host threads end."""
        ...

    def forked(self, in_use: Iterable[CpuT]) -> Machine[CpuT]:
        """In a forked monitor: a new machine over the same (inherited) guest memory; this
        one's vCPUs and in_use (the parent's threads') are closed, never used again."""
        ...

    def barrier(self, cpus: Iterable[CpuT]) -> None:
        """Each of cpus running guest code leaves guest mode once, which serialises its
        instruction stream and orders its memory accesses (membarrier(2))."""
        ...

    def allow_spins(self, on: bool) -> None:
        """Whether a thread may spin in the guest for another thread's futex wake: not
        while the process has more threads than CPU slots (the other cannot run)."""
        ...

    def overhead_cpu_ns(self) -> int:
        """Host CPU time the platform spent for none of the guest's threads (the fast
        transport's server polling for calls): not the guest process's CPU time."""
        ...

    def code_watcher(self) -> CodeWatcher | None:
        """What must hear of guest code going away (the fast transport's patcher)."""
        ...

    def fork_locks(self) -> list[tuple[object, str, type]]:
        """The platform's locks a host fork holds with the kernel's (owner, attribute,
        kind: forklocks.LockSite)."""
        ...


class Identity:
    __slots__ = ("uid", "gid", "euid", "egid", "suid", "sgid", "keepcaps", "dropped_caps",
                 "groups", "cap_effective", "cap_permitted", "cap_inheritable", "cap_ambient")

    def __init__(self, uid: int = 0, gid: int = 0, euid: int = 0, egid: int = 0) -> None:
        self.uid = uid
        self.gid = gid
        self.euid = euid
        self.egid = egid
        self.suid = euid  # saved set-user/group-ID (setresuid/setresgid)
        self.sgid = egid
        self.keepcaps = 0  # prctl(PR_SET_KEEPCAPS)
        self.dropped_caps = 0  # capabilities PR_CAPBSET_DROP took from the bounding set
        self.groups: tuple[int, ...] = ()  # supplementary groups (setgroups)
        self.cap_effective = self.cap_permitted = self.cap_inheritable = self.cap_ambient = 0
        caps.initial(self)  # karn/kernel/caps.py: bookkeeping, capget and capset


class KernelConfig:
    """Guest-visible settings fixed at start (execve replaces argv, envp and exe_path)."""

    __slots__ = ("hostname", "argv", "envp", "exe_path", "memory_limit", "ncpus")

    def __init__(
        self,
        hostname: str = "karn",
        argv: list[bytes] | None = None,
        envp: list[bytes] | None = None,
        exe_path: str = "/",  # guest path of the main program, for /proc/self/exe
        memory_limit: int = 512 << 20,
        ncpus: int = 1,
    ) -> None:
        self.hostname = hostname
        self.argv = [] if argv is None else argv
        self.envp = [] if envp is None else envp
        self.exe_path = exe_path
        self.memory_limit = memory_limit
        self.ncpus = ncpus


class ProcessExit(Exception):
    """Raised by exit_group to end every thread of the process."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ThreadExit(Exception):
    """Raised by exit (and by a thread told to stop) to end one host thread."""

    def __init__(self, status: int = 0) -> None:
        super().__init__(status)
        self.status = status


class Forked(BaseException):
    """Raised in a forked monitor on the forking thread (kernel/fork.py): it unwinds the
    parent's exit loop, and run_task calls become() instead of ending the thread."""

    def __init__(self, become: Callable[[], None]) -> None:
        super().__init__()
        self.become = become


class SignalSnapshot(NamedTuple):
    """A thread's state when it sent itself a fatal core-dumping signal (like a fault's)."""

    tid: int
    regs: dict[str, int]
    fs_base: int


COUNTED_SYSCALLS = 512  # x86-64 numbers are below this; larger ones are not counted


class Process:
    pid = 1
    ppid = 0

    def __init__(
        self,
        mem: GuestMemory,
        mm: AddressSpace,
        fs: FsContext,
        fds: FdTable,
        config: KernelConfig,
        machine: Machine[Any] | None = None,
        net: NetStack | None = None,
    ) -> None:
        self.mem = mem
        self.mm = mm
        self.fs = fs
        fs.bind_process(self)  # /proc shows this process, bound once, here
        self.fds = fds
        self.config = config
        self.machine = machine
        # the network stack (karn/kernel/net/stack.py); None: one with the default policy,
        # made on first use (net_of)
        self.net = net
        self.identity = Identity()
        self.tasks: dict[int, Task] = {}
        self.rlimits = default_rlimits(config.memory_limit)
        self.rlimit_ceilings: dict[int, int] = {}  # hard limits a policy set: not raisable
        self.start_monotonic = time.monotonic()
        self.cpu_base = monitor_times()  # the monitor's CPU time before the guest's (cputime)
        self.cpu_floor = CpuFloor()  # the CPU time reported last: never less (cputime)
        self.membarrier = 0  # the membarrier(2) commands registered (sys_thread)
        self.peak_resident = 0  # the most guest memory seen resident (getrusage's maxrss)
        self.dumpable = 1
        self.no_new_privs = False
        self.child_subreaper = False  # prctl(PR_SET_CHILD_SUBREAPER)
        # A PID namespace's init (an OCI container's program, karn/oci): as on Linux, a
        # signal it leaves at SIG_DFL is dropped, SIGKILL aside.
        self.namespace_init = False
        self.signal_lock = threading.RLock()
        self.actions = [SigAction() for _ in range(NSIG + 1)]
        self.pending = PendingSignals()
        self.job_stop = 0  # the signal that stopped the process (jobcontrol.py); 0: runs
        self.job_continues = 0  # SIGCONTs sent so far (jobcontrol.py)
        self.futex = FutexTable(mm.memory)
        self.timer_service = TimerService()
        self.itimer_real: Timer | None = None  # created on first use (sys_timer.py)
        self.cpu_itimers: dict[int, CpuTimer] = {}  # ITIMER_VIRTUAL/PROF, on first use
        self.cpu_timers: CpuTimerService | None = None  # their sampler (cputimers.py)
        self.posix_timers: dict[int, PosixTimer] = {}
        self.next_timer_id = 0
        self.gate = self.new_gate() if machine is not None else None
        self._next_tid = self.pid + 1
        # How it ended: exit status, the fatal signal (0: a normal exit) and, for a fault,
        # what the CPU reported — the runner (karn/run/runner.py) turns these into the
        # user's report.
        self.exit_status: int | None = None
        self.fatal_signal = 0
        self.fatal_core = False
        self.crash_fault: GuestFault | None = None
        self.fatal_snapshot: SignalSnapshot | None = None  # who raised a core signal
        # a forked process's full crash report (the runner's, which knows the guest)
        self.crash_reporter: Callable[[], None] | None = None
        self.limit_watch: Any = None  # policy.LimitWatch, for forked monitors to copy
        self.internal_failure: BaseException | None = None
        self.done = threading.Event()
        self.observer: Observer | None = None  # debug hooks (threads.py Observer), or none
        self.syscall_counts = [0] * COUNTED_SYSCALLS  # by number, for inspect and metrics
        self.syscall_table: dict | None = None  # None: all of syscalls.TABLE; or a policy's
        # execve (kernel/exec.py): how this VM loads programs (set with the first one; None:
        # execve fails with ENOEXEC), one execve at a time, and what the last one loaded
        # (None: still the first program)
        self.load_settings: LoadSettings | None = None
        self.exec_lock = threading.Lock()
        self.exec_path: str | None = None  # the path execve was given
        self.image: ProgramImage | None = None
        # the process table (kernel/link.py), from the first fork on; None: alone, pid 1
        self.link: Link | None = None

    # -- threads -----------------------------------------------------------------------

    def new_task(self) -> Task:
        limit = self.rlimits[RLIMIT_NPROC][0]
        link = self.link
        if link is not None:  # tids and pids come from one counter, the table's
            if len(self.tasks) >= limit:
                raise SyscallError(errno.EAGAIN)
            tid = link.call("new_tid")  # EAGAIN past --pids-limit
            with self.signal_lock:
                return Task(self, tid, None)
        with self.signal_lock:
            if len(self.tasks) >= limit:
                raise SyscallError(errno.EAGAIN)
            tid = self._next_tid
            self._next_tid += 1
            return Task(self, tid, None)

    def execed(self) -> None:
        """execve succeeded: the table learns it (a vfork parent resumes)."""
        if self.link is not None:
            leader = self.tasks.get(self.pid)
            self.link.call("exec", leader.comm.decode(errors="replace") if leader else "")

    def start_task(self, task: Task, regs: dict[str, int], fs_base: int,
                   fpu: bytes | None = None, gs_base: int = 0) -> None:
        """Give the task a vCPU and a host thread, and let it run from `regs` (and the FPU
        state `fpu`, or the reset one; the GS base `gs_base`, a clone's creator's)."""
        from karn.kernel.threads import run_task

        machine = self.machine
        assert machine is not None
        cpu = machine.thread_cpu()
        try:
            cpu.start(regs, fs_base, fpu)
            if gs_base:
                cpu.set_gs_base(gs_base)
        except BaseException:
            machine.release_cpu(cpu)
            raise
        task.cpu = cpu
        gate = self.gate
        if gate is not None:
            gate.thread_started(cpu, self.kick_others)
        try:
            machine.launch(cpu, lambda: run_task(task, gate))
        except BaseException:
            task.cpu = None
            if gate is not None:
                gate.thread_exited()
            machine.release_cpu(cpu)
            raise

    def new_gate(self) -> CpuGate:
        """The --cpus gate; while it is closed no futex wait spins in the guest (the
        partner a waiter spins for cannot run while the waiter holds the slot)."""
        return CpuGate(self.config.ncpus, self._gate_changed)

    def _gate_changed(self, gated: bool) -> None:
        if self.machine is not None:
            self.machine.allow_spins(not gated)

    def kick_others(self, new: object) -> None:
        """The gate closed as a thread starts on `new`: threads in guest mode hold no slot,
        so each is kicked out to take one. Not `new` (its first run passes the gate) nor
        the caller's own vCPU (it passes the gate before its next run): a kick there only
        made one more exit (two in every create+join under --cpus 1)."""
        for task in list(self.tasks.values()):
            cpu = task.cpu
            if cpu is not None and cpu is not new and not cpu.runs_here():
                cpu.kick()

    def task_exited(self, task: Task) -> None:
        """Thread teardown as Linux does it: robust futexes, clear_child_tid, last thread.
        Robust mutexes first (Linux's exit_mm_release): a joiner woken by the tid futex
        must already find the dead owner's mutexes marked EOWNERDEAD. And all the thread
        held (its tid, its --memory charge, its vCPU and host thread) is given back before
        that wake: a joiner's next pthread_create must find them free."""
        release_robust_futexes(task)
        with self.signal_lock:
            self.tasks.pop(task.tid, None)
            last = not self.tasks
            if last and self.exit_status is None:
                self.exit_status = task.exit_status
        if not last and self.link is not None:  # the process's own end is counted apart
            self.link.notify("thread_ended")
        if task.host_cost:
            self.mm.account.charge(-task.host_cost)
            task.host_cost = 0
        if self.gate is not None:
            self.gate.thread_exited()
        machine = self.machine
        if machine is not None and task.cpu is not None:
            machine.release_cpu(task.cpu)
        if task.clear_child_tid:
            try:
                task.mem.write_u32(task.clear_child_tid, 0)
                self.futex.wake(task.clear_child_tid, 1)
            except SyscallError:
                pass
        task.waker.close()
        if last:
            if machine is not None:
                machine.close_workers()
            self.done.set()

    def exit_group(self, status: int) -> None:
        with self.signal_lock:
            if self.exit_status is None:
                self.exit_status = status
            others = list(self.tasks.values())
        for task in others:
            task.exit_requested = True
            task.interrupt()
        # Linux's exit_group does not wait for the other threads to notice; neither do we
        # (one could be blocked in a host call that no signal reaches).
        self.done.set()

    def terminate_by_signal(self, sig: int, core: bool) -> None:
        with self.signal_lock:
            first = self.exit_status is None
            if first:
                self.fatal_signal, self.fatal_core = sig, core
        if first and core and self.crash_fault is None:
            self._snapshot_self_signal()
        self.exit_group(128 + sig)

    def _snapshot_self_signal(self) -> None:
        """abort(), raise(SIGSEGV)...: the thread that sent itself a core-dumping signal is
        the one serving the call now; keep its registers for the report and core dump."""
        me = threading.get_ident()
        task = next((t for t in list(self.tasks.values()) if t.host_thread == me), None)
        if task is None or task.cpu is None:
            return  # sent from outside (karn kill, a forwarded host signal)
        self.fatal_snapshot = SignalSnapshot(task.tid, task.cpu.get_context(),
                                             task.cpu.get_fs_base())
        if self.observer is not None:
            self.observer.crashed(task, self.fatal_snapshot)

    def crash(self, fault: GuestFault, sig: int) -> None:
        with self.signal_lock:
            if self.exit_status is None:
                self.crash_fault = fault
        self.terminate_by_signal(sig, core=True)

    def internal_error(self, err: BaseException) -> None:
        with self.signal_lock:
            if self.internal_failure is None:
                self.internal_failure = err
        self.exit_group(125)

    # -- signals -----------------------------------------------------------------------

    def _kills_process(self, sig: int) -> bool:
        """A signal whose default action ends the process ends it at once, as Linux does."""
        action = self.actions[sig]
        return sig == SIGKILL or (
            action.handler == SIG_DFL and default_action(sig) in ("terminate", "core")
        )

    def signal_process(self, info: SigInfo) -> None:
        jobcontrol.signal_sent(self, info.signo)
        self._signal_process(info)
        if info.signo == SIGCONT:  # after it is queued: a handler for it runs at once
            jobcontrol.continued(self)

    def _signal_process(self, info: SigInfo) -> None:
        sig = info.signo
        with self.signal_lock:
            for task in self.tasks.values():  # before their masks are read (slotmask.py)
                task.post_signal(sig)
            action = self.actions[sig]
            dropped = action.ignored(sig) or self.namespace_init and action.handler == SIG_DFL
            # a dropped signal still queues while blocked (a sigwaitinfo may take it), as Linux
            if dropped and sig != SIGKILL and not any(
                    t.blocked & bit(sig) for t in self.tasks.values()):
                return
            candidates = [t for t in self.tasks.values() if not t.blocked & bit(sig)]
            if self.job_stop and sig != SIGKILL:
                candidates = []  # stopped: only SIGKILL acts before a SIGCONT, as Linux
            if self._kills_process(sig) and (candidates or sig == SIGKILL):
                fatal = True
            else:
                fatal = False
                self.pending.add(info)
        if fatal:
            self.terminate_by_signal(sig, core=default_action(sig) == "core")
            return
        if candidates:
            candidates[0].notify_signal()
        else:  # all block it: a thread in sigtimedwait/sigwait may be waiting for it
            for task in list(self.tasks.values()):
                task.waker.wake()

    def signal_thread(self, task: Task, info: SigInfo) -> None:
        jobcontrol.signal_sent(self, info.signo)
        self._signal_thread(task, info)
        if info.signo == SIGCONT:
            jobcontrol.continued(self)

    def _signal_thread(self, task: Task, info: SigInfo) -> None:
        sig = info.signo
        with self.signal_lock:
            task.post_signal(sig)  # before its mask is read (slotmask.py)
            if self.actions[sig].ignored(sig) and sig != SIGKILL and not task.blocked & bit(sig):
                return
            fatal = self._kills_process(sig) and not task.blocked & bit(sig) \
                and (not self.job_stop or sig == SIGKILL)
            if not fatal:
                task.pending.add(info)
        if fatal:
            self.terminate_by_signal(sig, core=default_action(sig) == "core")
        elif not task.blocked & bit(sig):
            task.notify_signal()


class Task:
    """One guest thread."""

    def __init__(self, process: Process, tid: int, cpu: Cpu | None) -> None:
        self.process = process
        self.mem = process.mem
        self.tid = tid
        self.cpu = cpu
        self.clear_child_tid = 0
        self.robust_list = 0
        self.robust_list_len = 0
        self.comm = os.path.basename(process.config.exe_path).encode()[:15]
        self._blocked = 0
        # Where the mask lives while the thread runs on a vCPU whose fast-transport slot
        # holds it (the in-guest stub answers rt_sigprocmask); None: _blocked.
        self.slot_mask: MaskCell | None = None
        self.pending = PendingSignals()
        self.altstack = AltStack()
        self.saved_mask: int | None = None  # sigsuspend's mask, restored by the frame
        self.waker = Waker()
        self.loop: TaskLoop | None = None  # once running
        self.host_thread = 0  # while it runs (0: not yet, or no more)
        self.cpu_base = CpuTimes(0, 0)  # its host thread's CPU time when it began (cputime)
        self.exit_requested = False
        self.exit_status = 0
        self.sched_policy = 0
        self.sched_priority = 0
        self.nice = 0  # getpriority/setpriority: per thread, as Linux
        self.affinity = 0  # sched_setaffinity's guest CPUs (a bit each); 0: all
        self.pdeath_signal = 0  # prctl(PR_SET_PDEATHSIG)
        self.host_cost = 0  # host memory charged to --memory for this thread (sys_thread)
        process.tasks[tid] = self

    @property
    def vcpu(self) -> Cpu:
        """The vCPU of a started task: only those make syscalls, take signals, fault."""
        cpu = self.cpu
        if cpu is None:
            raise RuntimeError(f"thread {self.tid} has no vCPU")
        return cpu

    @property
    def blocked(self) -> int:
        cell = self.slot_mask
        return self._blocked if cell is None else cell.get()

    def set_blocked(self, mask: int) -> None:
        mask &= ~UNBLOCKABLE & FULL_MASK
        self._blocked = mask
        cell = self.slot_mask
        if cell is not None:
            cell.set(mask)
        if self.signal_pending() and self.loop is not None:
            self.loop.work_pending = True

    def keep_mask_in(self, cell: MaskCell | None) -> None:
        """The signal mask lives in `cell` from now on (None: in the task again); the
        thread is out of the guest."""
        with self.process.signal_lock:
            old = self.slot_mask
            if old is not None:
                self._blocked = old.get()
                old.enable(False)
            self.slot_mask = cell
            if cell is not None:
                cell.set(self._blocked)
                cell.set_pending(self.pending.mask | self.process.pending.mask)
                cell.enable(True)

    def post_signal(self, sig: int) -> None:
        """sig is about to be pending for this thread: tell its slot before the mask is
        read (slotmask.py); under the process's signal lock."""
        cell = self.slot_mask
        if cell is not None:
            cell.post(bit(sig))

    def refresh_posted(self) -> None:
        """Clear signals from the slot's pending set that are no longer pending."""
        if self.slot_mask is not None:
            with self.process.signal_lock:
                cell = self.slot_mask
                if cell is not None:
                    cell.set_pending(self.pending.mask | self.process.pending.mask)

    def signal_pending(self) -> bool:
        if self.exit_requested:
            return True
        pending = self.pending.mask | self.process.pending.mask
        return bool(pending) and bool(pending & ~self.blocked)  # (after every served call)

    def take_signal(self, allowed: int) -> SigInfo | None:
        with self.process.signal_lock:
            return self.pending.take(allowed) or self.process.pending.take(allowed)

    def notify_signal(self) -> None:
        if self.loop is not None:
            self.loop.work_pending = True
        self.interrupt()

    def interrupt(self) -> None:
        """Wake the task from a blocking wait and out of guest mode."""
        self.waker.wake()
        cpu = self.cpu
        if cpu is not None:
            cpu.kick()
            gate = self.process.gate
            if gate is not None:  # after the kick: its KVM_RUN must not run guest code
                gate.interrupt(cpu)

    def sigreturn(self) -> int:
        cpu = self.vcpu
        ctx = cpu.get_context()
        try:
            restored = read_frame(self.mem, ctx["rsp"], ctx, cpu.xsave_size)
            if restored.fpu is not None:
                cpu.set_fpu(restored.fpu)
        except (SyscallError, ValueError):
            self.process.terminate_by_signal(SIGSEGV, core=True)
            raise ThreadExit from None
        cpu.set_context(restored.regs)
        self.set_blocked(restored.blocked)
        return 0


ROBUST_LIST_LIMIT = 2048
FUTEX_OWNER_DIED = 0x40000000
FUTEX_TID_MASK = 0x3FFFFFFF
FUTEX_WAITERS = 0x80000000


def release_robust_futexes(task: Task) -> None:
    """Mark robust mutexes the dying thread holds as owner-died and wake a waiter."""
    task.process.futex.robust_list(task)  # as set in the guest (the fast transport)
    head = task.robust_list
    if not head:
        return
    mem = task.mem
    try:
        entry = mem.read_u64(head)
        offset = mem.read_u64(head + 8)
        offset = offset - (1 << 64) if offset >> 63 else offset
        pending = mem.read_u64(head + 16)
        seen = 0
        while entry != head and seen < ROBUST_LIST_LIMIT:
            _release_one(task, entry + offset)
            entry = mem.read_u64(entry)
            seen += 1
        if pending:
            _release_one(task, pending + offset)
    except SyscallError:
        pass  # a corrupt list ends the walk, as in Linux


def _release_one(task: Task, addr: int) -> None:
    value = task.mem.read_u32(addr)
    if value & FUTEX_TID_MASK == task.tid:
        task.mem.write_u32(addr, (value & FUTEX_WAITERS) | FUTEX_OWNER_DIED)
        task.process.futex.wake(addr, 1)
