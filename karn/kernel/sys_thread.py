"""Thread syscalls: clone/clone3 for threads, exit, futex, and scheduling queries."""

from __future__ import annotations

import errno
import struct
import time

from karn import log
from karn.abi.errno import SyscallError
from karn.abi.registers import s32
from karn.errors import PlatformError
from karn.kernel.process import Task, ThreadExit
from karn.kernel.sys_time import NSEC, TIMESPEC

CLONE_VM = 0x100
CLONE_FS = 0x200
CLONE_FILES = 0x400
CLONE_SIGHAND = 0x800
CLONE_PIDFD = 0x1000
CLONE_PTRACE = 0x2000
CLONE_VFORK = 0x4000
CLONE_PARENT = 0x8000
CLONE_THREAD = 0x10000
CLONE_NEWNS = 0x20000
CLONE_SYSVSEM = 0x40000
CLONE_SETTLS = 0x80000
CLONE_PARENT_SETTID = 0x100000
CLONE_CHILD_CLEARTID = 0x200000
CLONE_DETACHED = 0x400000
CLONE_UNTRACED = 0x800000
CLONE_CHILD_SETTID = 0x1000000
CLONE_IO = 0x80000000
THREAD_FLAGS = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD
ALLOWED_THREAD_FLAGS = (THREAD_FLAGS | CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID
                        | CLONE_CHILD_CLEARTID | CLONE_CHILD_SETTID | CLONE_DETACHED
                        | CLONE_UNTRACED | CLONE_IO)
# What a guest thread costs the host beyond its guest memory, charged to --memory while it
# runs (clone fails with EAGAIN past it): measured ~35 KiB resident in the monitor (Python
# thread stack and objects, the kvm_run page) and ~120 KiB of host kernel memory (the vCPU,
# its kernel stack and page tables); rounded up for shadow paging's share.
THREAD_HOST_COST = 256 << 10

FUTEX_WAIT = 0
FUTEX_WAKE = 1
FUTEX_REQUEUE = 3
FUTEX_CMP_REQUEUE = 4
FUTEX_WAKE_OP = 5
FUTEX_WAIT_BITSET = 9
FUTEX_WAKE_BITSET = 10
FUTEX_PRIVATE_FLAG = 128
FUTEX_CLOCK_REALTIME = 256
FUTEX_CMD_MASK = ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME)

SCHED_OTHER, SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_IDLE = 0, 1, 2, 3, 5
SCHED_RESET_ON_FORK = 0x40000000
RR_TIMESLICE_NS = 100_000_000  # Linux's SCHED_RR quantum
FAIR_SLICE_NS = 3_000_000  # Linux's default slice for SCHED_OTHER (sched_base_slice)

_CLONE_ARGS = struct.Struct("<11Q")
# Sharing a process cannot have with another monitor's: its fd table, cwd, handlers.
SHARED_STATE_FLAGS = CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_PARENT | CLONE_PTRACE
_sharing_warned = False


def _new_process(task: Task, flags: int, stack: int, parent_tid: int, child_tid: int,
                 tls: int) -> int:
    """clone without CLONE_THREAD: a child process (kernel/fork.py). CLONE_VM|CLONE_VFORK
    (posix_spawn, Go's os/exec) is served as vfork: a copy, the parent waiting."""
    global _sharing_warned
    sharing = flags & SHARED_STATE_FLAGS or (flags & CLONE_VM and not flags & CLONE_VFORK)
    if sharing:
        if not _sharing_warned:
            _sharing_warned = True
            log.warning("clone: a child process sharing memory, files or handlers with its "
                        "parent (flags %#x) is not supported; returning -ENOSYS", flags)
        raise SyscallError(errno.ENOSYS)
    from karn.kernel.fork import fork_process

    return fork_process(task, flags, stack, parent_tid, child_tid, tls,
                        vfork=bool(flags & CLONE_VFORK))


