"""The debug options of `karn run`, validated before anything starts (cheap to import)."""

from __future__ import annotations

import os

from karn.errors import UsageError


def parse_address(text: str, what: str) -> tuple[str, int]:
    """[HOST:]PORT -> (host, port); the host defaults to 127.0.0.1."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise UsageError(f"{what}: invalid address {text!r} (use [HOST:]PORT)") from None
    if not 0 <= number < 65536:
        raise UsageError(f"{what}: port {number} out of range")
    return host, number


class DebugOptions:
    __slots__ = ("trace", "trace_filter", "trace_file", "trace_summary", "gdb", "core_dir",
                 "history")

    def __init__(
        self,
        trace: bool = False,
        trace_filter: str | None = None,
        trace_file: str | None = None,
        trace_summary: bool = False,
        gdb: str | None = None,
        core_dir: str | None = None,
        history: bool = False,
    ) -> None:
        self.trace = trace or trace_filter is not None
        self.trace_filter = trace_filter
        self.trace_file = trace_file
        self.trace_summary = trace_summary
        self.gdb = parse_address(gdb, "--gdb") if gdb is not None else None
        self.core_dir = core_dir
        self.history = history

    def any(self) -> bool:
        return bool(self.trace or self.trace_summary or self.gdb or self.core_dir
                    or self.history)

    def validate(self) -> None:
        if self.trace_filter is not None:
            from karn.debug.decode import expand_filter

            try:
                expand_filter(self.trace_filter)
            except ValueError as err:
                raise UsageError(f"--trace: {err}") from None
        if self.trace_file is not None:
            parent = os.path.dirname(os.path.abspath(self.trace_file))
            if not os.path.isdir(parent):
                raise UsageError(f"--trace-file: directory {parent} does not exist")
        if self.core_dir is not None and not os.path.isdir(self.core_dir):
            raise UsageError(f"--core-dump: {self.core_dir} is not a directory")
