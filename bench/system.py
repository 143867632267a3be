#!/usr/bin/env python3
"""Partitioned-system benchmarks (docs/systems.md): medians of N runs, one command.

    python3 bench/system.py [--runs N] [--write]

Every figure is measured inside guests (tests/programs/sys_ports.c) in real partitions
started by `karn system up`:

1. port latency: `ping` writes a message to a queuing port and reads the echo that a
   second partition sends back; half the median round trip is the one-way latency. The
   same with both channels as diodes, and with a guard (size, allow-list regex, deny
   words, JSON schema) on the forward channel: the differences are their overheads.
2. throughput: `blast` writes messages as fast as it can into a queuing channel (depth
   64, back-pressure), `sink` times the first to the last arrival; messages/s and MB/s.
   Through a diode the sender is never held back: what the receiver misses is dropped.
3. cyclic window jitter: two CPU-bound partitions under a 100 ms frame (60/40); how late
   the supervisor's window switches were (status "lateness"), and each partition's CPU
   share against its window.

Prints a markdown section; --write replaces the "Partitioned systems" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PROGRAM = REPO / "tests" / "programs" / "sys_ports.c"
SPIN = REPO / "tests" / "programs" / "spin.c"
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Partitioned systems"
LAST_CPU = (os.cpu_count() or 1) - 1


class BenchError(Exception):
    """A benchmark could not run (the message says why)."""


PORT = """
[partitions.{part}.ports.{name}]
direction = "{direction}"
max_size = {size}
{extra}"""
GUARD = """
[guards.g]
max_size = 65536
allow = '^\\{.*\\}$'
deny = ["drop table", "rm -rf"]
schema = { type = "object", required = ["v"], properties = { v = { type = "string" } } }
"""


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.env = dict(os.environ, KARN_STATE_DIR=str(work / "state"))
        self.tool = self._compile(PROGRAM)
        self.spin = self._compile(SPIN)
        self.count = 0

    def _compile(self, source: Path) -> Path:
        out = self.work / source.stem
        proc = subprocess.run(["gcc", "-static", "-O2", "-o", str(out), str(source)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise BenchError(f"gcc {source.name}: {proc.stderr.strip()[:200]}")
        return out

    def karn(self, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run([sys.executable, "-m", "karn", "system", *args], env=self.env,
                              cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if proc.returncode not in (0, 1):
            raise BenchError(f"karn system {args[0]}: {proc.stderr.strip()[-300:]}")
        return proc.stdout

    def system(self, partitions: dict[str, tuple[list[str], list[tuple[str, str, str]]]],
               channels: list[tuple[str, str, bool, bool]], size: int, depth: int = 64,
               stop_after: str = "") -> tuple[str, Path]:
        """Write a description: partitions {name: (args, [(port, direction, extra)])},
        channels [(from, to, diode, guarded)]. The system stops when stop_after exits."""
        self.count += 1
        name = f"bench{self.count}"
        lines = [f'name = "{name}"']
        for part, (args, ports) in partitions.items():
            lines += [f"[partitions.{part}]", f'program = "{self.tool}"',
                      f"args = {json.dumps(args)}"]
            if part == stop_after:
                lines.append('health = { on_exit = "stop" }')
            for port, direction, extra in ports:
                extra = extra or (f"depth = {depth}" if direction == "in" else "")
                lines.append(PORT.format(part=part, name=port, direction=direction,
                                         size=size, extra=extra))
        for src, dst, diode, guarded in channels:
            lines += ["[[channels]]", f'from = "{src}"', f'to = "{dst}"',
                      f"diode = {str(diode).lower()}"]
            if guarded:
                lines.append('guard = "g"')
        if any(c[3] for c in channels):
            lines.append(GUARD)
        path = self.work / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return name, path

    def log(self, name: str, part: str) -> str:
        return self.karn("logs", "-s", name, part)

    def latency(self, size: int, diode: bool = False, guarded: bool = False) -> float:
        """One-way latency in us: half the median round trip of 2000 pings."""
        name, path = self.system(
            {"a": (["ping", "out", "in", "2000", str(size)], [("out", "out", ""),
                                                                ("in", "in", "")]),
             "b": (["echo", "in", "out"], [("in", "in", ""), ("out", "out", "")])},
            [("a.out", "b.in", diode, guarded), ("b.out", "a.in", diode, False)], size,
            stop_after="a")
        self.karn("up", str(path))
        words = self.log(name, "a").split()
        if "rtt_us" not in words:
            raise BenchError(f"ping: {' '.join(words)[:200]}")
        return float(words[words.index("p50") + 1]) / 2

    def throughput(self, size: int, count: int, diode: bool = False
                   ) -> tuple[float, float, int]:
        """(messages/s, MB/s) at the receiver, and messages dropped."""
        name, path = self.system(
            {"a": (["blast", "out", str(count), str(size)], [("out", "out", "")]),
             "b": (["sink", "in", str(count)], [("in", "in", "")])},
            [("a.out", "b.in", diode, False)], size, stop_after="b")
        self.karn("up", str(path))
        words = self.log(name, "b").split()
        if "sink" not in words:
            raise BenchError(f"sink: {' '.join(words)[:200]}")
        got, nbytes, us = int(words[2]), int(words[4]), float(words[6])
        status = json.loads(self.karn("status", "--json", name))
        dropped = status["channels"][0]["dropped"]
        if got < 2 or us <= 0:
            raise BenchError(f"sink got {got} messages")
        return (got - 1) / us * 1e6, nbytes / us, dropped

    def cyclic(self, seconds: float) -> dict:
        name = f"cyclic{self.count}"
        self.count += 1
        path = self.work / f"{name}.toml"
        path.write_text(
            f'name = "{name}"\n'
            + "".join(f'[partitions.{p}]\nprogram = "{self.spin}"\n'
                      f"cpu_affinity = [{LAST_CPU}]\n" for p in "ab")
            + '[schedule]\npolicy = "cyclic"\nmajor_frame = "100ms"\nwindows = ['
              '{ partition = "a", start = 0, duration = 60 }, '
              '{ partition = "b", start = 60, duration = 40 }]\n')
        self.karn("up", "-d", str(path))
        try:
            time.sleep(1.0)
            status = json.loads(self.karn("status", "--json", name))
            pids = {p["name"]: p["pid"] for p in status["partitions"]}
            t0, before = time.monotonic(), {n: cpu_seconds(p) for n, p in pids.items()}
            time.sleep(seconds)
            t1, after = time.monotonic(), {n: cpu_seconds(p) for n, p in pids.items()}
            status = json.loads(self.karn("status", "--json", name))
        finally:
            self.karn("down", name)
        late = status["cyclic"]["lateness_us"]
        share = {n: 100 * (after[n] - before[n]) / (t1 - t0) for n in pids}
        return {"p50": late["p50"], "p99": late["p99"], "max": late["max"],
                "a": share["a"], "b": share["b"]}


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kb-", dir="/tmp"))  # short: socket paths
    try:
        bench = Bench(work)
        lat = {}
        for label, size, diode, guarded in (("queuing, 64 B", 64, False, False),
                                            ("queuing, 4 KiB", 4096, False, False),
                                            ("both channels diodes, 64 B", 64, True, False),
                                            ("guarded forward channel, 64 B", 64, False,
                                             True),
                                            ("guarded forward channel, 4 KiB", 4096, False,
                                             True)):
            lat[label] = median([bench.latency(size, diode, guarded)
                                 for _ in range(args.runs)])
            print(f"latency {label}: {lat[label]:.0f} us", file=sys.stderr)
        thr = {}
        for label, size, count, diode in (("64 B", 64, 20000, False),
                                          ("4 KiB", 4096, 10000, False),
                                          ("60 KiB", 61440, 2000, False),
                                          ("64 B through a diode", 64, 20000, True)):
            runs = [bench.throughput(size, count, diode) for _ in range(args.runs)]
            thr[label] = (median([r[0] for r in runs]), median([r[1] for r in runs]),
                          int(median([r[2] for r in runs])), count)
            print(f"throughput {label}: {thr[label][0]:.0f} msg/s", file=sys.stderr)
        cyc = [bench.cyclic(5.0) for _ in range(args.runs)]
        cyclic = {k: median([c[k] for c in cyc]) for k in cyc[0]}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = render(args.runs, lat, thr, cyclic)
    print(report)
    if args.write:
        replace_section(report)
    return 0


def render(runs: int, lat: dict, thr: dict, cyclic: dict) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    base = lat["queuing, 64 B"]
    lines = [
        SECTION, "",
        f"Generated by `python3 bench/system.py --write` on {now}; medians of {runs} runs. "
        f"The machine has {os.cpu_count()} cores and is shared (load average "
        f"{os.getloadavg()[0]:.1f} at the end). Guests: tests/programs/sys_ports.c; each "
        "partition is its own karn monitor; messages pass through the supervisor.", "",
        "### Port latency (one way = half the median round trip of 2000 ping-pongs)", "",
        "| channel | one-way latency | overhead vs plain 64 B |", "| --- | ---: | ---: |",
    ]
    for label, value in lat.items():
        lines.append(f"| {label} | {value:.0f} µs | {value - base:+.0f} µs |")
    lines += ["", "### Throughput (one sender writing as fast as it can, receiver timing)", "",
              "| message size | messages/s | MB/s | dropped (of sent) |",
              "| --- | ---: | ---: | ---: |"]
    for label, (rate, mbps, dropped, count) in thr.items():
        lines.append(f"| {label} | {rate:,.0f} | {mbps:.1f} | {dropped:,} of {count:,} |")
    lines += ["", "### Cyclic schedule (100 ms frame, windows 60/40, two spinning partitions "
              "pinned to one CPU, 5 s)", "",
              "| window switch lateness p50 | p99 | max | CPU share a (60) | b (40) |",
              "| ---: | ---: | ---: | ---: | ---: |",
              f"| {cyclic['p50']:.0f} µs | {cyclic['p99']:.0f} µs | {cyclic['max']:.0f} µs | "
              f"{cyclic['a']:.1f} % | {cyclic['b']:.1f} % |", ""]
    return "\n".join(lines)


def replace_section(report: str) -> None:
    text = DOCS.read_text() if DOCS.exists() else "# karn benchmarks\n"
    if SECTION in text:
        head, _, rest = text.partition(SECTION)
        nxt = rest.find("\n## ")
        text = head + report + ("\n" + rest[nxt + 1:] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + report
    DOCS.write_text(text)
    print(f"wrote {DOCS}", file=sys.stderr)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as err:
        sys.stderr.write(f"bench/system.py: {err}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