def _clone(task: Task, flags: int, stack: int, parent_tid: int, child_tid: int, tls: int,
           exit_signal: int) -> int:
    if not flags & CLONE_THREAD:
        return _new_process(task, flags, stack, parent_tid, child_tid, tls)
    if flags & THREAD_FLAGS != THREAD_FLAGS or flags & CLONE_VFORK:
        raise SyscallError(errno.EINVAL)  # thread without shared VM/handlers: invalid
    if flags & ~ALLOWED_THREAD_FLAGS or exit_signal:
        raise SyscallError(errno.EINVAL)
    proc = task.process
    context = task.vcpu.get_context()
    context["rax"] = 0
    if stack:
        context["rsp"] = stack
    fs_base = tls if flags & CLONE_SETTLS else task.vcpu.get_fs_base()
    fpu = task.vcpu.get_fpu()  # Linux's clone copies the FPU state: rounding modes, MXCSR
    account = proc.mm.account
    if not account.charge(THREAD_HOST_COST):
        raise SyscallError(errno.EAGAIN)  # as clone under a memory cgroup's limit
    try:
        child = proc.new_task()
    except SyscallError:
        account.charge(-THREAD_HOST_COST)
        raise
    child.host_cost = THREAD_HOST_COST  # given back when its thread ends (threads.py)
    child.nice = task.nice  # inherited, as Linux's clone
    child.affinity = task.affinity
    try:
        if flags & CLONE_PARENT_SETTID:
            task.mem.write_u32(parent_tid, child.tid)
        if flags & CLONE_CHILD_SETTID:
            task.mem.write_u32(child_tid, child.tid)
        if flags & CLONE_CHILD_CLEARTID:
            child.clear_child_tid = child_tid
        child.set_blocked(task.blocked)
        # the GS base too: Linux's clone copies it (only the FS base is CLONE_SETTLS's)
        proc.start_task(child, context, fs_base, fpu, task.vcpu.get_gs_base())
    except (SyscallError, PlatformError) as err:  # no thread started: undo the task
        with proc.signal_lock:
            proc.tasks.pop(child.tid, None)
        if proc.link is not None:
            proc.link.notify("thread_ended")
        child.waker.close()
        account.charge(-THREAD_HOST_COST)
        raise SyscallError(err.errno if isinstance(err, SyscallError) else errno.EAGAIN) from None
    return child.tid


def sys_clone(task: Task, flags: int, stack: int, parent_tid: int, child_tid: int,
              tls: int) -> int:
    return _clone(task, flags & ~0xFF, stack, parent_tid, child_tid, tls, flags & 0xFF)


def sys_clone3(task: Task, uargs: int, size: int) -> int:
    if size < 64 or size > 4096:
        raise SyscallError(errno.EINVAL)
    raw = task.mem.read(uargs, min(size, _CLONE_ARGS.size)).ljust(_CLONE_ARGS.size, b"\0")
    (flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls,
     set_tid, set_tid_size, cgroup) = _CLONE_ARGS.unpack(raw)
    if set_tid or set_tid_size or cgroup or flags & CLONE_PIDFD:
        raise SyscallError(errno.EINVAL)
    top = stack + stack_size if stack else 0
    return _clone(task, flags, top, parent_tid, child_tid, tls, exit_signal)


def sys_fork(task: Task) -> int:
    return _new_process(task, 0, 0, 0, 0, 0)


def sys_vfork(task: Task) -> int:
    return _new_process(task, CLONE_VFORK, 0, 0, 0, 0)


def sys_exit(task: Task, status: int) -> int:
    raise ThreadExit(status & 0xFF)


def _timeout(task: Task, addr: int, absolute: bool, realtime: bool) -> float | None:
    """A futex timeout as a monotonic deadline in seconds."""
    if not addr:
        return None
    sec, nsec = TIMESPEC.unpack(task.mem.read(addr, TIMESPEC.size))
    if sec < 0 or not 0 <= nsec < NSEC:
        raise SyscallError(errno.EINVAL)
    value = sec + nsec / NSEC
    if not absolute:
        return time.monotonic() + value
    now = time.time() if realtime else time.monotonic()
    return time.monotonic() + (value - now)


def sys_futex(task: Task, uaddr: int, op: int, val: int, utime: int, uaddr2: int,
              val3: int) -> int:
    futex = task.process.futex
    op = s32(op)
    cmd = op & FUTEX_CMD_MASK
    realtime = bool(op & FUTEX_CLOCK_REALTIME)
    if realtime and cmd not in (FUTEX_WAIT, FUTEX_WAIT_BITSET):
        raise SyscallError(errno.ENOSYS)
    if cmd == FUTEX_WAIT:
        return futex.wait(task, uaddr, val, _timeout(task, utime, False, realtime))
    if cmd == FUTEX_WAIT_BITSET:
        if not val3 & 0xFFFFFFFF:
            raise SyscallError(errno.EINVAL)
        return futex.wait(task, uaddr, val, _timeout(task, utime, True, realtime),
                          val3 & 0xFFFFFFFF)
    count = s32(val)
    if cmd == FUTEX_WAKE:
        return futex.wake(uaddr, max(count, 0))
    if cmd == FUTEX_WAKE_BITSET:
        return futex.wake(uaddr, max(count, 0), val3 & 0xFFFFFFFF)
    nr_requeue = s32(utime)  # val2 travels in the timeout argument
    if cmd in (FUTEX_REQUEUE, FUTEX_CMP_REQUEUE):
        if count < 0 or nr_requeue < 0:
            raise SyscallError(errno.EINVAL)
        expected = val3 if cmd == FUTEX_CMP_REQUEUE else None
        return futex.requeue(task, uaddr, count, uaddr2, nr_requeue, expected)
    if cmd == FUTEX_WAKE_OP:
        return futex.wake_op(task, uaddr, max(count, 0), uaddr2, max(nr_requeue, 0), val3)
    raise SyscallError(errno.ENOSYS)


