"""The one syscall table: number -> name, handler, and an explicit support status.

Handlers live in area modules (sys_fs, sys_mm, ...), each exporting HANDLERS
{name: handler} and optionally NOTES {name: "what is partial"}. Every entry's status is one
of three kinds: Supported; Partial(note), served with a stated limitation (the area's
NOTES); Error(code, reason), refused on purpose with a fixed errno (ERRORS below, the one
place those are declared; a refused call no area serves gets a silent refusal handler).
Any other number is -ENOSYS by construction and logged once by name. docs/syscalls.md is
generated from this table and tests/test_syscall_status.py calls every Error row from a
real guest to check that it returns what the table says.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from types import ModuleType
from typing import NamedTuple

from karn import log
from karn.abi.errno import SyscallError
from karn.abi.signals import SIGSYS
from karn.abi.syscalls import SYSCALL_NAMES, SYSCALL_NUMBERS
from karn.kernel import exec as sys_exec
from karn.kernel import (
    sys_fs,
    sys_identity,
    sys_misc,
    sys_mm,
    sys_net,
    sys_pidfd,
    sys_poll,
    sys_signal,
    sys_thread,
    sys_time,
    sys_timer,
    sys_timerfd,
    sys_wait,
)
from karn.kernel.process import ProcessExit, ThreadExit

AREAS: tuple[ModuleType, ...] = (
    sys_fs,
    sys_mm,
    sys_identity,
    sys_time,
    sys_misc,
    sys_signal,
    sys_thread,
    sys_poll,
    sys_timer,
    sys_net,
    sys_timerfd,
    sys_exec,
    sys_wait,
    sys_pidfd,
)

Handler = Callable[..., int]


class Supported(NamedTuple):
    """Served as Linux serves it."""


class Partial(NamedTuple):
    """Served, with a limitation the note states."""

    note: str


class Error(NamedTuple):
    """Refused on purpose: every well-formed call fails with `code` (an errno)."""

    code: int
    reason: str


Status = Supported | Partial | Error  # tell them apart by type: Supported() is an empty tuple


class Denied(NamedTuple):
    """Not in a policy's allow-list: only in restricted_table's tables, never in TABLE."""

    kill: bool


# The calls refused with a fixed errno. Those an area serves raise it themselves (the
# real-guest test holds them to it); the others are refused here, without a log line.
ERRORS: dict[str, Error] = {
    "rseq": Error(errno.ENOSYS, "as a kernel built without rseq; glibc falls back"),
    "ptrace": Error(errno.EPERM, "nothing in the guest may be traced (as without CAP_SYS_PTRACE)"),
}


class Syscall(NamedTuple):
    number: int
    name: str
    handler: Handler
    arity: int
    area: str
    status: Status | Denied


def _status(name: str, notes: dict[str, str]) -> Status:
    if name in ERRORS:
        if name in notes:
            raise RuntimeError(f"syscall {name} is both refused (ERRORS) and partial (NOTES)")
        return ERRORS[name]
    return Partial(notes[name]) if name in notes else Supported()


def _refusal(code: int) -> Handler:
    def refuse(task, *args: int) -> int:  # noqa: ANN001 - a Task
        raise SyscallError(code)

    return refuse


def _build_table() -> dict[int, Syscall]:
    table: dict[int, Syscall] = {}
    for area in AREAS:
        notes: dict[str, str] = getattr(area, "NOTES", {})
        if stray := set(notes) - set(area.HANDLERS):
            raise RuntimeError(f"notes for syscalls {area.__name__} does not serve: {stray}")
        for name, handler in area.HANDLERS.items():
            number = SYSCALL_NUMBERS[name]
            if number in table:
                raise RuntimeError(f"syscall {name} registered twice")
            arity = handler.__code__.co_argcount - 1  # minus the task
            area_name = area.__name__.rsplit(".", 1)[-1]
            table[number] = Syscall(number, name, handler, arity, area_name, _status(name, notes))
    for name, status in ERRORS.items():
        number = SYSCALL_NUMBERS[name]
        if number not in table:
            # All six arguments, so that --trace shows them as for any call karn does not serve
            table[number] = Syscall(number, name, _refusal(status.code), 6, "", status)
    return table


TABLE: dict[int, Syscall] = _build_table()
_warned: set[int] = set()


def unimplemented(number: int) -> int:
    name = SYSCALL_NAMES.get(number)
    # Numbers outside the table share one key: a guest must not flood the log or grow the set.
    key = number if name is not None else -1
    if key not in _warned:
        _warned.add(key)
        later = "" if name else " (later unknown numbers are not logged)"
        log.warning(
            "unimplemented syscall %s (%d): returning -ENOSYS%s", name or "?", number, later
        )
    return -errno.ENOSYS


def dispatch(
    task: object, number: int, args: tuple[int, ...], table: dict[int, Syscall] = TABLE
) -> int:
    """Serve one syscall; returns the raw result (negative errno on failure). `table` is
    the process's own when a policy restricts it (restricted_table)."""
    entry = table.get(number)
    if entry is None:
        return unimplemented(number)
    try:
        return entry.handler(task, *args[: entry.arity])
    except SyscallError as err:
        return -err.errno
    except (OverflowError, ValueError, UnicodeError) as err:
        # Guest values that do not fit a host call: the guest gets EINVAL, we keep running.
        log.debug("%s: guest argument rejected: %s", entry.name, err)
        return -errno.EINVAL
    except (ProcessExit, ThreadExit):
        raise
    except Exception as err:  # a monitor bug: keep the guest running, make it visible
        _internal_error(entry.name, err)
        return -errno.EINVAL


_reported: set[str] = set()


def _internal_error(name: str, err: Exception) -> None:
    if name not in _reported:
        _reported.add(name)
        log.error(
            "internal error serving %s (%s: %s); returning -EINVAL. Please report "
            "this with `karn --debug run ...` output.",
            name,
            type(err).__name__,
            err,
        )
    if log.enabled("debug"):
        import traceback

        log.debug("%s", "".join(traceback.format_exception(err)))


def restricted_table(allowed: frozenset[str], kill: bool) -> dict[int, Syscall]:
    """The table under a syscall allow-list: every other known call is denied, failing
    with EPERM (logged once by name) or killing the guest with SIGSYS, as seccomp would."""
    table = {nr: e for nr, e in TABLE.items() if e.name in allowed}
    for number, name in SYSCALL_NAMES.items():
        if name not in allowed:
            table[number] = Syscall(number, name, _denial(name, kill), 0, "policy", Denied(kill))
    return table


def _denial(name: str, kill: bool) -> Handler:
    warned = False

    def denied(task) -> int:  # noqa: ANN001 - a Task
        nonlocal warned
        if not warned:
            warned = True
            action = "killing the guest (SIGSYS)" if kill else "returning -EPERM"
            log.warning("policy: syscall %s is not in the allow-list; %s", name, action)
        if kill:
            task.process.terminate_by_signal(SIGSYS, core=False)
            raise ThreadExit
        raise SyscallError(errno.EPERM)

    return denied
