"""The debug features of one run, attached to its process as one Observer."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from karn.debug.observe import BaseObserver, History, combine

if TYPE_CHECKING:
    from karn.debug.options import DebugOptions
    from karn.runtime import Unikernel

HISTORY = 20


class DebugSession:
    def __init__(self, uk: Unikernel, options: DebugOptions) -> None:
        options.validate()
        self.uk = uk
        self.options = options
        proc = uk.process
        parts: list[BaseObserver] = []
        self.history = History(HISTORY)
        parts.append(self.history)
        self._outputs = []
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
        self.core = None
        if options.core_dir is not None:
            from karn.debug.coredump import CoreDumper

            self.core = CoreDumper(uk, options.core_dir)
            parts.append(self.core)
        self.gdb = None
        if options.gdb is not None:
            from karn.debug.gdbstub import GdbStub

            self.gdb = GdbStub(uk, *options.gdb)
            parts.append(self.gdb)
        self.observer = combine(parts)
        proc.observer = self.observer

    def finish(self) -> None:
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
