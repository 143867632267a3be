"""The debug features of one run, attached to its process as one Observer: a RunPlugin
(karn/run/guest.py) the runner attaches before the guest runs and finishes after."""

from __future__ import annotations

import sys

from karn.debug.observe import BaseObserver, History, combine
from karn.hints import TYPE_CHECKING

if TYPE_CHECKING:
    from karn.debug.options import DebugOptions
    from karn.run.guest import Guest

HISTORY = 20


class DebugSession:
    def __init__(self, options: DebugOptions) -> None:
        self.options = options  # validated with the run's config (karn/run/config.py)
        self.history = History(HISTORY)
        self._outputs: list = []
        self.observer: BaseObserver | None = None

    def attach(self, guest: Guest) -> None:
        """Trace, core dumps, gdb: the guest's process reports to them from now on."""
        options = self.options
        proc = guest.process
        parts: list[BaseObserver] = [self.history]
        if options.trace or options.trace_summary:
            from karn.debug.tracer import Summary, Tracer, open_trace_file

            out = open_trace_file(options.trace_file)
            self._outputs.append(out)
            if options.trace:
                from karn.debug.decode import expand_filter

                only = expand_filter(options.trace_filter) if options.trace_filter else None
                parts.append(Tracer(proc, out, only))
            if options.trace_summary:
                parts.append(Summary(out))
        if options.core_dir is not None:
            from karn.debug.coredump import CoreDumper

            parts.append(CoreDumper(guest, options.core_dir))
        if options.gdb is not None:
            from karn.debug.gdbstub import GdbStub

            parts.append(GdbStub(guest, *options.gdb))
        self.observer = combine(parts)
        proc.observer = self.observer

    def started(self) -> None:
        pass

    def finish(self, status: int, signal: int) -> None:
        """After the process ended: summaries, core file, the debugger's exit notice."""
        if self.observer is not None:
            try:
                self.observer.finish()
            finally:
                for out in self._outputs:
                    try:
                        out.close()
                    except OSError:
                        pass
                sys.stderr.flush()
