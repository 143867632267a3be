"""Identity syscalls: pids, ids, uname. The guest is pid 1 in a world of its own."""

from __future__ import annotations

import errno
import os

from karn.abi.errno import SyscallError
from karn.abi.registers import s32
from karn.kernel.process import Task

UTS_FIELD = 65
KERNEL_RELEASE = "6.1.0-karn"
KERNEL_VERSION = "#1 SMP karn"


def sys_getpid(task: Task) -> int:
    return task.process.pid


def sys_gettid(task: Task) -> int:
    return task.tid


def sys_getppid(task: Task) -> int:
    return task.process.ppid


def sys_getuid(task: Task) -> int:
    return task.process.identity.uid


def sys_geteuid(task: Task) -> int:
    return task.process.identity.euid


def sys_getgid(task: Task) -> int:
    return task.process.identity.gid


def sys_getegid(task: Task) -> int:
    return task.process.identity.egid


def sys_getresuid(task: Task, ruid: int, euid: int, suid: int) -> int:
    ident = task.process.identity
    for addr, value in ((ruid, ident.uid), (euid, ident.euid), (suid, ident.euid)):
        task.mem.write_u32(addr, value)
    return 0


def sys_getresgid(task: Task, rgid: int, egid: int, sgid: int) -> int:
    ident = task.process.identity
    for addr, value in ((rgid, ident.gid), (egid, ident.egid), (sgid, ident.egid)):
        task.mem.write_u32(addr, value)
    return 0


def sys_getgroups(task: Task, size: int, addr: int) -> int:
    if s32(size) < 0:
        raise SyscallError(errno.EINVAL)
    return 0  # no supplementary groups


def _set_id(task: Task, value: int, attr_real: str, attr_eff: str) -> int:
    ident = task.process.identity
    value = s32(value)
    if value < 0:
        raise SyscallError(errno.EINVAL)
    if ident.euid != 0 and value not in (getattr(ident, attr_real), getattr(ident, attr_eff)):
        raise SyscallError(errno.EPERM)
    if ident.euid == 0:
        setattr(ident, attr_real, value)
    setattr(ident, attr_eff, value)
    return 0


def sys_setuid(task: Task, uid: int) -> int:
    return _set_id(task, uid, "uid", "euid")


def sys_setgid(task: Task, gid: int) -> int:
    return _set_id(task, gid, "gid", "egid")


def sys_getpgrp(task: Task) -> int:
    return task.process.pid


def sys_getpgid(task: Task, pid: int) -> int:
    _own_pid(task, pid)
    return task.process.pid


def sys_getsid(task: Task, pid: int) -> int:
    _own_pid(task, pid)
    return task.process.pid


def sys_setsid(task: Task) -> int:
    raise SyscallError(errno.EPERM)  # already a process-group leader, as Linux says


def sys_setpgid(task: Task, pid: int, pgid: int) -> int:
    _own_pid(task, pid)
    if s32(pgid) not in (0, task.process.pid):
        raise SyscallError(errno.EPERM)
    return 0


def _own_pid(task: Task, pid: int) -> None:
    if s32(pid) not in (0, task.process.pid):
        raise SyscallError(errno.ESRCH)


def _uts(text: str) -> bytes:
    return text.encode()[: UTS_FIELD - 1].ljust(UTS_FIELD, b"\0")


def sys_uname(task: Task, buf: int) -> int:
    fields = (
        "Linux",
        task.process.config.hostname,
        KERNEL_RELEASE,
        KERNEL_VERSION,
        os.uname().machine or "x86_64",
        "(none)",
    )
    task.mem.write(buf, b"".join(_uts(f) for f in fields))
    return 0


def sys_sethostname(task: Task, name: int, length: int) -> int:
    if task.process.identity.euid != 0:
        raise SyscallError(errno.EPERM)
    if length > UTS_FIELD - 1:
        raise SyscallError(errno.EINVAL)
    task.process.config.hostname = task.mem.read(name, length).decode(errors="replace")
    return 0


HANDLERS = {
    "getpid": sys_getpid,
    "gettid": sys_gettid,
    "getppid": sys_getppid,
    "getuid": sys_getuid,
    "geteuid": sys_geteuid,
    "getgid": sys_getgid,
    "getegid": sys_getegid,
    "getresuid": sys_getresuid,
    "getresgid": sys_getresgid,
    "getgroups": sys_getgroups,
    "setuid": sys_setuid,
    "setgid": sys_setgid,
    "getpgrp": sys_getpgrp,
    "getpgid": sys_getpgid,
    "getsid": sys_getsid,
    "setsid": sys_setsid,
    "setpgid": sys_setpgid,
    "uname": sys_uname,
    "sethostname": sys_sethostname,
}
