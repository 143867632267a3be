#!/usr/bin/env python3
"""The fast syscall transport beside the exit transport and native (issue 14):

    python3 bench/fastcall.py [--runs N] [--calls N] [--rounds N]

getpid: glibc's getpid() in a loop; pingpong: a futex hand-over between two threads (one
round = two hand-overs), on --cpus 2. Each run measures inside the program (start-up
excluded); prints medians of --runs runs in microseconds, with the host's load average,
which these numbers depend on (the fast path needs the guest's vCPU and the server thread
on host cores at the same time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
KARN = [sys.executable, "-m", "karn", "run", "--cpus", "2"]


def per_op(cmd: list[str]) -> float:
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=600).stdout
    return float(out.split()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        exe = Path(tmp) / "fastcall_loops"
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(exe),
                        str(BENCH / "fastcall_loops.c")], check=True)
        runners = {
            "native": [],
            "karn exit": [*KARN, "--syscall-transport", "exit"],
            "karn fast": [*KARN, "--syscall-transport", "fast"],
        }
        cases = {"getpid": args.calls, "pingpong": args.rounds}
        load = os.getloadavg()[0]
        print(f"medians of {args.runs} runs, us per operation; load average {load:.1f} "
              f"on {os.cpu_count()} cores")
        print("| case | " + " | ".join(runners) + " |")
        print("|---|" + "---:|" * len(runners))
        for case, n in cases.items():
            cells = []
            for prefix in runners.values():
                times = [per_op([*prefix, str(exe), case, str(n)]) for _ in range(args.runs)]
                cells.append(f"{statistics.median(times):.2f}")
            print(f"| {case} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
