#!/usr/bin/env python3
"""Syscall cost by kind of call site, side by side in one run: medians of N runs.

    python3 bench/sites.py [--runs N] [--iterations N] [--base DIR] [--no-runsc] [--write]

The same loop (write, read, fstat and lseek or getpid on /dev/null; bench/io_loop.c and
bench/go/io_loop.go) through three C libraries' wrappers, whose syscall sites karn's fast
transport patches differently (docs/design/fast-syscalls.md, section 3):
- glibc (gcc, dynamic): `mov $nr,%eax; syscall` windows, and read's short site;
- musl (musl-gcc, static): read and write through __syscall_cp_c's windowless site (the
  number from a register), fstat and lseek inline; dynamic (as in Alpine images): read
  and write through __syscall_cp_asm, patched at its instruction before the syscall;
- Go (CGO_ENABLED=0): the syscall package's calls through Syscall6, windowless.
Each run measures inside the program (µs per iteration of 4 calls, start-up excluded).
Runners take turns run by run: native, karn with --syscall-transport fast and exit,
`karn fast (DIR)` for each --base DIR (another checkout, before a change), and gVisor
(`runsc --network=none --platform=ptrace do`) when installed and running as root.
Prints a markdown section; --write replaces the "Syscall sites" section of
docs/benchmarks.md.
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
from pathlib import Path

from report import merge

BENCH = Path(__file__).resolve().parent
KARN = [sys.executable, "-m", "karn", "run"]
RUNSC = ["runsc", "--network=none", "--platform=ptrace", "do"]
SECTION = "## Syscall sites: glibc, musl, Go"


class BenchError(Exception):
    """A benchmark could not run (the message says why)."""


def build(out: Path) -> dict[str, Path]:
    """The loop for each C library: name -> executable."""
    programs = {}
    for name, cc, flags in (("glibc", "gcc", []), ("musl", "musl-gcc", ["-static"]),
                            ("musl (dynamic)", "musl-gcc", [])):
        if not shutil.which(cc):
            raise BenchError(f"{cc} not found (apt-get install gcc musl-tools)")
        exe = out / f"io_loop-{name.replace(' ', '-').strip('()')}"
        subprocess.run([cc, "-O2", *flags, "-o", str(exe), str(BENCH / "io_loop.c")],
                       check=True)
        programs[name] = exe
    if not shutil.which("go"):
        raise BenchError("go not installed (apt-get install golang-go)")
    exe = out / "io_loop-go"
    env = dict(os.environ, CGO_ENABLED="0", GOCACHE=str(out / "gocache"), GO111MODULE="off")
    proc = subprocess.run(["go", "build", "-o", str(exe), str(BENCH / "go" / "io_loop.go")],
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        raise BenchError(f"go build failed: {proc.stderr.strip()[:200]}")
    programs["Go"] = exe
    return programs


def run_once(prefix: list[str], exe: Path, iterations: int, tree: Path | None) -> float:
    """µs per iteration the program measured; tree: the karn source tree to import
    (`python3 -m` looks in the working directory first)."""
    env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([*prefix, str(exe), str(iterations)], capture_output=True,
                          text=True, timeout=600, env=env, cwd=tree, stdin=subprocess.DEVNULL)
    if proc.returncode:
        raise BenchError(f"{' '.join(prefix[-3:])} {exe.name} failed "
                         f"({proc.returncode}): {proc.stderr.strip()[-200:]}")
    return float(proc.stdout.split()[-1])


def runners(bases: list[Path], runsc: bool) -> dict[str, tuple[list[str], Path | None]]:
    chosen: dict[str, tuple[list[str], Path | None]] = {"native": ([], None)}
    for transport in ("fast", "exit"):
        chosen[f"karn {transport}"] = ([*KARN, "--syscall-transport", transport], None)
    for base in bases:
        chosen[f"karn fast ({_commit(base)})"] = ([*KARN, "--syscall-transport", "fast"],
                                                  base.resolve())
    if runsc:
        chosen["runsc"] = (RUNSC, None)
    return chosen


def _commit(tree: Path) -> str:
    """The tree's commit (short), or its directory's name outside git."""
    got = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    return got.stdout.strip() or tree.name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=5000)
    parser.add_argument("--base", type=Path, action="append", default=[],
                        help="also karn's fast transport of this source tree (repeatable)")
    parser.add_argument("--no-runsc", action="store_true")
    parser.add_argument("--write", action="store_true",
                        help="replace the section in docs/benchmarks.md")
    args = parser.parse_args()
    runsc = not args.no_runsc and shutil.which("runsc") is not None and os.geteuid() == 0
    try:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            programs = build(Path(tmp))
            chosen = runners(args.base, runsc)
            load = [os.getloadavg()[0]]
            times = {(p, r): [] for p in programs for r in chosen}
            for _ in range(args.runs):
                for program, exe in programs.items():
                    for name, (prefix, tree) in chosen.items():
                        times[program, name].append(
                            run_once(prefix, exe, args.iterations, tree))
            load.append(os.getloadavg()[0])
    except BenchError as err:
        print(f"bench/sites.py: {err}", file=sys.stderr)
        return 1
    report = render(programs, chosen, times, args, load)
    print(report)
    if args.write:
        merge(report)
    return 0


def render(programs: dict[str, Path], chosen: dict, times: dict, args: argparse.Namespace,
           load: list[float]) -> str:
    lines = [
        SECTION,
        "",
        f"Generated by `python3 bench/sites.py --runs {args.runs}` on "
        f"{datetime.date.today()} ({os.cpu_count()} host CPUs, load average "
        f"{min(load):.1f}-{max(load):.1f}); runners taking turns, medians of {args.runs} "
        f"runs of {args.iterations:,} iterations, µs per iteration of 4 calls (write, "
        "read, fstat, lseek or getpid on /dev/null), as a multiple of native in brackets.",
        "",
        "| program | " + " | ".join(chosen) + " |",
        "| --- |" + " ---: |" * len(chosen),
    ]
    for program in programs:
        native = statistics.median(times[program, "native"])
        cells = []
        for name in chosen:
            value = statistics.median(times[program, name])
            cells.append(f"{value:.2f}" if name == "native" else
                         f"{value:.2f} ({value / native:.0f}x)")
        lines.append(f"| {program} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
