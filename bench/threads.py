#!/usr/bin/env python3
"""Thread benchmarks for issue 4, side by side in one run: medians of N runs.

    python3 bench/threads.py [--runs N] [--quick] [--write] [--no-runsc]

1. thread create+join: tests/programs/thr_join.c creating and joining N threads one at a
   time; per op = (t(N large) - t(N small)) / (N large - N small), which removes start-up.
2. futex ping-pong: tests/programs/thr_pingpong.c, two threads handing a turn back and
   forth with a mutex and a condvar (futex wait/wake each way); per round trip by the
   same difference of two round counts.
3. Sleep beside a spinner: tests/programs/preempt_sleep.c, the main thread sleeps 10 ms
   50 times while a second thread spins in user mode; the median and worst sleep as the
   program measures them. With one CPU the sleeper gets it back only by preemption (karn
   --cpus 1: the gate's tick; natively `taskset -c 0`: the host scheduler).
4. Go CPU-parallel speed-up: tests/programs/go/parallel.go (4 goroutines, no syscalls in
   the loop), loop time as the program measures it, with one CPU and with two: karn
   --cpus 1 / --cpus 2, natively `taskset -c 0` / `taskset -c 0,1`.

Runners: native, karn (--cpus 1 and --cpus 2 where it matters) and gVisor
(`runsc --network=none --platform=ptrace do`) when installed and running as root.
Prints a markdown section; --write replaces the "Threads" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from report import merge

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PROGRAMS = REPO / "tests" / "programs"
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Threads"
KARN = [sys.executable, "-m", "karn", "run"]
RUNSC = ["runsc", "--network=none", "--platform=ptrace", "do"]


class BenchError(Exception):
    """A benchmark could not run (the message says why)."""


def run_once(cmd: Sequence[str], timeout: float = 600) -> tuple[float, bytes, bytes]:
    """Wall time, stdout and stderr of one run. Raises BenchError on failure."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"`{' '.join(cmd[-3:])}` timed out after {timeout:.0f} s") from None
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        last = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise BenchError(f"`{' '.join(cmd[-3:])}` exited {proc.returncode}: {last[0][:160]}")
    return elapsed, proc.stdout, proc.stderr


def median_wall(cmd: Sequence[str], runs: int) -> float:
    run_once(cmd)  # warm-up
    return statistics.median(run_once(cmd)[0] for _ in range(runs))


def per_op(prefix: list[str], exe: Path, small: int, large: int, runs: int, *args: str) -> float:
    t_small = median_wall([*prefix, str(exe), str(small), *args], runs)
    t_large = median_wall([*prefix, str(exe), str(large), *args], runs)
    return max(0.0, t_large - t_small) / (large - small)


def build_c(out: Path, name: str) -> Path:
    exe = out / name
    cmd = ["gcc", "-O2", "-static", "-o", str(exe), str(PROGRAMS / f"{name}.c")]
    subprocess.run(cmd, check=True)
    return exe


