"""fork, vfork and clone without CLONE_VM: a new guest process is a new monitor process
with its own VM (docs/design/processes.md, sections 3 and 4).

The parent's monitor forks itself on the thread serving the call, holding the locks of
forklocks.py. Guest RAM is host anonymous memory, so the host kernel copies it on write;
the Python objects of the kernel state (fd table, signal dispositions, cwd, umask,
rlimits, credentials, memory map) are copied the same way. In the child, Forked unwinds
the parent's exit loop up to run_task, which calls become_child(): a fresh KVM VM over
the inherited memory (a VM cannot be shared across a fork; the page tables are in guest
RAM and a fresh VM reads them as they are), one vCPU started with the caller's registers
and rax = 0, and new per-process services (gate, futexes, timers, the link to the
process table). Only the calling thread lives on, as in Linux.

What the child shares with the parent, as Linux: every open file description that is a
host fd (pipes, sockets, eventfds, host and volume files, stdio), offsets included. What
it does not: in-monitor files (their offsets are copies from the fork on) and SCM_RIGHTS
tokens in flight. The tmpfs mounts move to a shared host directory at the first fork
(kernel/fs/sharedtmp.py), so /tmp is one file system for every process.

vfork is this fork with the parent suspended until the child execs or exits.
"""

from __future__ import annotations

import _socket as socket  # not socket.py, signal.py, weakref.py: ~2 ms of the first fork
import _thread
import errno
import os
import sys
import threading
import time
from _weakrefset import WeakSet
from collections.abc import Callable

from karn import log
from karn.abi.errno import SyscallError
from karn.abi.signals import SI_USER
from karn.hints import TYPE_CHECKING, NamedTuple
from karn.kernel import tty
from karn.kernel.cputime import CpuFloor, monitor_times
from karn.kernel.forklocks import (
    LockSite,
    drop_halfway_imports,
    process_locks,
    quiesced,
    renew,
)
from karn.kernel.fs.tmpfs import TmpFs
from karn.kernel.futex import FutexTable
from karn.kernel.limits import RLIMIT_NPROC
from karn.kernel.link import Link, RemoteLink
from karn.kernel.process import COUNTED_SYSCALLS, Forked, Task
from karn.kernel.proctable import exit_wstatus, signal_wstatus
from karn.kernel.signals import PendingSignals, SigInfo
from karn.kernel.sys_mm import map_moved_files, tmpfs_mappings, unlinked_mapped
from karn.kernel.syscalls import AREA_CALLS, area_module
from karn.kernel.timers import TimerService

if TYPE_CHECKING:
    import signal

    from karn.kernel.fs.context import FsContext
    from karn.kernel.process import Machine, Process
    from karn.kernel.threads import Observer
    from karn.loader.vdso import TimeSource
else:  # the C module: `signal` makes enums of its names at import
    import _signal as signal

CLONE_SETTLS = 0x80000
CLONE_PARENT_SETTID = 0x100000
CLONE_CHILD_CLEARTID = 0x200000
CLONE_CHILD_SETTID = 0x1000000
# Host signals a monitor passes to its guest process (a terminal's Ctrl-C reaches every
# monitor of the unikernel: they share karn's host process group).
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)
INTERNAL_FAILURE = 125
PAGE_FAULT = 14

# One fork at a time per monitor: a child must not inherit another child's link end.
_fork_lock = threading.Lock()
# What a child inherits and must never use or free: the parent's VM, vCPUs and tasks
# (the vCPUs' run pages are not mapped in the child: Vcpu maps them MADV_DONTFORK).
_inherited: list[object] = []
_areas_started = _areas_loaded = False  # every syscall area imported (_load_areas)
# File systems whose tmpfs mounts are host directories already (_share_tmpfs)
_tmpfs_shared: WeakSet[FsContext] = WeakSet()


class ChildStart(NamedTuple):
    """What the child needs of the forking thread, taken before the fork."""

    pid: int
    ppid: int
    regs: dict[str, int]
    fs_base: int
    gs_base: int
    fpu: bytes
    flags: int
    child_tid: int


def link_of(proc: Process) -> Link:
    """The process's link to the table; the first fork of the first process makes the
    table (coordinator.py)."""
    link = proc.link
    if link is None:
        from karn.kernel.coordinator import start_coordinator

        link = start_coordinator(proc, proc.rlimit_ceilings.get(RLIMIT_NPROC))
        proc.link = link
    return link


