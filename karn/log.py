"""Monitor log lines on stderr ("karn: ..."), filtered by level.

A few lines of our own instead of the logging module, whose import costs ~9 ms of every
`karn run` start-up.
"""

from __future__ import annotations

import sys

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_threshold = LEVELS["warning"]


def set_level(name: str) -> None:
    global _threshold
    _threshold = LEVELS[name]


def enabled(level: str) -> bool:
    return LEVELS[level] >= _threshold


def _emit(level: str, message: str, args: tuple[object, ...]) -> None:
    if LEVELS[level] >= _threshold:
        text = message % args if args else message
        sys.stderr.write(f"karn: {text}\n")
        sys.stderr.flush()


def debug(message: str, *args: object) -> None:
    _emit("debug", message, args)


def info(message: str, *args: object) -> None:
    _emit("info", message, args)


def warning(message: str, *args: object) -> None:
    _emit("warning", message, args)


def error(message: str, *args: object) -> None:
    _emit("error", message, args)
