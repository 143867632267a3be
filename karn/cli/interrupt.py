"""Ctrl-C before karn's own handling is in place (imports, argument parsing): the exit
status a shell expects (130) and one line, never a KeyboardInterrupt traceback."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing's, without importing typing (re, enum and more: ~7 ms)
if TYPE_CHECKING:
    from types import TracebackType

INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a program Ctrl-C ended


def quiet_interrupts() -> None:
    """Make an uncaught KeyboardInterrupt end karn with status 130 and one line; also one
    that lands where Python can only report it (a __del__, a weakref or gc callback: the
    unraisable hook would print a traceback and let the run go on, Ctrl-C lost)."""
    previous, previous_unraisable = sys.excepthook, sys.unraisablehook

    def hook(kind: type[BaseException], value: BaseException,
             tb: TracebackType | None) -> None:
        if not issubclass(kind, KeyboardInterrupt):
            previous(kind, value, tb)
            return
        _interrupted()

    def unraisable(info: sys.UnraisableHookArgs) -> None:
        if not issubclass(info.exc_type, KeyboardInterrupt):
            previous_unraisable(info)
            return
        _interrupted()

    sys.excepthook, sys.unraisablehook = hook, unraisable


def _interrupted() -> None:
    try:
        sys.stderr.write("karn: interrupted\n")
        sys.stderr.flush()
        sys.stdout.flush()
    finally:
        os._exit(INTERRUPTED)  # not re-raised as SIGINT, as Python would