def fork_process(task: Task, flags: int, stack: int, parent_tid: int, child_tid: int,
                 tls: int, vfork: bool) -> int:
    proc = task.process
    if proc.machine is None:
        raise SyscallError(errno.ENOSYS)  # a process without a VM (never in a run)
    _share_tmpfs(proc)
    link = link_of(proc)
    pid = link.call("new_process", vfork)
    cpu = task.vcpu
    regs = cpu.get_context()
    regs["rax"] = 0
    if stack:
        regs["rsp"] = stack
    fs_base = tls if flags & CLONE_SETTLS else cpu.get_fs_base()
    start = ChildStart(pid, proc.pid, regs, fs_base, cpu.get_gs_base(), cpu.get_fpu(),
                       flags, child_tid)
    sites = [LockSite(proc.mm, "_lock", threading.Lock), *process_locks(proc),
             *(LockSite(*site) for site in proc.machine.fork_locks())]
    # What every child would import on its way (policy.LimitWatch.forked): imported once
    # here, or each child pays a module load.
    import copy  # noqa: F401
    with _fork_lock:
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        except OSError:
            link.call("forget", pid)
            raise SyscallError(errno.EAGAIN) from None
        # Host signals wait in this thread across the fork: until the child has installed
        # handlers of its own, the parent's would run in it, and a terminal signal's asks
        # the table through the parent's link (its copy of the socket is still open): the
        # answer went to the parent, whose listener died on a reply it never asked for.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _host_signals())
        try:
            link.attach_child(pid, ours)
            with quiesced(task, sites):
                host_pid = os.fork()
        except BaseException as err:  # no child: the table forgets the pid before its
            link.call("forget", pid)  # link closes (a link's EOF would make a zombie)
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            theirs.close()
            if isinstance(err, OSError):
                log.debug("fork: %s", err)
                raise SyscallError(errno.EAGAIN) from None
            raise
        finally:
            ours.close()
        if host_pid == 0:
            raise Forked(lambda: become_child(task, start, theirs, sites, held))
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
        theirs.close()
    _load_areas()
    if flags & CLONE_PARENT_SETTID:
        task.mem.write_u32(parent_tid, pid)
    if vfork:
        link.wait_released(task, pid)
    return pid


def _load_areas() -> None:
    """After this monitor's first fork, in the parent: every syscall area, so that later
    children find each loaded (else each would import what it calls). On a thread of its
    own, one area at a time (area_module holds the lock a fork takes only for one): the
    fork's child, the parent's guest and its next fork run meanwhile. Not before the first
    fork: ~5 ms on its critical path."""
    global _areas_started
    if _areas_started:
        return
    _areas_started = True

    def load() -> None:
        global _areas_loaded
        try:
            # execve first: what children call that their parent has not (the parent's
            # next forks may come before the rest is loaded)
            for area in sorted(AREA_CALLS, key=lambda area: area != "exec"):
                area_module(area)
        except Exception as err:  # a monitor bug: its first call will say it again
            log.warning("fork: syscall areas not loaded: %r", err)
            return
        _areas_loaded = True

    _thread.start_new_thread(load, ())


def _share_tmpfs(proc: Process) -> None:
    """The first fork moves the tmpfs mounts to a host directory all processes share
    (kernel/fs/sharedtmp.py); ENOMEM if the host cannot hold the copy. Shared mappings
    of their files become mappings of the host copies (sys_mm.map_moved_files)."""
    if proc.fs in _tmpfs_shared:  # mounts are made at start only: none is in memory now
        return
    with _fork_lock:
        vfs = proc.fs.vfs
        tmpfs = {path: fs for path, fs in vfs.mount_list() if isinstance(fs, TmpFs)}
        moved = tmpfs_mappings(proc.mem, proc.mm, tmpfs) if tmpfs else []
        try:
            shared = proc.fs.share_tmpfs(proc.fds, unlinked_mapped(moved))
        except OSError as err:
            log.warning("fork: the tmpfs mounts cannot be shared: %s", err)
            raise SyscallError(errno.ENOMEM) from None
        if shared.sockets and proc.net is not None:
            proc.net.socket_files_moved(shared.sockets)
        if proc.net is not None:  # its bound INET ports, for the processes to come
            proc.net.share_ports(os.path.join(proc.fs.shared_tmp.path(), ".inet"))
        if moved:
            map_moved_files(proc.mem, proc.mm, moved, dict(vfs.mount_list()),
                            shared.unlinked)
        for host_path in shared.unlinked.values():  # open and mapped now, as unlinked
            try:
                os.unlink(host_path)
            except OSError as err:  # left for the run's end (the directory goes)
                log.debug("fork: %s stays: %s", host_path, err)
        _tmpfs_shared.add(proc.fs)


