"""The guest's capability sets, kept as bookkeeping (capabilities(7)): what capget,
capset, prctl's bounding-set options and /proc show, and how set*uid and execve change
them, as Linux does for a process without file capabilities. karn's permission checks
still go by the effective uid (root may do what karn lets root do); a guest that drops a
capability sees it dropped, not refused by karn.

Root's sets are the full set less NOT_GRANTED: the capabilities whose use karn refuses
whatever the guest holds (ptrace, raising rlimits past a policy, setting the clock, alarm
timers)."""

from __future__ import annotations

from karn.hints import TYPE_CHECKING

if TYPE_CHECKING:
    from karn.kernel.process import Identity

CAP_LAST_CAP = 40  # CAP_CHECKPOINT_RESTORE, Linux 5.9+
ALL_CAPS = (1 << (CAP_LAST_CAP + 1)) - 1
CAP_SETPCAP = 8
AMBIENT_IS_SET, AMBIENT_RAISE, AMBIENT_LOWER, AMBIENT_CLEAR_ALL = 1, 2, 3, 4  # prctl
CAP_SYS_PTRACE, CAP_SYS_RESOURCE, CAP_SYS_TIME, CAP_WAKE_ALARM = 19, 24, 25, 35
NOT_GRANTED = sum(1 << cap for cap in (CAP_SYS_PTRACE, CAP_SYS_RESOURCE, CAP_SYS_TIME,
                                      CAP_WAKE_ALARM))


def bounding(ident: Identity) -> int:
    return ALL_CAPS & ~NOT_GRANTED & ~ident.dropped_caps


def initial(ident: Identity) -> None:
    """The sets of a process started as ident's ids: root's full, anyone else's empty."""
    ident.cap_inheritable = ident.cap_ambient = 0
    ident.cap_permitted = bounding(ident) if 0 in (ident.uid, ident.euid) else 0
    ident.cap_effective = ident.cap_permitted if ident.euid == 0 else 0


def uids_changed(ident: Identity, old_uid: int, old_euid: int, old_suid: int) -> None:
    """After a set*uid call (Linux's cap_emulate_setxuid): leaving uid 0 in all three
    ids empties permitted and effective (unless PR_SET_KEEPCAPS); an effective uid
    leaving 0 empties effective, one becoming 0 gets effective = permitted."""
    was_root = 0 in (old_uid, old_euid, old_suid)
    if was_root and 0 not in (ident.uid, ident.euid, ident.suid):
        ident.cap_ambient = 0
        if not ident.keepcaps:
            ident.cap_permitted = ident.cap_effective = 0
    if old_euid == 0 and ident.euid != 0:
        ident.cap_effective = 0
    if old_euid != 0 and ident.euid == 0:
        ident.cap_effective = ident.cap_permitted


def executed(ident: Identity) -> None:
    """execve of a file without capabilities: root gets its bounding set (plus what it
    kept inheritable), anyone else its ambient set; keepcaps is cleared."""
    if 0 in (ident.uid, ident.euid):
        ident.cap_permitted = (ident.cap_inheritable | bounding(ident)) & ALL_CAPS
        ident.cap_effective = ident.cap_permitted if ident.euid == 0 else ident.cap_ambient
    else:
        ident.cap_permitted = ident.cap_effective = ident.cap_ambient
    ident.keepcaps = 0


def set_sets(ident: Identity, effective: int, permitted: int, inheritable: int) -> bool:
    """capset's rules (cap_capset): permitted may only shrink, effective stays within
    it, inheritable within the old inheritable and permitted (the bounding set too, with
    CAP_SETPCAP effective); the ambient set keeps only what is in both new permitted and
    inheritable. False (nothing set) where a rule is broken."""
    allowed_inheritable = ident.cap_inheritable | (
        bounding(ident) if ident.cap_effective >> CAP_SETPCAP & 1 else ident.cap_permitted)
    if (permitted & ~ident.cap_permitted or effective & ~permitted
            or inheritable & ~allowed_inheritable
            or inheritable & ~(ident.cap_inheritable | bounding(ident))):
        return False
    ident.cap_effective, ident.cap_permitted = effective, permitted
    ident.cap_inheritable = inheritable
    ident.cap_ambient &= permitted & inheritable
    return True


def ambient(ident: Identity, op: int, cap: int) -> int:
    """prctl(PR_CAP_AMBIENT, op, cap): is-set, raise (only what is permitted and
    inheritable), lower, clear all; cap already checked."""
    if op == AMBIENT_IS_SET:
        return ident.cap_ambient >> cap & 1
    if op == AMBIENT_RAISE:
        if not (ident.cap_permitted & ident.cap_inheritable) >> cap & 1:
            raise PermissionError
        ident.cap_ambient |= 1 << cap
    elif op == AMBIENT_LOWER:
        ident.cap_ambient &= ~(1 << cap)
    else:
        ident.cap_ambient = 0
    return 0
