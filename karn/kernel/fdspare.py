"""A few host fds held in reserve for the monitor's own imports made while a guest runs
(the syscall areas and mounts load on first use): a guest may hold every fd the monitor
can open (EMFILE), and Python opens a module's file to import it. The spares are given up
for the import and taken again after it, as servers keep a spare fd for accept's EMFILE;
a few rather than one, so that another monitor thread opening a file in between does not
leave the import without."""

from __future__ import annotations

import errno
import os
import threading
from types import ModuleType

SPARES = 4
_lock = threading.Lock()
_spares: list[int] = []
# Spares are taken again as copies of this one, never closed: once the sandbox applies,
# the monitor may not open a path such as /dev/null any more.
_master: int | None = None


def hold() -> None:
    """Take the spares, at a run's start before the sandbox (a forked monitor inherits its
    own copies)."""
    global _master
    with _lock:
        if _master is None:
            _master = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        _take()


def import_module(name: str) -> ModuleType:
    """__import__(name) (its path: -X importtime sees it), through the spares on EMFILE."""
    try:
        return __import__(name, fromlist=("__name__",))
    except OSError as err:
        if err.errno not in (errno.EMFILE, errno.ENFILE):
            raise
    with _lock:
        while _spares:
            os.close(_spares.pop())
        try:
            return __import__(name, fromlist=("__name__",))
        finally:
            _take()


def _take() -> None:
    while _master is not None and len(_spares) < SPARES:
        try:
            _spares.append(os.dup(_master))  # close-on-exec, as os.dup makes it
        except OSError:  # at the limit: the guest holds the rest until it closes some
            return
