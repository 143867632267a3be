"""Process-wide odds and ends: exit, limits, randomness, arch_prctl, thread bookkeeping."""

from __future__ import annotations

import errno
import os
import struct
import time

from karn.abi.errno import SyscallError
from karn.abi.registers import s32
from karn.kernel import caps
from karn.kernel.futex import ROBUST_LIST_HEAD_SIZE
from karn.kernel.limits import (
    NR_OPEN,
    RLIM_NLIMITS,
    RLIMIT_NICE,
    RLIMIT_NOFILE,
    host_nofile_hard,
)
from karn.kernel.process import ProcessExit, Task
from karn.kernel.signals import check_signal

ARCH_SET_GS = 0x1001
ARCH_SET_FS = 0x1002
ARCH_GET_FS = 0x1003
ARCH_GET_GS = 0x1004
ARCH_GET_CPUID = 0x1011
ARCH_SET_CPUID = 0x1012

GRND_NONBLOCK = 1
GRND_RANDOM = 2
GRND_INSECURE = 4
GETRANDOM_MAX = 33554431  # Linux caps one call at 32 MiB - 1

PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_GET_KEEPCAPS = 7
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_GET_NAME = 16
PR_GET_SECCOMP = 21
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47

RLIMIT = struct.Struct("<QQ")
USER_ADDR_LIMIT = 1 << 47  # canonical user-half addresses


def sys_exit_group(task: Task, status: int) -> int:
    raise ProcessExit(status & 0xFF)


def sys_arch_prctl(task: Task, code: int, addr: int) -> int:
    code = s32(code)
    if code in (ARCH_SET_FS, ARCH_SET_GS):
        if addr >= USER_ADDR_LIMIT:
            raise SyscallError(errno.EPERM)
        (task.vcpu.set_fs_base if code == ARCH_SET_FS else task.vcpu.set_gs_base)(addr)
        return 0
    if code in (ARCH_GET_FS, ARCH_GET_GS):
        value = task.vcpu.get_fs_base() if code == ARCH_GET_FS else task.vcpu.get_gs_base()
        task.mem.write_u64(addr, value)
        return 0
    if code == ARCH_GET_CPUID:
        return 1  # cpuid is not faulting
    raise SyscallError(errno.EINVAL)


def sys_set_tid_address(task: Task, tidptr: int) -> int:
    task.clear_child_tid = tidptr
    return task.tid


def sys_set_robust_list(task: Task, head: int, length: int) -> int:
    if length != ROBUST_LIST_HEAD_SIZE:
        raise SyscallError(errno.EINVAL)
    task.process.futex.robust_list(task)  # one answered in the guest before is older
    task.robust_list, task.robust_list_len = head, length
    return 0


def sys_get_robust_list(task: Task, pid: int, head_ptr: int, len_ptr: int) -> int:
    if s32(pid) not in (0, task.tid):
        raise SyscallError(errno.ESRCH)
    task.process.futex.robust_list(task)
    task.mem.write_u64(head_ptr, task.robust_list)
    task.mem.write_u64(len_ptr, ROBUST_LIST_HEAD_SIZE)
    return 0


def sys_getrandom(task: Task, buf: int, count: int, flags: int) -> int:
    if s32(flags) & ~(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE):
        raise SyscallError(errno.EINVAL)
    count = min(count, GETRANDOM_MAX)
    task.mem.write(buf, os.urandom(count))
    return count


def _rlimit_resource(resource: int) -> int:
    resource = s32(resource)
    if not 0 <= resource < RLIM_NLIMITS:
        raise SyscallError(errno.EINVAL)
    return resource


def _set_rlimit(task: Task, resource: int, soft: int, hard: int) -> None:
    old_soft, old_hard = task.process.rlimits[resource]
    if soft > hard:
        raise SyscallError(errno.EINVAL)
    if resource == RLIMIT_NOFILE and hard > max(host_nofile_hard(), old_hard):
        raise SyscallError(errno.EPERM)  # beyond nr_open: Linux's EPERM, root included
    if hard > old_hard and (task.process.identity.euid != 0
                            or hard > task.process.rlimit_ceilings.get(resource, hard)):
        raise SyscallError(errno.EPERM)  # a policy's limit binds root too (no CAP_SYS_RESOURCE)
    task.process.rlimits[resource] = (soft, hard)
    if resource == RLIMIT_NOFILE:
        task.process.fds.limit = min(soft, NR_OPEN)


def sys_prlimit64(task: Task, pid: int, resource: int, new: int, old: int) -> int:
    if s32(pid) not in (0, task.process.pid):
        raise SyscallError(errno.ESRCH)
    resource = _rlimit_resource(resource)
    current = task.process.rlimits[resource]
    wanted = RLIMIT.unpack(task.mem.read(new, RLIMIT.size)) if new else None
    if old:
        task.mem.write(old, RLIMIT.pack(*current))
    if wanted is not None:
        _set_rlimit(task, resource, *wanted)
    return 0


