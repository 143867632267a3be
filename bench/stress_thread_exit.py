#!/usr/bin/env python3
"""Stress: many-threaded guests exiting at random times must never crash or wedge the
monitor (issue 12, R1). Each run starts tests/programs/thread_exit_storm.c with THREADS
threads (sleeping, spinning, making syscalls) and calls exit_group after a random delay.

    python3 bench/stress_thread_exit.py [--runs 1000] [--threads 100] [--jobs 2]

Reports runs whose status differs from the guest's, monitor deaths by signal, timeouts,
runs with stderr output, and karn-unix-* directories left behind. Exit status 1 if any.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "tests" / "programs" / "thread_exit_storm.c"
STATUS = 7
TIMEOUT = 120.0


def one_run(exe: Path, threads: int, env: dict[str, str]) -> tuple[str, str]:
    delay = random.randint(0, 200)
    cmd = [sys.executable, "-m", "karn", "run", str(exe), str(threads), str(STATUS), str(delay)]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, env=env, stdin=subprocess.DEVNULL, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return "timeout", f"delay {delay} ms"
    err = proc.stderr.decode(errors="replace").strip()
    if proc.returncode < 0:
        return f"monitor killed by signal {-proc.returncode}", err[-300:]
    if proc.returncode != STATUS:
        return f"status {proc.returncode}", err[-300:]
    if err:
        return "stderr output", err[-300:]
    return "ok", ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="karn-stress-", dir="/var/tmp"))
    exe = work / "thread_exit_storm"
    subprocess.run(["gcc", "-static", "-O1", "-pthread", "-o", str(exe), str(SOURCE)], check=True)
    tmp = work / "tmp"  # the monitors' TMPDIR: what they leave behind is counted here
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
    outcomes: collections.Counter[str] = collections.Counter()
    examples: dict[str, str] = {}
    start = time.monotonic()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(one_run, exe, args.threads, env) for _ in range(args.runs)]
        for done, future in enumerate(futures, 1):
            outcome, detail = future.result()
            outcomes[outcome] += 1
            examples.setdefault(outcome, detail)
            if done % 100 == 0:
                print(f"{done}/{args.runs} runs, {dict(outcomes)}", flush=True)
    leftovers = [n for n in os.listdir(tmp) if n.startswith("karn-unix-")]
    elapsed = time.monotonic() - start
    print(
        f"{args.runs} runs of a {args.threads}-thread exit in {elapsed:.0f} s "
        f"({args.jobs} at a time): {dict(outcomes)}; karn-unix-* left: {len(leftovers)}"
    )
    for outcome, detail in examples.items():
        if outcome != "ok" and detail:
            print(f"  {outcome}: {detail}")
    subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0 if outcomes["ok"] == args.runs and not leftovers else 1


if __name__ == "__main__":
    sys.exit(main())
