"""--trace and --trace-summary: strace-style lines and a per-syscall count/time table.

A line: `[tid] +seconds name(args) = result <duration>`, written when the call returns
(arguments are decoded then, so out-parameters show what the call filled in). Calls that
do not return print `= ?`. Lines from several threads never interleave within a line.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from karn.abi.registers import s64
from karn.abi.signals import SI_KERNEL, SI_QUEUE, SI_TIMER, SI_TKILL, SI_USER, signal_name
from karn.abi.syscalls import SYSCALL_NAMES
from karn.debug.decode import Decoder
from karn.debug.observe import BaseObserver

if TYPE_CHECKING:
    from karn.kernel.process import Process, Task
    from karn.kernel.signals import SigInfo

SI_CODES = {SI_USER: "SI_USER", SI_KERNEL: "SI_KERNEL", SI_QUEUE: "SI_QUEUE",
            SI_TIMER: "SI_TIMER", SI_TKILL: "SI_TKILL"}


def syscall_name(nr: int) -> str:
    return SYSCALL_NAMES.get(nr, f"syscall_{nr}")


class Tracer(BaseObserver):
    """Also, as strace: `--- SIGTERM {si_signo=..., si_code=...} ---` when a signal is
    delivered, and `+++ exited with N +++` / `+++ killed by SIGX +++` at the end."""

    def __init__(self, process: Process, out: TextIO,
                 only: frozenset[str] | None = None) -> None:
        self.process = process
        self.decoder = Decoder(process.mem)
        self.out = out
        self.only = only  # syscall names to show; None: all
        self.start = time.monotonic()
        self.lock = threading.Lock()

    def _write(self, line: str) -> None:
        with self.lock:
            write_out(self.out, line)

    def forked(self) -> Tracer:
        """--trace follows forked processes (their lines carry their own pids)."""
        self.lock = threading.Lock()  # another thread may have held it at the fork
        return self

    def signal_delivered(self, task: Task, info: SigInfo) -> None:
        name = signal_name(info.signo)
        code = SI_CODES.get(info.code, str(info.code))
        when = time.monotonic() - self.start
        self._write(f"[{task.tid}] {when:.6f} --- {name} {{si_signo={name}, "
                    f"si_code={code}}} ---\n")

    def finish(self) -> None:
        proc = self.process
        if proc.fatal_signal:
            core = " (core dumped)" if proc.fatal_core else ""
            self._write(f"+++ killed by {signal_name(proc.fatal_signal)}{core} +++\n")
        elif proc.exit_status is not None:
            self._write(f"+++ exited with {proc.exit_status} +++\n")

    def syscall_enter(self, task: Task, nr: int, args: tuple[int, ...]) -> object:
        return time.monotonic()

    def syscall_exit(self, task: Task, nr: int, args: tuple[int, ...], result: int | None,
                     token: Any) -> None:
        name = syscall_name(nr)
        if self.only is not None and name not in self.only:
            return
        began: float = token
        self._write(self.format(task.tid, began, name, args, result))

    def format(self, tid: int, began: float, name: str, args: tuple[int, ...],
               result: int | None) -> str:
        try:
            text = self.decoder.args(name, args, result)
        except Exception as err:  # a decoder bug must not end the guest
            text = f"<undecodable: {err}>"
        shown = self.decoder.result(name, result)
        duration = "" if result is None else f" <{time.monotonic() - began:.6f}>"
        return f"[{tid}] {began - self.start:.6f} {name}({text}) = {shown}{duration}\n"


class Summary(BaseObserver):
    """strace -c: calls, errors and time in the monitor per syscall, printed at the end."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.stats: dict[int, list[float]] = {}  # nr -> [calls, errors, seconds]

    def syscall_enter(self, task: Task, nr: int, args: tuple[int, ...]) -> object:
        return time.perf_counter()

    def syscall_exit(self, task: Task, nr: int, args: tuple[int, ...], result: int | None,
                     token: Any) -> None:
        spent = time.perf_counter() - token
        failed = result is not None and -4096 < s64(result) < 0
        with self.lock:
            entry = self.stats.get(nr)
            if entry is None:
                entry = self.stats[nr] = [0, 0, 0.0]
            entry[0] += 1
            entry[1] += failed
            entry[2] += spent

    def counts(self) -> dict[str, tuple[int, int, float]]:
        with self.lock:
            return {syscall_name(nr): (int(c), int(e), s) for nr, (c, e, s) in self.stats.items()}

    def table(self) -> str:
        rows = sorted(self.counts().items(), key=lambda kv: (-kv[1][2], kv[0]))
        total = sum(r[1][2] for r in rows) or 1e-12
        lines = [
            "% time     seconds  usecs/call     calls    errors syscall",
            "------ ----------- ----------- --------- --------- ----------------",
        ]
        calls = errors = 0
        for name, (c, e, s) in rows:
            calls += c
            errors += e
            lines.append(f"{100 * s / total:6.2f} {s:11.6f} {1e6 * s / c:11.0f} {c:9d} "
                         f"{e or '':>9} {name}")
        lines.append(lines[1])
        spent = sum(r[1][2] for r in rows)
        lines.append(f"100.00 {spent:11.6f} {1e6 * spent / max(calls, 1):11.0f} {calls:9d} "
                     f"{errors or '':>9} total")
        return "\n".join(lines) + "\n"

    def finish(self) -> None:
        write_out(self.out, self.table())


def write_out(out: TextIO, text: str) -> None:
    """Write and flush trace output; once its reader has gone (`karn run --trace ... 2>&1 |
    head`) the trace stops, as strace's does, and the guest runs on."""
    if out.closed:
        return
    try:
        out.write(text)
        out.flush()
    except OSError:
        with contextlib.suppress(OSError):
            out.close()  # closes the fd even though its flush fails: none at exit either


def open_trace_file(path: str | None) -> TextIO:
    """stderr (a line-buffered copy, so guest output on fd 2 stays unbuffered) or a file."""
    if path is None:
        return os.fdopen(os.dup(2), "w", buffering=1, errors="replace")
    return open(path, "w", buffering=1, errors="replace")  # noqa: SIM115