# -- in the child ---------------------------------------------------------------------


def become_child(parent_task: Task, start: ChildStart, link_end: socket.socket,
                 sites: list[LockSite], signal_mask: set[int]) -> None:
    """The forked monitor's life: rebuild, run the one thread, report, end. Never
    returns (os._exit: the parent's Python state must not run its clean-ups here).
    signal_mask: the forking thread's host signal mask, restored once this monitor's
    own handlers are in place (the host signals are blocked until then)."""
    global _areas_started
    _areas_started = _areas_loaded  # a thread halfway through them is not in this monitor
    try:
        drop_halfway_imports()
        renew(sites)
        proc = parent_task.process
        task = _rebuild(proc, parent_task, start, link_end)
        _forward_host_signals(proc)
        signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)
        # Only now may the table's messages come: a SIGKILL before the task existed ended
        # the process with no thread told to exit, and the guest ran on.
        link = proc.link
        assert isinstance(link, RemoteLink)
        link.start(*_tending(proc))
        from karn.kernel.threads import run_task

        run_task(task, proc.gate)
        proc.done.wait()
        _finish(proc)
    except BaseException as err:  # a monitor bug in a child: say it, end the child (the
        # table hears of it as of a monitor killed: its link closes without a word)
        os.write(2, f"karn: forked process {start.pid}: internal error: {err!r}\n".encode())
    finally:
        os._exit(0)


def _rebuild(proc: Process, parent_task: Task, start: ChildStart,
             link_end: socket.socket) -> Task:
    old_link = proc.link
    assert old_link is not None
    old_link.close_in_child()
    machine = _drop_parent_threads(proc)
    proc.mm.code_watcher = machine.code_watcher()  # the child's fast-syscall patcher
    proc.machine = machine
    proc.pid, proc.ppid = start.pid, start.ppid
    _reset_process_state(proc)
    proc.observer = _child_observer(proc.observer)
    link = RemoteLink(proc, link_end)
    proc.link = link

    task = Task(proc, start.pid, None)
    task.comm = parent_task.comm
    task.set_blocked(parent_task.blocked)
    task.altstack = parent_task.altstack
    task.nice = parent_task.nice
    task.affinity = parent_task.affinity
    task.sched_policy, task.sched_priority = parent_task.sched_policy, parent_task.sched_priority
    if start.flags & CLONE_CHILD_SETTID:
        task.mem.write_u32(start.child_tid, start.pid)
    if start.flags & CLONE_CHILD_CLEARTID:
        task.clear_child_tid = start.child_tid
    clock = _time_page(proc)
    if clock is not None:
        clock.forked(machine)  # a sample's vCPU, if it takes one, is the task's next
    cpu = machine.new_cpu()
    cpu.start(start.regs, start.fs_base)
    cpu.set_fpu(start.fpu)
    if start.gs_base:
        cpu.set_gs_base(start.gs_base)
    task.cpu = cpu
    assert proc.gate is not None
    proc.gate.thread_started(cpu, proc.kick_others)
    return task


def _child_observer(observer: Observer | None) -> Observer | None:
    """What of the debug features follows a forked process (--trace; gdb, the syscall
    history, core dumps and the summary stay with the first process, as the design says
    of --gdb)."""
    return None if observer is None else observer.forked()


def _time_page(proc: Process) -> TimeSource | None:
    """The vDSO's time page, kept by this monitor (none with --no-vdso)."""
    settings = proc.load_settings
    return settings.clock if settings is not None else None


def _tending(proc: Process) -> tuple[Callable[[], float] | None, float]:
    """What the first monitor's main loop does for it (run/runner.py), for the link's
    listener to run: the limits (policy.py LimitWatch: RLIMIT_CPU and the --memory
    backstop, over this monitor's own CPU time and memory; the watch is made on the first
    round, off the fork's critical path) and the time page following the host's clocks
    (resync is cheap until its interval has passed). One round, returning the seconds to
    the next; and the seconds to the first."""
    inherited = proc.limit_watch
    clock = _time_page(proc)
    if inherited is None and clock is None:
        return None, 0.0
    watch = None

    def tend() -> float:
        nonlocal watch
        if inherited is not None:
            if watch is None:
                watch = proc.limit_watch = inherited.forked()
            watch.check()
        if clock is not None:
            clock.resync()
        return 1.0 if watch is None else watch.tick

    return tend, 1.0 if inherited is None else inherited.TICK


