#!/usr/bin/env python3
"""karn benchmarks, side by side in one run: medians of N runs.

    python3 bench/run.py [--runs N] [--quick] [--write] [--no-runsc]

1. start-up: wall time of a static `hello` natively, `python3 -c pass`, `karn run hello`,
   and gVisor (`runsc --network=none --platform=ptrace do hello`, when runsc is installed
   and we are root). karn's own cost is karn minus `python3 -c pass`, both in a fresh
   venv, karn through the script pip writes (bench/startup.py says why).
2. per-syscall cost of a getpid loop: (t(N_large) - t(N_small)) / (N_large - N_small),
   which removes start-up, for native, karn (fast and exit syscall transports) and runsc,
   through glibc's getpid() (a `mov $39,%eax; syscall` window the fast transport patches)
   and through syscall() (a windowless site: the number from a register, patched through
   dead padding); the same for clock_gettime through libc (the vDSO), with karn
   also run with --no-vdso.
3. compute: a fixed integer hash loop (~1 s natively); karn/native ratio of the loop time
   the program measures itself (and of the wall time).
4. host memory: peak RSS of the process running an idle hello (karn's includes Python).

Prints a markdown report; --write also stores it in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from report import merge
from startup import fresh_venv, karn_script

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DOCS = REPO / "docs" / "benchmarks.md"
KARN = [sys.executable, "-m", "karn", "run"]
KARN_EXIT = [*KARN, "--syscall-transport", "exit"]
RUNSC = ["runsc", "--network=none", "--platform=ptrace", "do"]


class BenchError(Exception):
    """A benchmark could not run (the message says why)."""


@dataclass
class Runner:
    """One way to run a program: native, karn or runsc."""

    name: str
    prefix: list[str]

    def cmd(self, exe: Path, *args: str) -> list[str]:
        return [*self.prefix, str(exe), *args]


class RawLoop(Runner):
    """The getpid loop through syscall(): `raw` after the count."""

    def cmd(self, exe: Path, *args: str) -> list[str]:
        return [*self.prefix, str(exe), *args, "raw"]


def run_once(cmd: Sequence[str], timeout: float = 300) -> tuple[float, bytes]:
    """Wall time of one run, and its stdout. Raises BenchError on failure."""
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        last = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise BenchError(f"`{' '.join(cmd[-3:])}` exited {proc.returncode}: {last[0][:160]}")
    return elapsed, proc.stdout


def median_time(cmd: Sequence[str], runs: int) -> float:
    run_once(cmd)  # warm-up: page cache, Python bytecode cache
    return statistics.median(run_once(cmd)[0] for _ in range(runs))


def build(out_dir: Path, name: str) -> Path:
    exe = out_dir / name
    subprocess.run(["gcc", "-O2", "-static", "-o", str(exe), str(BENCH / f"{name}.c")], check=True)
    return exe


def peak_rss_kib(probe: Path, cmd: Sequence[str]) -> int:
    """Peak RSS (KiB) of cmd and the descendants it waited for (see rss_probe.c)."""
    proc = subprocess.run(
        [str(probe), *cmd], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=True
    )
    status, kib = proc.stdout.split()
    if status != "0":
        raise BenchError(f"`{' '.join(cmd[-3:])}` exited {status}")
    return int(kib)


def per_call_cost(runners: Sequence[Runner], loops: dict[str, tuple[int, int]], program: Path,
                  runs: int, what: str, problems: list[str]) -> dict[str, float | None]:
    """Seconds per call of a loop program: (t(N large) - t(N small)) / (large - small), so
    start-up cancels out; None where a runner failed (the reason goes to problems)."""
    cost: dict[str, float | None] = {}
    for r in runners:
        small, large = loops[r.name]
        try:
            t_small = median_time(r.cmd(program, str(small)), runs)
            t_large = median_time(r.cmd(program, str(large)), runs)
            cost[r.name] = max(0.0, t_large - t_small) / (large - small)
        except BenchError as exc:
            cost[r.name] = None
            problems.append(f"{what}, {r.name}: {exc}")
    return cost


def fmt_ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.1f} ms"


def fmt_us(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1e6:.2f} µs"


def machine_notes() -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    kvm = "real KVM (hardware virtualisation)"
    if Path("/sys/module/kvm_pvm").exists():
        kvm = "PVM (kvm_pvm: paravirtualised nested KVM, shadow paging) inside a Firecracker VM"
    notes = [
        f"CPU: {cpu}, {os.cpu_count()} cores; host kernel {platform.release()}",
        f"/dev/kvm: {kvm}",
        f"Python {platform.python_version()} ({sys.executable})",
    ]
    if shutil.which("runsc"):
        ver = subprocess.run(["runsc", "--version"], capture_output=True, text=True).stdout
        notes.append(f"gVisor: {ver.splitlines()[0] if ver else 'runsc'} (ptrace platform)")
    return notes


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7, help="runs per measurement (median)")
    ap.add_argument("--quick", action="store_true", help="smaller loops, for a smoke test")
    ap.add_argument("--write", action="store_true", help=f"also write {DOCS.relative_to(REPO)}")
    ap.add_argument("--no-runsc", action="store_true", help="leave gVisor out")
    args = ap.parse_args(argv)
    runs = max(1, args.runs)

    runners = [Runner("native", []), Runner("karn", KARN)]
    skipped: list[str] = []
    if args.no_runsc:
        skipped.append("gVisor: left out (--no-runsc)")
    elif not shutil.which("runsc"):
        skipped.append("gVisor: runsc not installed (apt-get install runsc)")
    elif os.geteuid() != 0:
        skipped.append("gVisor: `runsc do` needs root")
    else:
        runners.append(Runner("gVisor (runsc, ptrace)", RUNSC))

    problems: list[str] = []
    # outside /tmp: inside a karn guest /tmp is a private tmpfs
    with tempfile.TemporaryDirectory(prefix="karn-bench-", dir="/var/tmp") as tmp:
        out = Path(tmp)
        hello, loop, clock_loop, compute, probe = (
            build(out, n) for n in ("hello", "getpid_loop", "clock_loop", "compute", "rss_probe")
        )

        # 1. start-up
        startup: dict[str, float | None] = {}
        print(f"start-up ({runs} runs each) ...", file=sys.stderr)
        venv_python = fresh_venv(out / "venv")
        karn = karn_script(REPO, out / "venv", "karn")  # the command as pip installs it
        os.environ["PYTHONPATH"] = str(REPO)  # what the venv's karn script imports
        startup["python3 -c pass"] = median_time([venv_python, "-c", "pass"], runs)
        for r in runners:
            cmd = [venv_python, str(karn), "run", str(hello)] if r.name == "karn" \
                else r.cmd(hello)
            try:
                startup[r.name] = median_time(cmd, runs)
            except BenchError as exc:
                startup[r.name] = None
                problems.append(f"start-up, {r.name}: {exc}")

        # 2. per-syscall cost: getpid() (patched by the fast transport), then syscall()
        getpid_runners = [*runners[:2], Runner("karn (exit transport)", KARN_EXIT),
                          *runners[2:]]
        getpid_runners += [RawLoop(f"{r.name}, syscall()", r.prefix) for r in getpid_runners]
        loops = {}
        for r in getpid_runners:
            large = {"native": 2_000_000, "karn": 100_000}.get(r.name, 20_000)
            loops[r.name] = (1_000, large // 10 if args.quick else large)
        print("getpid loop ...", file=sys.stderr)
        per_call = per_call_cost(getpid_runners, loops, loop, runs, "getpid loop", problems)

        # 2b. clock_gettime through libc: the vDSO (karn's, runsc's) or a syscall each
        clock_runners = [*runners[:2], Runner("karn --no-vdso", [*KARN, "--no-vdso"]),
                         *runners[2:]]
        clock_loops = {"native": (1_000, 20_000_000), "karn": (1_000, 20_000_000),
                       "karn --no-vdso": (1_000, 20_000),
                       "gVisor (runsc, ptrace)": (1_000, 20_000_000)}
        if args.quick:
            clock_loops = {k: (small, max(small * 2, large // 10))
                           for k, (small, large) in clock_loops.items()}
        print("clock_gettime loop ...", file=sys.stderr)
        clock_cost = per_call_cost(clock_runners, clock_loops, clock_loop, runs,
                                   "clock_gettime loop", problems)

        # 3. compute: calibrate ~1 s natively, then compare the loop's own time
        print("compute ...", file=sys.stderr)
        target = 0.1 if args.quick else 1.0
        rounds = 10_000_000
        inner = int(run_once([str(compute), str(rounds)])[1].split()[1]) / 1e9
        rounds = max(rounds, int(rounds * target / max(inner, 1e-6)))
        compute_runs = max(3, min(runs, 5))
        compute_res: dict[str, tuple[float, float] | None] = {}
        results_seen: set[bytes] = set()
        for r in runners[:2]:  # native and karn
            try:
                inner_times, walls = [], []
                for _ in range(compute_runs):
                    wall, stdout = run_once(r.cmd(compute, str(rounds)))
                    checksum, ns = stdout.split()
                    results_seen.add(checksum)
                    inner_times.append(int(ns) / 1e9)
                    walls.append(wall)
                compute_res[r.name] = (statistics.median(inner_times), statistics.median(walls))
            except (BenchError, ValueError, IndexError) as exc:
                compute_res[r.name] = None
                problems.append(f"compute, {r.name}: {exc}")
        if len(results_seen) > 1:
            problems.append("compute: karn and native computed different results!")

        # 4. peak RSS of an idle hello
        print("peak RSS ...", file=sys.stderr)
        rss: dict[str, int | None] = {}
        rss["python3 -c pass"] = peak_rss_kib(probe, [sys.executable, "-c", "pass"])
        for r in runners:
            try:
                rss[r.name] = statistics.median(peak_rss_kib(probe, r.cmd(hello)) for _ in range(3))
            except BenchError as exc:
                rss[r.name] = None
                problems.append(f"peak RSS, {r.name}: {exc}")

    report = render(
        runs, rounds, compute_runs, startup, per_call, loops, compute_res, rss, skipped, problems,
        (clock_cost, clock_loops),
    )
    print(report)
    if args.write:  # the other scripts' sections are kept
        merge(report)
    return 1 if problems else 0


def render(
    runs, rounds, compute_runs, startup, per_call, loops, compute_res, rss, skipped, problems,
    clock,
) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python3 bench/run.py --write` (or `make bench`) on {now}; "
        f"each figure is the median of {runs} runs unless noted.",
        "",
        "Machine:",
        "",
        *[f"- {n}" for n in machine_notes()],
        "",
        "## Start-up: `hello` (static, prints one line)",
        "",
        "| runner | wall time (median) |",
        "| --- | ---: |",
    ]
    for name, t in startup.items():
        lines.append(f"| {name} | {fmt_ms(t)} |")
    py, kt = startup.get("python3 -c pass"), startup.get("karn")
    own = None if py is None or kt is None else kt - py
    verdict = "" if own is None else ", met" if own <= 0.030 else ", not met"
    lines += [
        "",
        f"karn's own start-up cost (karn minus `python3 -c pass`): **{fmt_ms(own)}** "
        f"(target, issue 14: at most 30 ms{verdict}).",
        "",
        "## Per-syscall cost: getpid loop",
        "",
        "Per call = (t(N large) − t(N small)) / (N large − N small), which removes start-up. "
        "Through glibc's `getpid()`, a `mov $39,%eax; syscall` site that karn's fast "
        "transport (the default) patches into a call served in shared memory; the rows "
        "marked `syscall()` go through glibc's `syscall()`, a windowless site (the number "
        "comes from a register) that it patches through the padding after the function "
        "(docs/design/fast-syscalls.md, section 3.4).",
        "",
        "| runner | N small | N large | per call |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, cost in per_call.items():
        small, large = loops[name]
        lines.append(f"| {name} | {small:,} | {large:,} | {fmt_us(cost)} |")
    clock_cost, clock_loops = clock
    lines += [
        "",
        "## Per-call cost: `clock_gettime(CLOCK_MONOTONIC)` loop",
        "",
        "Through libc, which uses the vDSO when there is one (karn's reads a TSC time page "
        "the monitor keeps; `--no-vdso` makes every call a system call). Per call as above.",
        "",
        "| runner | N small | N large | per call |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, cost in clock_cost.items():
        small, large = clock_loops[name]
        lines.append(f"| {name} | {small:,} | {large:,} | {fmt_us(cost)} |")
    lines += [
        "",
        "## Compute-bound: integer hash loop, no syscalls inside",
        "",
        f"{rounds:,} rounds; median of {compute_runs} runs. The loop time is measured by the "
        "program itself (CLOCK_MONOTONIC), so start-up is left out; wall time includes it.",
        "",
        "| runner | loop time | wall time |",
        "| --- | ---: | ---: |",
    ]
    for name, res in compute_res.items():
        lines.append(f"| {name} | {fmt_ms(res and res[0])} | {fmt_ms(res and res[1])} |")
    nat, kr = compute_res.get("native"), compute_res.get("karn")
    if nat and kr:
        ratio = kr[0] / nat[0]
        verdict = "met" if ratio <= 1.02 else "not met"
        lines += [
            "",
            f"karn/native loop-time ratio: **{ratio:.3f}** (target: within 2%, issue 14; "
            f"{verdict}); wall-time ratio {kr[1] / nat[1]:.3f}.",
        ]
    lines += [
        "",
        "## Host memory: peak RSS running an idle `hello`",
        "",
        "ru_maxrss of the runner (largest process of its tree, from wait4; karn's includes its "
        "Python interpreter and the guest memory it touched).",
        "",
        "| runner | peak RSS |",
        "| --- | ---: |",
    ]
    for name, kib in rss.items():
        lines.append(f"| {name} | {'—' if kib is None else f'{kib / 1024:.1f} MiB'} |")
    if skipped or problems:
        lines += ["", "## Notes", ""]
        lines += [f"- {s}" for s in skipped]
        lines += [f"- FAILED: {p}" for p in problems]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
