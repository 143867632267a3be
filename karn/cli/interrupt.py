"""Ctrl-C before karn's own handling is in place (imports, argument parsing): the exit
status a shell expects (130) and one line, never a KeyboardInterrupt traceback."""

from __future__ import annotations

import os
import sys
from types import TracebackType

INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a program Ctrl-C ended


def quiet_interrupts() -> None:
    """Make an uncaught KeyboardInterrupt end karn with status 130 and one line."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException,
             tb: TracebackType | None) -> None:
        if not issubclass(kind, KeyboardInterrupt):
            previous(kind, value, tb)
            return
        try:
            sys.stderr.write("karn: interrupted\n")
            sys.stderr.flush()
            sys.stdout.flush()
        finally:
            os._exit(INTERRUPTED)  # not re-raised as SIGINT, as Python would

    sys.excepthook = hook
