"""APEX numbers for docs/benchmarks.md (docs/apex.md): queuing-port write-to-read latency
and the cost of a sampling read, through libapex versus raw /dev/ports, and PERIODIC_WAIT
release lateness (a periodic 20 ms process alone and beside a spinning low-priority one).

    PYTHONPATH=. python3 bench/apex.py

Builds apex/ with make and the programs with gcc, runs them as karn partitions (a
two-partition system under the fair schedule for the ports), prints one line per number.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APEX = REPO / "apex"

SYSTEM = """
name = "apexbench{mode}"
[partitions.ping]
program = "{exe}"
args = ["ping", "{mode}"]
[partitions.ping.ports.q]
direction = "out"
max_size = 8
[partitions.ping.ports.s]
direction = "out"
kind = "sampling"
max_size = 8
[partitions.pong]
program = "{exe}"
args = ["pong", "{mode}"]
[partitions.pong.ports.q]
direction = "in"
max_size = 8
[partitions.pong.ports.s]
direction = "in"
kind = "sampling"
max_size = 8
[[channels]]
from = "ping.q"
to = "pong.q"
[[channels]]
from = "ping.s"
to = "pong.s"
"""


def build(work: Path, source: Path) -> Path:
    subprocess.run(["make", "-s", "-C", str(APEX), f"BUILD={work / 'lib'}"], check=True)
    exe = work / source.stem
    subprocess.run(["gcc", "-static", "-O2", f"-I{APEX / 'include'}", "-o", str(exe),
                    str(source), str(work / "lib" / "libapex.a"), "-lpthread"], check=True)
    return exe


def karn(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "karn", *args], env=env, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"karn {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="apexbench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        env = dict(os.environ, KARN_STATE_DIR=str(work / "state"))
        latency = build(work, REPO / "bench" / "apex_latency.c")
        preempt = build(work, REPO / "tests" / "programs" / "apex_preempt.c")
        for mode in ("raw", "apex"):
            path = work / f"{mode}.toml"
            path.write_text(SYSTEM.format(exe=latency, mode=mode))
            karn(env, "system", "up", str(path))
            out = karn(env, "system", "logs", "-s", f"apexbench{mode}", "pong")
            for line in out.splitlines():
                print(line)
        for mode in ("idle", "busy"):
            out = karn(env, "run", str(preempt), mode).strip()
            print(f"periodic_wait_20ms_{mode} {out}")


if __name__ == "__main__":
    main()