def build_go(out: Path, name: str) -> Path:
    if not shutil.which("go"):
        raise BenchError("go not installed (apt-get install golang-go)")
    exe = out / f"go-{name}"
    env = dict(os.environ, CGO_ENABLED="0", GOCACHE=str(out / "gocache"))
    cmd = ["go", "build", "-o", str(exe), str(PROGRAMS / "go" / f"{name}.go")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise BenchError(f"go build failed: {proc.stderr.strip()[:200]}")
    return exe


def go_loop_time(cmd: list[str], runs: int) -> float:
    """Median of the loop time parallel.go reports on stderr ("ns N gomaxprocs M")."""
    run_once(cmd)
    times, checksums = [], set()
    for _ in range(runs):
        _, out, err = run_once(cmd)
        checksums.add(out)
        fields = err.decode().split()
        times.append(int(fields[fields.index("ns") + 1]) / 1e9)
    if len(checksums) != 1:
        raise BenchError("parallel.go printed different checksums across runs")
    return statistics.median(times)


def sleep_latency(cmd: list[str], runs: int) -> tuple[float, float]:
    """Median of the per-run median sleeps and the worst sleep preempt_sleep reports on
    stderr ("sleep_us median M max X"), in seconds."""
    run_once(cmd)
    medians, worst = [], 0.0
    for _ in range(runs):
        fields = run_once(cmd)[2].decode().split()
        medians.append(float(fields[fields.index("median") + 1]) / 1e6)
        worst = max(worst, float(fields[fields.index("max") + 1]) / 1e6)
    return statistics.median(medians), worst


def fmt_us(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e6:.1f} µs"


def fmt_ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.0f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per measurement (median)")
    ap.add_argument("--quick", action="store_true", help="smaller loops, for a smoke test")
    ap.add_argument("--write", action="store_true", help=f"update {DOCS.relative_to(REPO)}")
    ap.add_argument("--no-runsc", action="store_true", help="leave gVisor out")
    args = ap.parse_args(argv)
    runs = max(1, args.runs)
    scale = 10 if args.quick else 1

    runners: dict[str, list[str]] = {
        "native": [],
        "karn --cpus 1": [*KARN, "--cpus", "1"],
        "karn --cpus 2": [*KARN, "--cpus", "2"],
    }
    notes: list[str] = []
    problems: list[str] = []
    if args.no_runsc:
        notes.append("gVisor: left out (--no-runsc)")
    elif not shutil.which("runsc"):
        notes.append("gVisor: runsc not installed")
    elif os.geteuid() != 0:
        notes.append("gVisor: `runsc do` needs root")
    else:
        runners["gVisor (runsc, ptrace)"] = RUNSC

    # (N small, N large) per runner: large enough that the difference dominates the noise
    join_n = {"native": (1_000, 50_000), "gVisor (runsc, ptrace)": (200, 5_000)}
    pp_n = {"native": (1_000, 100_000), "gVisor (runsc, ptrace)": (1_000, 20_000)}
    for name in runners:
        join_n.setdefault(name, (100, 1_500))
        pp_n.setdefault(name, (100, 3_000))
    for table in (join_n, pp_n):
        for name, (small, large) in table.items():
            table[name] = (small, max(small + 1, large // scale))
    join: dict[str, float | None] = {}
    pingpong: dict[str, float | None] = {}
    speed: dict[str, tuple[float, float] | None] = {}
    sleeps: dict[str, tuple[float, float] | None] = {}

    with tempfile.TemporaryDirectory(prefix="karn-bench-", dir="/var/tmp") as tmp:
        out = Path(tmp)
        thr_join, thr_pp = build_c(out, "thr_join"), build_c(out, "thr_pingpong")

        print(f"thread create+join ({runs} runs each) ...", file=sys.stderr)
        for name, prefix in runners.items():
            small, large = join_n[name]
            try:
                join[name] = per_op(prefix, thr_join, small, large, runs, "--serial-only")
            except BenchError as exc:
                join[name] = None
                problems.append(f"create+join, {name}: {exc}")

        print("futex ping-pong ...", file=sys.stderr)
        for name, prefix in runners.items():
            small, large = pp_n[name]
            try:
                pingpong[name] = per_op(prefix, thr_pp, small, large, runs)
            except BenchError as exc:
                pingpong[name] = None
                problems.append(f"ping-pong, {name}: {exc}")

        print("sleep beside a spinner ...", file=sys.stderr)
        sleeper = build_c(out, "preempt_sleep")
        sleep_runners = {
            "native": [],
            "native, `taskset -c 0`": ["taskset", "-c", "0"],
            **{name: prefix for name, prefix in runners.items() if name != "native"},
        }
        for name, prefix in sleep_runners.items():
            try:
                sleeps[name] = sleep_latency([*prefix, str(sleeper), str(50 // scale)], runs)
            except BenchError as exc:
                sleeps[name] = None
                problems.append(f"sleep beside a spinner, {name}: {exc}")

        print("Go parallel speed-up ...", file=sys.stderr)
        rounds = str(800_000_000 // scale)
        try:
            par = build_go(out, "parallel")
            pairs = {
                "native": (["taskset", "-c", "0"], ["taskset", "-c", "0,1"]),
                "karn": ([*KARN, "--cpus", "1"], [*KARN, "--cpus", "2"]),
            }
            if "gVisor (runsc, ptrace)" in runners:
                pairs["gVisor (runsc, ptrace)"] = (
                    ["taskset", "-c", "0", *RUNSC], ["taskset", "-c", "0,1", *RUNSC]
                )
            for name, (one, two) in pairs.items():
                try:
                    t1 = go_loop_time([*one, str(par), rounds], runs)
                    t2 = go_loop_time([*two, str(par), rounds], runs)
                    speed[name] = (t1, t2)
                except BenchError as exc:
                    speed[name] = None
                    problems.append(f"Go speed-up, {name}: {exc}")
        except BenchError as exc:
            problems.append(f"Go speed-up: {exc}")

    report = render(runs, rounds, join, join_n, pingpong, pp_n, sleeps, speed, notes,
                    problems)
    print(report)
    if args.write:
        merge(report)
    return 1 if problems else 0


def render(runs, rounds, join, join_n, pingpong, pp_n, sleeps, speed, notes,
           problems) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    lines = [
        SECTION,
        "",
        f"Generated by `python3 bench/threads.py --write` on {now}; medians of {runs} runs. "
        f"The machine has {os.cpu_count()} cores and is shared (load average {load:.1f} at "
        "the end): figures are noisy, the speed-up especially.",
        "",
        "### Thread create + join (`thr_join N --serial-only`, one thread at a time)",
        "",
        "Per op = (t(N large) − t(N small)) / (N large − N small).",
        "",
        "| runner | N small | N large | per create+join |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, cost in join.items():
        small, large = join_n[name]
        lines.append(f"| {name} | {small:,} | {large:,} | {fmt_us(cost)} |")
    lines += [
        "",
        "### Futex ping-pong (`thr_pingpong N`: mutex + condvar, two threads)",
        "",
        "Per round trip (one hand-over each way) by the same difference of two N.",
        "",
        "| runner | N small | N large | per round trip |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, cost in pingpong.items():
        small, large = pp_n[name]
        lines.append(f"| {name} | {small:,} | {large:,} | {fmt_us(cost)} |")
    lines += [
        "",
        "### Sleep 10 ms beside a spinning thread (`preempt_sleep 50`)",
        "",
        "How long a 10 ms `nanosleep` takes while another thread spins in user mode: with "
        "one CPU (karn `--cpus 1`, native `taskset -c 0`) the sleeper needs the spinner "
        "preempted; karn `--cpus 2` does not gate two threads.",
        "",
        "| runner | median sleep | worst sleep |",
        "| --- | ---: | ---: |",
    ]
    for name, res in sleeps.items():
        cells = ("—", "—") if res is None else (f"{res[0] * 1e3:.2f} ms", f"{res[1] * 1e3:.1f} ms")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        f"### Go CPU-parallel speed-up (`parallel.go {rounds} 4`: 4 goroutines, no syscalls)",
        "",
        "Loop time as the program measures it; one CPU = karn `--cpus 1` or `taskset -c 0`, "
        "two = karn `--cpus 2` or `taskset -c 0,1`.",
        "",
        "| runner | one CPU | two CPUs | speed-up |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, res in speed.items():
        if res is None:
            lines.append(f"| {name} | — | — | — |")
        else:
            t1, t2 = res
            lines.append(f"| {name} | {fmt_ms(t1)} | {fmt_ms(t2)} | {t1 / t2:.2f}× |")
    native = speed.get("native")
    if native and native[0] / native[1] < 1.3:
        lines += [
            "",
            "The native program itself gained less than 1.3× from a second CPU: the host did "
            "not have two CPUs free during this run, so these speed-ups say nothing about "
            "`--cpus`; re-run on a quiet machine.",
        ]
    if notes or problems:
        lines += ["", "Notes:", ""]
        lines += [f"- {n}" for n in notes]
        lines += [f"- FAILED: {p}" for p in problems]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
