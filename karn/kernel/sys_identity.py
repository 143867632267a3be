"""Identity syscalls: pids, ids, uname. The guest is pid 1 in a world of its own."""

from __future__ import annotations

import errno
import os
import struct
import sys

from karn.abi.errno import SyscallError
from karn.abi.registers import s32
from karn.kernel import caps
from karn.kernel.process import Identity, Task

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
    for addr, value in ((ruid, ident.uid), (euid, ident.euid), (suid, ident.suid)):
        task.mem.write_u32(addr, value)
    return 0


def sys_getresgid(task: Task, rgid: int, egid: int, sgid: int) -> int:
    ident = task.process.identity
    for addr, value in ((rgid, ident.gid), (egid, ident.egid), (sgid, ident.sgid)):
        task.mem.write_u32(addr, value)
    return 0


NGROUPS_MAX = 65536


def sys_getgroups(task: Task, size: int, addr: int) -> int:
    size = s32(size)
    groups = task.process.identity.groups
    if size < 0 or (size and size < len(groups)):
        raise SyscallError(errno.EINVAL)
    if size and groups:
        task.mem.write(addr, struct.pack(f"<{len(groups)}I", *groups))
    return len(groups)


def sys_setgroups(task: Task, size: int, addr: int) -> int:
    """The supplementary groups: recorded for getgroups (file access checks use the
    owner and the guest's ids only); setting them takes CAP_SETGID, as Linux's."""
    size = s32(size)
    if not 0 <= size <= NGROUPS_MAX:
        raise SyscallError(errno.EINVAL)
    ident = task.process.identity
    if ident.euid != 0:
        raise SyscallError(errno.EPERM)
    raw = task.mem.read(addr, 4 * size) if size else b""
    ident.groups = struct.unpack(f"<{size}I", raw)
    return 0


# The guest's privilege is its effective uid: root (0) has CAP_SETUID and CAP_SETGID.
_UIDS = ("uid", "euid", "suid")
_GIDS = ("gid", "egid", "sgid")
UNCHANGED = 0xFFFFFFFF  # -1 as an id_t: leave this id alone


def _id_arg(value: int) -> int | None:
    value &= 0xFFFFFFFF
    return None if value == UNCHANGED else value


def _set_ids(task: Task, names: tuple[str, str, str], wanted: tuple[int | None, ...]) -> int:
    """setres[ug]id: each id set (not None) must be one of the current three, unless
    the caller is privileged; all or nothing."""
    ident = task.process.identity
    current = {getattr(ident, name) for name in names}
    if ident.euid != 0 and any(v is not None and v not in current for v in wanted):
        raise SyscallError(errno.EPERM)
    _assign(ident, names, wanted)
    return 0


def _assign(ident: Identity, names: tuple[str, str, str], values: tuple[int | None, ...]
            ) -> None:
    """Set the ids; a change of uids changes the capability sets as on Linux."""
    old_uids = ident.uid, ident.euid, ident.suid
    for name, value in zip(names, values, strict=True):
        if value is not None:
            setattr(ident, name, value)
    if names is _UIDS:
        caps.uids_changed(ident, *old_uids)


def _set_one(task: Task, value: int, names: tuple[str, str, str]) -> int:
    """set[ug]id: privileged sets all three; otherwise the effective one, to the real or
    saved id only."""
    wanted = _id_arg(value)
    if wanted is None:
        raise SyscallError(errno.EINVAL)
    ident = task.process.identity
    real, _, saved = (getattr(ident, name) for name in names)
    if ident.euid == 0:
        return _set_ids(task, names, (wanted, wanted, wanted))
    if wanted not in (real, saved):
        raise SyscallError(errno.EPERM)
    return _set_ids(task, names, (None, wanted, None))


def _set_re(task: Task, real: int, effective: int, names: tuple[str, str, str]) -> int:
    """setre[ug]id: the real id may become the real or effective one, the effective any
    of the three (anything when privileged); the saved id follows the new effective one
    when the real one is set or the effective one differs from the old real one."""
    ident = task.process.identity
    old_real, old_eff, old_saved = (getattr(ident, name) for name in names)
    new_real, new_eff = _id_arg(real), _id_arg(effective)
    if ident.euid != 0 and (
        (new_real is not None and new_real not in (old_real, old_eff))
        or (new_eff is not None and new_eff not in (old_real, old_eff, old_saved))
    ):
        raise SyscallError(errno.EPERM)
    saved = None
    if new_real is not None or (new_eff is not None and new_eff != old_real):
        saved = old_eff if new_eff is None else new_eff
    _assign(ident, names, (new_real, new_eff, saved))
    return 0


def sys_setuid(task: Task, uid: int) -> int:
    return _set_one(task, uid, _UIDS)


def sys_setgid(task: Task, gid: int) -> int:
    return _set_one(task, gid, _GIDS)


def sys_setresuid(task: Task, ruid: int, euid: int, suid: int) -> int:
    return _set_ids(task, _UIDS, (_id_arg(ruid), _id_arg(euid), _id_arg(suid)))


def sys_setresgid(task: Task, rgid: int, egid: int, sgid: int) -> int:
    return _set_ids(task, _GIDS, (_id_arg(rgid), _id_arg(egid), _id_arg(sgid)))


def sys_setreuid(task: Task, ruid: int, euid: int) -> int:
    return _set_re(task, ruid, euid, _UIDS)