def sys_getrlimit(task: Task, resource: int, rlim: int) -> int:
    resource = _rlimit_resource(resource)
    task.mem.write(rlim, RLIMIT.pack(*task.process.rlimits[resource]))
    return 0


def sys_setrlimit(task: Task, resource: int, rlim: int) -> int:
    resource = _rlimit_resource(resource)
    _set_rlimit(task, resource, *RLIMIT.unpack(task.mem.read(rlim, RLIMIT.size)))
    return 0


_SYSINFO = struct.Struct("<q3Q6QHH4xQQI4x")  # struct sysinfo, 112 bytes on x86-64


def sys_sysinfo(task: Task, info: int) -> int:
    proc = task.process
    total = proc.config.memory_limit
    free = max(total - proc.mm.mapped_bytes, 0)
    uptime = int(time.monotonic() - proc.start_monotonic) + 1
    loads = (0, 0, 0)
    ram = (total, free, 0, 0, 0, 0)  # total, free, shared, buffer, totalswap, freeswap
    packed = _SYSINFO.pack(uptime, *loads, *ram, len(proc.tasks), 0, 0, 0, 1)
    task.mem.write(info, packed)
    return 0


def sys_sched_yield(task: Task) -> int:
    gate = task.process.gate
    if gate is not None and task.cpu is not None:
        gate.yield_slot(task.cpu)  # back in the queue behind every thread waiting now
    os.sched_yield()
    return 0


PRIO_PROCESS, PRIO_PGRP, PRIO_USER = 0, 1, 2
NICE_MIN, NICE_MAX = -20, 19


def _priority_targets(task: Task, which: int, who: int) -> list[Task]:
    """The threads getpriority/setpriority act on: PRIO_PROCESS names one thread (0: the
    caller), PRIO_PGRP the process group (all, the guest is one), PRIO_USER the threads
    of a user (all, or none)."""
    which, who = s32(which), s32(who)
    proc = task.process
    if which == PRIO_PROCESS:
        target = task if who == 0 else proc.tasks.get(who)
        targets = [] if target is None else [target]
    elif which == PRIO_PGRP:
        targets = list(proc.tasks.values()) if who in (0, proc.pid) else []
    elif which == PRIO_USER:
        uid = proc.identity.uid
        targets = list(proc.tasks.values()) if who in (0, uid) else []
    else:
        raise SyscallError(errno.EINVAL)
    if not targets:
        raise SyscallError(errno.ESRCH)
    return targets


def sys_getpriority(task: Task, which: int, who: int) -> int:
    # The raw call returns 20 - nice (1..40), never negative; libc turns it back.
    return max(20 - t.nice for t in _priority_targets(task, which, who))


def sys_setpriority(task: Task, which: int, who: int, prio: int) -> int:
    targets = _priority_targets(task, which, who)
    nice = min(max(s32(prio), NICE_MIN), NICE_MAX)
    limit = task.process.rlimits[RLIMIT_NICE][0]
    for target in targets:
        # Raising the priority needs CAP_SYS_NICE (root) or room under RLIMIT_NICE.
        if nice < target.nice and 20 - nice > limit and task.process.identity.euid != 0:
            raise SyscallError(errno.EACCES)
    for target in targets:
        target.nice = nice
    return 0


def sys_getcpu(task: Task, cpu: int, node: int, cache: int) -> int:
    if cpu:
        task.mem.write_u32(cpu, 0)
    if node:
        task.mem.write_u32(node, 0)
    return 0


SECCOMP_MODE_FILTER = 2


def _flag(value: int) -> int:
    """A prctl on/off argument: 0 or 1, EINVAL otherwise."""
    if value not in (0, 1):
        raise SyscallError(errno.EINVAL)
    return value


def _prctl_caps(task: Task, option: int, arg2: int, arg3: int) -> int:
    """The capability bounding and ambient sets (karn/kernel/caps.py)."""
    ident = task.process.identity
    if option == PR_CAP_AMBIENT:
        if arg2 not in (caps.AMBIENT_IS_SET, caps.AMBIENT_RAISE, caps.AMBIENT_LOWER,
                        caps.AMBIENT_CLEAR_ALL):
            raise SyscallError(errno.EINVAL)
        if arg2 != caps.AMBIENT_CLEAR_ALL and arg3 > caps.CAP_LAST_CAP:
            raise SyscallError(errno.EINVAL)
        try:
            return caps.ambient(ident, arg2, arg3)
        except PermissionError:
            raise SyscallError(errno.EPERM) from None
    if arg2 > caps.CAP_LAST_CAP:
        raise SyscallError(errno.EINVAL)
    if option == PR_CAPBSET_READ:
        return caps.bounding(ident) >> arg2 & 1
    if not ident.cap_effective >> caps.CAP_SETPCAP & 1:
        raise SyscallError(errno.EPERM)  # PR_CAPBSET_DROP needs CAP_SETPCAP
    ident.dropped_caps |= 1 << arg2
    return 0


