#!/usr/bin/env python3
"""karn as podman's OCI runtime beside runc (docs/benchmarks.md, docs/oci-runtime.md).

    python3 bench/oci.py [--runs N] [--containers N]

start-up: `podman run --rm IMAGE /bin/true` wall time, karn-oci and runc taking turns run
by run (A B A B ...), medians over N runs each.
memory: N idle containers of each runtime (`podman run -d IMAGE /bin/sleep 1000`) at
once; per container, the proportional set size (PSS, /proc/PID/smaps_rollup) of its host
processes (conmon and everything under it: for karn the monitor, whose guest memory is
its own, for runc the container's process), median over the containers; and the fall of
the host's MemAvailable with all of them running, divided by N (includes kernel memory:
KVM's page tables and vCPU state, page cache; noisy on a shared machine).

Needs podman and runc, as root; imports a busybox-static image from a local directory.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGE = "localhost/karn-bench-busybox:1"


def podman(*args: str) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        sys.exit(f"podman {' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout.strip()


def make_image(work: Path) -> None:
    root = work / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in ("true", "sleep"):
        (root / "bin" / applet).symlink_to("busybox")
    with tarfile.open(work / "root.tar", "w") as tar:
        tar.add(root, arcname=".")
    podman("import", "--quiet", str(work / "root.tar"), IMAGE)


def karn_oci(work: Path) -> str:
    """karn-oci of this checkout, bytecode compiled first as an installed wheel has it."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "karn")], check=True)
    script = work / "karn-oci"
    script.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m karn.oci \"$@\"\n")
    script.chmod(0o755)
    return str(script)


def runtimes(karn: str) -> dict[str, list[str]]:
    """runc applies podman's default rlimits itself: without CAP_SYS_RESOURCE (as on
    these machines) it can only keep the hard limits it has."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(4096, resource.getrlimit(resource.RLIMIT_NPROC)[1])
    return {"karn": ["--runtime", karn],
            "runc": ["--runtime", "runc", "--ulimit", f"nofile={nofile}:{nofile}",
                     "--ulimit", f"nproc={nproc}:{nproc}"]}


def time_run(options: list[str]) -> float:
    start = time.perf_counter()
    podman("run", "--rm", *options, IMAGE, "/bin/true")
    return time.perf_counter() - start


def startup(kinds: dict[str, list[str]], runs: int) -> None:
    for options in kinds.values():
        time_run(options)  # warm-up: page cache, podman's storage
    walls: dict[str, list[float]] = {name: [] for name in kinds}
    for _ in range(runs):
        for name, options in kinds.items():
            walls[name].append(time_run(options))
    print(f"podman run --rm IMAGE /bin/true, median of {runs} (min-max):")
    for name, values in walls.items():
        print(f"  {name}: {statistics.median(values):.2f} s "
              f"({min(values):.2f}-{max(values):.2f})")
    ratios = [k / r for k, r in zip(walls["karn"], walls["runc"], strict=True)]
    print(f"  karn/runc, pair by pair: median {statistics.median(ratios):.2f}")


def children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            parent = int(stat[stat.rindex(b")") + 2:].split()[1])
            tree.setdefault(parent, []).append(int(entry))
    return tree


def pss_kib(top: int, tree: dict[int, list[int]]) -> int:
    """PSS of a process and all its descendants, KiB."""
    total, todo = 0, [top]
    while todo:
        pid = todo.pop()
        todo += tree.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def settle() -> int:
    """MemAvailable once it stops moving (freed memory returns lazily)."""
    last = mem_available_kib()
    for _ in range(20):
        time.sleep(0.5)
        now = mem_available_kib()
        if abs(now - last) < 1024:
            return now
        last = now
    return last


def memory(kinds: dict[str, list[str]], count: int) -> None:
    print(f"{count} idle containers (/bin/sleep 1000), host memory per container:")
    for name, options in kinds.items():
        before = settle()
        ids = [podman("run", "-d", *options, IMAGE, "/bin/sleep", "1000")
               for _ in range(count)]
        try:
            deadline = time.monotonic() + 300
            while set(podman("inspect", "--format", "{{.State.Status}}", *ids).split()) \
                    != {"running"}:
                if time.monotonic() > deadline:
                    sys.exit("the containers did not all reach running")
                time.sleep(0.5)
            after = settle()
            tree = children()
            pss = [pss_kib(int(podman("inspect", "--format", "{{.State.ConmonPid}}", cid)),
                           tree) for cid in ids]
        finally:
            podman("rm", "-f", "-t", "0", *ids)
        print(f"  {name}: PSS of conmon and its children {statistics.median(pss) / 1024:.1f}"
              f" MiB (median), MemAvailable fall {(before - after) / count / 1024:.1f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=11, help="start-up runs of each (11)")
    parser.add_argument("--containers", type=int, default=20,
                        help="idle containers of each runtime at once (20)")
    parser.add_argument("--only", choices=("startup", "memory"), help="one measurement")
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("runc"):
        sys.exit("bench/oci.py: needs root, podman and runc")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make_image(work)
        kinds = runtimes(karn_oci(work))
        if args.only != "memory":
            startup(kinds, args.runs)
        if args.only != "startup":
            memory(kinds, args.containers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