def sys_setregid(task: Task, rgid: int, egid: int) -> int:
    return _set_re(task, rgid, egid, _GIDS)


# capget/capset's header versions: v1 has one 32-bit word per set, v2 and v3 two.
CAP_VERSION_1, CAP_VERSION_2, CAP_VERSION_3 = 0x19980330, 0x20071026, 0x20080522
_CAP_WORDS = {CAP_VERSION_1: 1, CAP_VERSION_2: 2, CAP_VERSION_3: 2}
_CAP_DATA = struct.Struct("<3I")  # one word of effective, permitted, inheritable


def _cap_header(task: Task, header: int) -> tuple[int, int]:
    """The header's number of words per set and pid. An unknown version: the version
    this kernel prefers is written back and the call is EINVAL (how libcap asks)."""
    words = _CAP_WORDS.get(task.mem.read_u32(header))
    if words is None:
        task.mem.write_u32(header, CAP_VERSION_3)
        raise SyscallError(errno.EINVAL)
    return words, s32(task.mem.read_u32(header + 4))


def _caps_process(task: Task, pid: int) -> None:
    """capget's pid: 0, or a thread of this process (its sets are the process's). Another
    process's sets live in its own monitor: ESRCH, a documented gap."""
    if pid < 0:
        raise SyscallError(errno.EINVAL)
    if pid not in (0, task.process.pid) and pid not in task.process.tasks:
        raise SyscallError(errno.ESRCH)


def sys_capget(task: Task, header: int, data: int) -> int:
    try:
        words, pid = _cap_header(task, header)
    except SyscallError as err:
        if err.errno == errno.EINVAL and not data:
            return 0  # a NULL data pointer only asks for the version
        raise
    if not data:
        return 0
    _caps_process(task, pid)
    ident = task.process.identity
    sets = (ident.cap_effective, ident.cap_permitted, ident.cap_inheritable)
    task.mem.write(data, b"".join(_CAP_DATA.pack(*(s >> 32 * w & 0xFFFFFFFF for s in sets))
                                  for w in range(words)))
    return 0


def sys_capset(task: Task, header: int, data: int) -> int:
    words, pid = _cap_header(task, header)
    if pid not in (0, task.tid):
        raise SyscallError(errno.EPERM)  # only the caller's own sets
    raw = task.mem.read(data, _CAP_DATA.size * words)
    effective = permitted = inheritable = 0
    for w in range(words):
        e, p, i = _CAP_DATA.unpack_from(raw, _CAP_DATA.size * w)
        effective, permitted = effective | e << 32 * w, permitted | p << 32 * w
        inheritable |= i << 32 * w
    valid = caps.ALL_CAPS
    if not caps.set_sets(task.process.identity, effective & valid, permitted & valid,
                         inheritable & valid):
        raise SyscallError(errno.EPERM)
    return 0


def sys_getpgrp(task: Task) -> int:
    return sys_getpgid(task, 0)


def sys_getpgid(task: Task, pid: int) -> int:
    link = task.process.link
    if link is None:  # alone: pid 1 leads its group and session
        _own_pid(task, pid)
        return task.process.pid
    return link.call("getpgid", _pid_arg(pid))


def sys_getsid(task: Task, pid: int) -> int:
    link = task.process.link
    if link is None:
        _own_pid(task, pid)
        return task.process.pid
    return link.call("getsid", _pid_arg(pid))


def sys_setsid(task: Task) -> int:
    link = task.process.link
    if link is None:
        raise SyscallError(errno.EPERM)  # pid 1 already leads a process group
    sid = link.call("setsid")
    pty = sys.modules.get("karn.kernel.fs.pty")  # loaded if the guest opened a pty
    if pty is not None:
        pty.PTYS.drop_controlling()  # a new session has no controlling terminal
    return sid


def sys_setpgid(task: Task, pid: int, pgid: int) -> int:
    link = task.process.link
    if link is None:
        _own_pid(task, pid)
        if s32(pgid) not in (0, task.process.pid):
            raise SyscallError(errno.EPERM)
        return 0
    if s32(pgid) < 0:
        raise SyscallError(errno.EINVAL)
    link.call("setpgid", _pid_arg(pid), s32(pgid))
    return 0


def _pid_arg(pid: int) -> int:
    pid = s32(pid)
    if pid < 0:
        raise SyscallError(errno.ESRCH)
    return pid


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
    "setgroups": sys_setgroups,
    "setuid": sys_setuid,
    "setgid": sys_setgid,
    "setresuid": sys_setresuid,
    "setresgid": sys_setresgid,
    "setreuid": sys_setreuid,
    "setregid": sys_setregid,
    "getpgrp": sys_getpgrp,
    "getpgid": sys_getpgid,
    "getsid": sys_getsid,
    "setsid": sys_setsid,
    "setpgid": sys_setpgid,
    "uname": sys_uname,
    "sethostname": sys_sethostname,
    "capget": sys_capget,
    "capset": sys_capset,
}

NOTES = {
    "capget": "The sets are bookkeeping (karn/kernel/caps.py): root's are the full set "
    "without the capabilities karn refuses (SYS_PTRACE, SYS_RESOURCE, SYS_TIME, "
    "WAKE_ALARM), changed by capset, set*uid and execve as on Linux; karn's permission "
    "checks go by the effective uid. Another process's sets: ESRCH (they are in its "
    "monitor).",
    "capset": "Linux's rules (permitted only shrinks, effective within it); the sets are "
    "bookkeeping, as capget says.",
}
