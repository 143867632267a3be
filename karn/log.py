"""Monitor log lines on stderr ("karn: ..."), filtered by level.

A few lines of our own instead of the logging module, whose import costs ~9 ms of every
`karn run` start-up.
"""

from __future__ import annotations

import atexit
import functools
import io
import os
import sys

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_threshold = LEVELS["warning"]
# The guest often writes to this same stderr: while a line of its own is unfinished
# ("running test_x ... "), our lines wait for its end (or for karn's exit), so that a
# guest's line is never cut by ours; --debug prints at once, in order.
_guest_line_open = False
_held: list[bytes] = []


def set_level(name: str) -> None:
    global _threshold
    _threshold = LEVELS[name]


def enabled(level: str) -> bool:
    return LEVELS[level] >= _threshold


@functools.cache
def stderr_identity() -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file our lines go to, to know a guest's writes to it."""
    try:
        st = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return st.st_dev, st.st_ino


def guest_wrote(last: int) -> None:
    """The guest wrote to our stderr, its last byte `last`: lines held for the end of
    its line go out once it ended one."""
    global _guest_line_open
    _guest_line_open = last != 0x0A
    if not _guest_line_open and _held:
        release_held()


def release_held() -> None:
    while _held:
        _write(_held.pop(0))


def _emit(level: str, message: str, args: tuple[object, ...]) -> None:
    if LEVELS[level] >= _threshold:
        text = message % args if args else message
        line = f"karn: {text}\n".encode(errors="replace")
        if _guest_line_open and _threshold > LEVELS["debug"]:
            if not _held:
                atexit.register(release_held)
            _held.append(line)
            return
        _write(line)


def _write(line: bytes) -> None:
    """Whole, in one write: a line of ours written in pieces could be split by one of
    the guest's."""
    stream = sys.stderr
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        stream.write(line.decode())
        stream.flush()
        return
    stream.flush()
    while line:
        try:
            line = line[os.write(fd, line):]
        except InterruptedError:
            continue
        except OSError:
            return  # stderr gone: nowhere to say it


def debug(message: str, *args: object) -> None:
    _emit("debug", message, args)


def info(message: str, *args: object) -> None:
    _emit("info", message, args)


def warning(message: str, *args: object) -> None:
    _emit("warning", message, args)


_warned: set[str] = set()


def warning_once(key: str, message: str, *args: object) -> None:
    """A warning the first time only, per key (a fixed name, or one of a few values: the
    guest must not grow the set without bound)."""
    if key not in _warned:
        _warned.add(key)
        _emit("warning", message, args)


def error(message: str, *args: object) -> None:
    _emit("error", message, args)