def _policy_target(task: Task, pid: int) -> Task:
    pid = s32(pid)
    if pid < 0:
        raise SyscallError(errno.EINVAL)
    target = task if pid == 0 else task.process.tasks.get(pid)
    if target is None:
        raise SyscallError(errno.ESRCH)
    return target


def sys_sched_getscheduler(task: Task, pid: int) -> int:
    return _policy_target(task, pid).sched_policy


def sys_sched_setscheduler(task: Task, pid: int, policy: int, param: int) -> int:
    target = _policy_target(task, pid)
    policy = s32(policy) & ~SCHED_RESET_ON_FORK
    if policy not in (SCHED_OTHER, SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_IDLE):
        raise SyscallError(errno.EINVAL)
    priority = s32(task.mem.read_u32(param))
    low, high = _priority_range(policy)
    if not low <= priority <= high:
        raise SyscallError(errno.EINVAL)
    target.sched_policy, target.sched_priority = policy, priority
    return 0


def sys_sched_getparam(task: Task, pid: int, param: int) -> int:
    task.mem.write_u32(param, _policy_target(task, pid).sched_priority)
    return 0


def sys_sched_setparam(task: Task, pid: int, param: int) -> int:
    target = _policy_target(task, pid)
    return sys_sched_setscheduler(task, target.tid, target.sched_policy, param)


def _priority_range(policy: int) -> tuple[int, int]:
    if policy in (SCHED_FIFO, SCHED_RR):
        return 1, 99
    if policy in (SCHED_OTHER, SCHED_BATCH, SCHED_IDLE):
        return 0, 0
    raise SyscallError(errno.EINVAL)


def sys_sched_get_priority_max(task: Task, policy: int) -> int:
    return _priority_range(s32(policy))[1]


def sys_sched_get_priority_min(task: Task, policy: int) -> int:
    return _priority_range(s32(policy))[0]


def _guest_cpus(task: Task) -> int:
    return (1 << task.process.config.ncpus) - 1


def _affinity_target(task: Task, pid: int) -> Task:
    """The thread pid names (0: the caller); ESRCH for any other, a negative pid included
    (not _policy_target's EINVAL: CPython grows its mask while the answer is EINVAL)."""
    target = task if s32(pid) == 0 else task.process.tasks.get(s32(pid))
    if target is None:
        raise SyscallError(errno.ESRCH)
    return target


def sys_sched_getaffinity(task: Task, pid: int, size: int, mask: int) -> int:
    needed = (task.process.config.ncpus + 63) // 64 * 8
    if size < needed or size & 7:
        raise SyscallError(errno.EINVAL)
    cpus = _affinity_target(task, pid).affinity or _guest_cpus(task)
    task.mem.write(mask, cpus.to_bytes(needed, "little"))
    return needed


def sys_sched_setaffinity(task: Task, pid: int, size: int, mask: int) -> int:
    target = _affinity_target(task, pid)
    cpus = int.from_bytes(task.mem.read(mask, min(size, 128)), "little") & _guest_cpus(task)
    if not cpus:
        raise SyscallError(errno.EINVAL)
    # recorded for the thread and its future children, not enforced: vCPUs float over the
    # host's CPUs (docs/syscalls.md)
    target.affinity = cpus
    return 0


