#!/usr/bin/env python3
"""The fast syscall transport beside the exit transport and native (issue 14):

    python3 bench/fastcall.py [--runs N] [--calls N] [--rounds N] [--threads N] [--files N]
                              [--load N] [--cases LIST] [--base DIR]... [--transports LIST]

getpid: glibc's getpid() in a loop; pingpong: a futex hand-over between two threads (one
round = two hand-overs); threads: pthread_create + pthread_join, one thread at a time;
files: open, fstat, pread and close of a 612-byte file on a volume (a static web server's
request, nginx's page); on --cpus 2. Each run measures inside the program (start-up
excluded); the runners take turns run by run, so a change in the host's load falls on all
of them alike. Prints medians of --runs runs in microseconds per operation, and the host
CPU time (user+sys of the whole run, start-up included) per operation, with the load
average, which these numbers depend on (the fast path needs the guest's vCPU and the
server thread on host cores at the same time). --load N adds N busy-looping processes for
the whole measurement (a host short of cores). Each --base DIR adds runners: the
transports (--transports) of the karn source tree DIR (another checkout, before a change),
taking turns with the others.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from trees import compile_tree

BENCH = Path(__file__).resolve().parent
KARN = [sys.executable, "-m", "karn", "run", "--cpus", "2"]
GUEST_DIR = "/bench"  # where the guest sees the files case's directory


def run_once(cmd: list[str], tree: Path | None) -> tuple[float, float]:
    """(µs per operation the program measured, host CPU µs of the whole run); tree: the
    karn source tree to run (`python3 -m` imports from the working directory first)."""
    env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=600, env=env,
                         cwd=tree).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1e6
    return float(out.split()[-1]), cpu


def busy_loops(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=500)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--load", type=int, default=0, help="busy-looping processes to add")
    parser.add_argument("--cases", default="getpid,pingpong,threads,files")
    parser.add_argument("--base", type=Path, action="append", default=[],
                        help="also the transports of this karn tree (repeatable)")
    parser.add_argument("--transports", default="exit,fast",
                        help="karn's transports to run, of this tree and each --base")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        exe = Path(tmp) / "fastcall_loops"
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe),
                        str(BENCH / "fastcall_loops.c")], check=True)
        (Path(tmp) / "page.html").write_bytes(b"x" * 612)  # the files case's page, on a
        karn = [*KARN, "-v", f"{tmp}:{GUEST_DIR}:ro"]  # volume at the top as nginx's site
        transports = args.transports.split(",")
        runners: dict[str, tuple[list[str], Path | None]] = {"native": ([], None)}
        for transport in transports:
            runners[f"karn {transport}"] = ([*karn, "--syscall-transport", transport], None)
        compile_tree(BENCH.parent)
        for base in args.base:
            compile_tree(base)
            for transport in transports:
                runners[f"karn {transport} ({base.name})"] = (
                    [*karn, "--syscall-transport", transport], base.resolve())
        sizes = {"getpid": args.calls, "pingpong": args.rounds, "threads": args.threads,
                 "files": args.files}
        cases = {case: sizes[case] for case in args.cases.split(",")}
        load = busy_loops(args.load)
        try:
            before = os.getloadavg()[0]
            rows = []
            for case, n in cases.items():
                times: dict[str, list[float]] = {name: [] for name in runners}
                cpus: dict[str, list[float]] = {name: [] for name in runners}
                for _ in range(args.runs):
                    for name, (prefix, tree) in runners.items():
                        page = Path(GUEST_DIR if prefix else tmp) / "page.html"
                        files = [str(page)] if case == "files" else []
                        per_op, cpu = run_once([*prefix, str(exe), case, str(n), *files], tree)
                        times[name].append(per_op)
                        cpus[name].append(cpu / n)
                rows.append((case, times, cpus))
            after = os.getloadavg()[0]
        finally:
            for proc in load:
                proc.kill()
                proc.wait()
    added = f", {args.load} busy loops added" if args.load else ""
    print(f"medians of {args.runs} runs, us per operation (host CPU us per operation); "
          f"load average {before:.1f}-{after:.1f} on {os.cpu_count()} cores{added}")
    print("| case | " + " | ".join(runners) + " |")
    print("|---|" + "---:|" * len(runners))
    for case, times, cpus in rows:
        cells = [f"{statistics.median(times[name]):.2f} ({statistics.median(cpus[name]):.1f})"
                 for name in runners]
        print(f"| {case} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
