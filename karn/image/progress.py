"""A one-line transfer progress display on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import time

MIB = 1 << 20


class Progress:
    def __init__(self, label: str, total: int | None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.enabled = sys.stderr.isatty()
        self._last = 0.0
        self._start = time.monotonic()

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last > 0.1:
            self._last = now
            self._draw()

    def _draw(self, end: str = "") -> None:
        done = f"{self.done / MIB:.1f}"
        if self.total:
            width = 24
            filled = min(width, width * self.done // max(self.total, 1))
            bar = "[" + "#" * filled + "." * (width - filled) + "]"
            text = f"{self.label}  {bar} {done}/{self.total / MIB:.1f} MiB"
        else:
            text = f"{self.label}  {done} MiB"
        sys.stderr.write("\r\x1b[2K" + text + end)
        sys.stderr.flush()

    def finish(self, note: str = "") -> None:
        if self.enabled:
            if note:
                sys.stderr.write(f"\r\x1b[2K{self.label}  {note}\n")
            else:
                self._draw("\n")
            sys.stderr.flush()


def note(text: str) -> None:
    """A status line for terminals only (quiet when piped or in scripts)."""
    if sys.stderr.isatty():
        sys.stderr.write(text + "\n")
