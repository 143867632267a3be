"""Landlock (unprivileged file-system and TCP-bind confinement), through ctypes.

A ruleset lists what stays allowed beneath given host paths; everything of a handled kind
elsewhere is EACCES, for root too. Only the ruleset is built here; threads.py enforces
it on every thread. Linux docs: userspace-api/landlock.rst.
"""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Iterable

_SYS_CREATE_RULESET, _SYS_ADD_RULE = 444, 445
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2

# LANDLOCK_ACCESS_FS_*
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK = 1 << 8, 1 << 9, 1 << 10, 1 << 11
MAKE_SYM, REFER, TRUNCATE, IOCTL_DEV = 1 << 12, 1 << 13, 1 << 14, 1 << 15
FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # rights a file rule takes
READ = READ_FILE | READ_DIR
WRITE = (WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO
         | MAKE_SYM | REFER | TRUNCATE)
BIND_TCP = 1 << 0  # LANDLOCK_ACCESS_NET_*
SCOPE_ABSTRACT_UNIX, SCOPE_SIGNAL = 1 << 0, 1 << 1

_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPort(ctypes.Structure):
    _fields_ = [("allowed", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def abi_version() -> int:
    """0 when the kernel has no Landlock (or it is disabled at boot)."""
    version = _libc.syscall(_SYS_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)
    return max(0, version)


def _handled_fs(abi: int) -> int:
    return _FS_BY_ABI[max(v for v in _FS_BY_ABI if v <= abi)]


class Ruleset:
    """A Landlock ruleset being built; `fd` goes to landlock_restrict_self."""

    def __init__(self, abi: int, restrict_bind: bool) -> None:
        self.abi = abi
        self.fs = _handled_fs(abi)
        self.net = BIND_TCP if restrict_bind and abi >= 4 else 0
        scoped = SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL if abi >= 6 else 0
        attr = _RulesetAttr(self.fs, self.net, scoped)
        size = 8 if abi < 4 else 16 if abi < 6 else 24  # older kernels want the old size
        self.fd = _check(_libc.syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), size, 0),
                         "landlock_create_ruleset")
        self.rules = 0
        self._rule = _PathBeneath()
        self._rule_ref = ctypes.byref(self._rule)
        self.pinned: list[int] = []  # O_PATH fds kept open: see allow_pinned()

    def allow(self, path: str, access: int) -> bool:
        """Allow `access` beneath path (a file gets only file rights); False if missing."""
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            self._add(fd, access)
        finally:
            os.close(fd)
        return True

    def allow_pinned(self, path: str, access: int) -> None:
        """For procfs: its inodes are made afresh when a dentry is evicted, which would
        drop the rule, so the path stays open (pinned) for the monitor's lifetime."""
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        self._add(fd, access)
        self.pinned.append(fd)

    def _add(self, fd: int, access: int) -> None:
        # (file-only rights need no look at what fd is: a program's every collected file)
        if access & ~FILE_ONLY and not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= FILE_ONLY
        access &= self.fs
        if not access:
            return
        rule = self._rule  # one structure for all (a program's files: ~1,400 for python3)
        rule.allowed, rule.parent_fd = access, fd
        _check(_libc.syscall(_SYS_ADD_RULE, self.fd, _RULE_PATH_BENEATH, self._rule_ref, 0),
               "landlock_add_rule")
        self.rules += 1

    def allow_bind(self, port: int) -> None:
        if self.net:
            rule = _NetPort(BIND_TCP, port)
            _check(_libc.syscall(_SYS_ADD_RULE, self.fd, _RULE_NET_PORT, ctypes.byref(rule), 0),
                   "landlock_add_rule")
            self.rules += 1

    def allow_all(self, paths: Iterable[str], access: int) -> None:
        for path in paths:
            self.allow(path, access)

    def close(self) -> None:
        os.close(self.fd)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result