# membarrier(2) commands: the private ones, whose barrier is this process's other
# threads each leaving guest mode once (Machine.barrier); a VM exit serialises a vCPU as
# the kernel's IPI does a CPU, so the SYNC_CORE forms are the same. The global ones would
# need every process sharing memory with this one: not offered (EINVAL, as a kernel
# without them); nor RSEQ (karn has no rseq).
MEMBARRIER_CMD_QUERY = 0
MEMBARRIER_PRIVATE_EXPEDITED = 1 << 3
MEMBARRIER_REGISTER_PRIVATE_EXPEDITED = 1 << 4
MEMBARRIER_PRIVATE_EXPEDITED_SYNC_CORE = 1 << 5
MEMBARRIER_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE = 1 << 6
MEMBARRIER_GET_REGISTRATIONS = 1 << 9
MEMBARRIER_OFFERED = (MEMBARRIER_PRIVATE_EXPEDITED | MEMBARRIER_REGISTER_PRIVATE_EXPEDITED
                      | MEMBARRIER_PRIVATE_EXPEDITED_SYNC_CORE
                      | MEMBARRIER_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE
                      | MEMBARRIER_GET_REGISTRATIONS)


def sys_membarrier(task: Task, cmd: int, flags: int, cpu_id: int) -> int:
    cmd = s32(cmd)
    if flags:
        raise SyscallError(errno.EINVAL)
    proc = task.process
    if cmd == MEMBARRIER_CMD_QUERY:
        return MEMBARRIER_OFFERED
    if cmd == MEMBARRIER_GET_REGISTRATIONS:
        return proc.membarrier
    if cmd in (MEMBARRIER_REGISTER_PRIVATE_EXPEDITED,
               MEMBARRIER_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE):
        proc.membarrier |= cmd
        return 0
    if cmd in (MEMBARRIER_PRIVATE_EXPEDITED, MEMBARRIER_PRIVATE_EXPEDITED_SYNC_CORE):
        if not proc.membarrier & cmd << 1:  # its registration's bit
            raise SyscallError(errno.EPERM)
        machine = proc.machine
        if machine is not None:
            with proc.signal_lock:
                others = [t.cpu for t in proc.tasks.values()
                          if t is not task and t.cpu is not None]
            machine.barrier(others)
        return 0
    raise SyscallError(errno.EINVAL)


def sys_sched_rr_get_interval(task: Task, pid: int, interval: int) -> int:
    target = _policy_target(task, pid)
    if target.sched_policy == SCHED_FIFO:
        ns = 0
    elif target.sched_policy == SCHED_RR:
        ns = RR_TIMESLICE_NS
    else:
        ns = FAIR_SLICE_NS
    task.mem.write(interval, struct.pack("<qq", *divmod(ns, 1_000_000_000)))
    return 0


HANDLERS = {
    "sched_rr_get_interval": sys_sched_rr_get_interval,
    "clone": sys_clone,
    "clone3": sys_clone3,
    "fork": sys_fork,
    "vfork": sys_vfork,
    "exit": sys_exit,
    "futex": sys_futex,
    "sched_getscheduler": sys_sched_getscheduler,
    "sched_setscheduler": sys_sched_setscheduler,
    "sched_getparam": sys_sched_getparam,
    "sched_setparam": sys_sched_setparam,
    "sched_get_priority_max": sys_sched_get_priority_max,
    "sched_get_priority_min": sys_sched_get_priority_min,
    "sched_setaffinity": sys_sched_setaffinity,
    "sched_getaffinity": sys_sched_getaffinity,
    "membarrier": sys_membarrier,
}

NOTES = {
    "sched_rr_get_interval": "SCHED_RR's 100 ms, 0 for SCHED_FIFO, Linux's default 3 ms "
    "slice otherwise (not the host's, which varies with its load).",
    "clone": "Threads, and processes as fork (CLONE_VM|CLONE_VFORK as vfork); a process "
    "sharing files, cwd or handlers with its parent gives ENOSYS.",
    "clone3": "As clone; set_tid, cgroup and pidfd are refused with EINVAL.",
    "vfork": "A fork (copy-on-write) whose parent waits until the child execs or exits: "
    "what the child writes is not seen by the parent.",
    "sched_setscheduler": "Recorded and reported back; the host schedules the vCPU "
    "threads as before.",
    "sched_setparam": "Recorded and reported back; the host schedules the vCPU threads as "
    "before.",
    "sched_setaffinity": "The mask (its guest CPUs; EINVAL if none) is recorded per thread, "
    "inherited by clone and fork and reported by sched_getaffinity; not enforced: the vCPU "
    "threads float over the host's CPUs.",
    "sched_getaffinity": "The thread's mask from sched_setaffinity, else the guest's --cpus "
    "(not the host's CPUs).",
    "membarrier": "The private expedited commands (and their SYNC_CORE forms): each other "
    "thread of the process running guest code leaves guest mode once; the global and "
    "RSEQ commands give EINVAL, as a kernel without them.",
}