def _drop_parent_threads(proc: Process) -> Machine:
    """The parent's threads do not exist here: close what their objects hold open (vCPUs,
    wakers) without touching the objects otherwise, keep them from being freed, and
    return the child's machine (a fresh VM over the inherited memory)."""
    machine = proc.machine
    assert machine is not None
    old_tasks = list(proc.tasks.values())
    _inherited.append((machine, old_tasks))
    for task in old_tasks:
        try:
            os.close(task.waker.fd)
        except OSError:
            pass  # a waker its thread had closed already
    proc.tasks = {}
    return machine.forked(t.cpu for t in old_tasks if t.cpu is not None)


def _reset_process_state(proc: Process) -> None:
    """What a child does not inherit (fork(2)): pending signals, timers, CPU times and
    counters; and per-monitor services made anew."""
    proc.gate = proc.new_gate()
    proc.futex = FutexTable(proc.mm.memory)  # private futexes are per address space
    proc.mm.forked()
    proc.timer_service = TimerService()
    proc.itimer_real = None
    proc.cpu_itimers = {}
    proc.cpu_timers = None
    proc.posix_timers = {}
    proc.pending = PendingSignals()
    proc.exit_status = None
    proc.fatal_signal = 0
    proc.fatal_core = False
    proc.crash_fault = None
    proc.fatal_snapshot = None
    proc.internal_failure = None
    proc.done = threading.Event()
    proc.exec_lock = threading.Lock()
    proc.start_monotonic = time.monotonic()
    proc.cpu_base = monitor_times()
    proc.cpu_floor = CpuFloor()  # (the parent's lock may have been held at the fork)
    proc.peak_resident = 0
    proc.syscall_counts[:] = [0] * COUNTED_SYSCALLS


def _host_signals() -> tuple[int, ...]:
    return FORWARDED_SIGNALS + tty.host_signals()


def _forward_host_signals(proc: Process) -> None:
    """Host signals to this monitor go to its guest process (this thread is the child's
    main thread, where Python runs signal handlers)."""
    def forward(signum: int, frame: object) -> None:
        if tty.is_terminal_signal(signum):
            tty.deliver_terminal_signal(proc, signum)
        elif not proc.done.is_set():
            proc.signal_process(SigInfo.from_sender(signum, SI_USER, 0))

    for sig in _host_signals():
        signal.signal(sig, forward)


def _finish(proc: Process) -> None:
    """Shared file mappings written back, the exit told to the table; the wait status."""
    mm = proc.mm
    if mm.shared_files:
        from karn.kernel.sys_mm import write_back

        write_back(proc.mem, mm, 0, mm.region.user_end, forget=True)
    if proc.net is not None:
        proc.net.process_ended()
    locks = sys.modules.get("karn.kernel.fs.locks")  # loaded only if the process locked
    if locks is not None:
        locks.release_at_exit()
    if proc.internal_failure is not None:
        os.write(2, f"karn: process {proc.pid}: internal error: "
                    f"{proc.internal_failure!r}\n".encode())
        wstatus = exit_wstatus(INTERNAL_FAILURE)
    elif proc.fatal_signal:
        wstatus = signal_wstatus(proc.fatal_signal, proc.fatal_core)
        if proc.fatal_core:
            _report_crash(proc)
    else:
        wstatus = exit_wstatus(proc.exit_status or 0)
    assert proc.link is not None
    proc.link.notify("exit", wstatus)


def _report_crash(proc: Process) -> None:
    """A forked process that dumped core: the runner's full report (registers, code,
    backtrace), or one line when there is no runner: which process, program, and where."""
    if proc.crash_reporter is not None:
        proc.crash_reporter()
        return
    from karn.abi.signals import signal_name

    fault = proc.crash_fault
    where = ""
    if fault is not None:
        where = f" at rip {fault.rip:#x}"
        if fault.vector == PAGE_FAULT:
            where += f", address {fault.cr2:#x}"
    os.write(2, f"karn: process {proc.pid} ({proc.config.exe_path}) terminated by "
                f"{signal_name(proc.fatal_signal)}{where}\n".encode())
