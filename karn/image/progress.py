"""Progress of long image operations (build, push, pull) on stderr, never silent for long:
on a terminal one bar per transfer, redrawn in place; otherwise (a log, CI) plain lines:
one when a transfer starts, one every few seconds while it runs, one when it ends.
(Hand-written: a few lines of stdlib, no dependency.)"""

from __future__ import annotations

import sys
import time

MIB = 1 << 20
REDRAW = 0.1  # seconds between bar redraws on a terminal
LINE_EVERY = 2.0  # seconds between plain progress lines


class Progress:
    def __init__(self, label: str, total: int | None, verb: str = "downloading") -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.tty = sys.stderr.isatty()
        self._start = time.monotonic()
        self._last = self._start
        if not self.tty:
            size = f" {self.total / MIB:.1f} MiB" if self.total is not None else ""
            _write(f"{label}  {verb}{size}\n")

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= (REDRAW if self.tty else LINE_EVERY):
            self._last = now
            if self.tty:
                _write("\r\x1b[2K" + self._text())
            else:
                _write(self._text() + "\n")

    def _text(self) -> str:
        done = f"{self.done / MIB:.1f}"
        if not self.total:
            return f"{self.label}  {done} MiB"
        width = 24
        filled = min(width, width * self.done // max(self.total, 1))
        bar = "[" + "#" * filled + "." * (width - filled) + "]" if self.tty else \
            f"{100 * self.done // max(self.total, 1)}%"
        return f"{self.label}  {bar} {done}/{self.total / MIB:.1f} MiB"

    def finish(self) -> None:
        took = time.monotonic() - self._start
        text = f"{self.label}  done: {self.done / MIB:.1f} MiB in {took:.1f} s"
        _write(("\r\x1b[2K" if self.tty else "") + text + "\n")


def note(text: str) -> None:
    """A status line on stderr (what is being done, or was done)."""
    _write(text + "\n")


def _write(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()