def sys_prctl(task: Task, option: int, arg2: int, arg3: int, arg4: int, arg5: int) -> int:
    option = s32(option)
    proc = task.process
    if option == PR_SET_NAME:
        task.comm = task.mem.read_cstring(arg2, 16)[:15]
        return 0
    if option == PR_GET_NAME:
        task.mem.write(arg2, task.comm.ljust(16, b"\0"))
        return 0
    if option == PR_GET_DUMPABLE:
        return proc.dumpable
    if option == PR_SET_DUMPABLE:
        proc.dumpable = _flag(arg2)
        return 0
    if option == PR_SET_NO_NEW_PRIVS:
        if arg2 != 1 or arg3 or arg4 or arg5:
            raise SyscallError(errno.EINVAL)
        proc.no_new_privs = True
        return 0
    if option == PR_GET_NO_NEW_PRIVS:
        return int(proc.no_new_privs)
    if option == PR_SET_PDEATHSIG:
        # Recorded only: the parent, the monitor, outlives the guest by construction.
        task.pdeath_signal = check_signal(s32(arg2), allow_zero=True)
        return 0
    if option == PR_GET_PDEATHSIG:
        task.mem.write_u32(arg2, task.pdeath_signal)
        return 0
    if option == PR_SET_KEEPCAPS:
        proc.identity.keepcaps = _flag(arg2)
        return 0
    if option == PR_GET_KEEPCAPS:
        return proc.identity.keepcaps
    if option == PR_SET_CHILD_SUBREAPER:
        proc.child_subreaper = bool(arg2)  # no children: nothing to reap
        return 0
    if option == PR_GET_CHILD_SUBREAPER:
        task.mem.write_u32(arg2, int(proc.child_subreaper))
        return 0
    if option == PR_GET_SECCOMP:
        # A policy's syscall allow-list works as a seccomp filter would.
        return SECCOMP_MODE_FILTER if proc.syscall_table is not None else 0
    if option in (PR_CAPBSET_READ, PR_CAPBSET_DROP, PR_CAP_AMBIENT):
        return _prctl_caps(task, option, arg2, arg3)
    raise SyscallError(errno.EINVAL)


def sys_ptrace(task: Task, request: int, pid: int, addr: int, data: int) -> int:
    # The guest has nothing to trace (one process) and must never reach the monitor or a
    # host process: refused as for a process without CAP_SYS_PTRACE.
    raise SyscallError(errno.EPERM)


HANDLERS = {
    "exit_group": sys_exit_group,
    "ptrace": sys_ptrace,
    "arch_prctl": sys_arch_prctl,
    "set_tid_address": sys_set_tid_address,
    "set_robust_list": sys_set_robust_list,
    "get_robust_list": sys_get_robust_list,
    "getrandom": sys_getrandom,
    "prlimit64": sys_prlimit64,
    "getrlimit": sys_getrlimit,
    "setrlimit": sys_setrlimit,
    "sysinfo": sys_sysinfo,
    "sched_yield": sys_sched_yield,
    "getcpu": sys_getcpu,
    "getpriority": sys_getpriority,
    "setpriority": sys_setpriority,
    "prctl": sys_prctl,
}

NOTES = {
    "prctl": "PR_SET/GET_NAME, DUMPABLE, NO_NEW_PRIVS, KEEPCAPS, CHILD_SUBREAPER, "
    "PDEATHSIG (recorded: the parent, the monitor, outlives the guest), PR_GET_SECCOMP (2 "
    "under a policy's syscall list), PR_CAPBSET_READ/DROP and PR_CAP_AMBIENT (bookkeeping, "
    "as capget says); other options EINVAL.",
    "arch_prctl": "ARCH_SET/GET_FS/GS; ARCH_GET_CPUID reads 1 (cpuid never faults); "
    "ARCH_SET_CPUID and other codes EINVAL.",
    "getpriority": "Nice values are recorded per thread; the host schedules the vCPU "
    "threads as it does the monitor's.",
    "setpriority": "Recorded per thread (EACCES past RLIMIT_NICE unless root), not applied "
    "to the host threads.",
    "getcpu": "Always CPU 0, node 0, whichever vCPU runs the thread.",
    "sysinfo": "totalram is --memory and freeram what the guest has not mapped; load "
    "averages, shared, buffer and swap are 0; procs counts the guest's threads.",
}
