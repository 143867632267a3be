#!/usr/bin/env python3
"""fork+exit+wait and fork+exec+wait per operation, native, under karn and under gVisor
(`runsc --platform=ptrace do`, when installed and run as root), posix_spawn
(vfork) of a program that exits, a shell pipeline, and what a forked child of a big
parent adds to the host's resident memory (issue 15):

    python3 bench/fork.py [--runs N] [--forks N] [--mib N] [--no-runsc]

Each fork run measures inside the program (bench/fork_loop.c; start-up excluded); medians
of --runs runs in ms per operation, the first fork of a run apart (under karn it also
starts the process table and moves /tmp to the host). The spawn rows give the time
posix_spawn takes (the parent is suspended until its child execs) and spawn+wait. The
pipeline row times whole `busybox sh -c` runs of a loop of `echo | cat | wc -c` (three
processes each) with N and with 0 iterations and divides the difference by N, so
start-up cancels out. The make row
times `make -j2` of a five-file C project (gcc spawning cc1, as, collect2 and ld for each)
from scratch, the toolchain mounted read-only (`-v /usr:/usr:ro`), whole runs. Then a parent
touching --mib MiB forks a child that waits: the host memory of the child's monitor
process from /proc/PID/smaps_rollup (Rss counts pages shared with the parent; Private is
what the child added), beside the parent's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
KARN = [sys.executable, "-m", "karn", "run"]
RUNSC = ["runsc", "--network=none", "--platform=ptrace", "do"]
BUSYBOX = "/bin/busybox"
PIPELINE = "i=0; while [ $i -lt {n} ]; do echo x | cat | wc -c >/dev/null; i=$((i+1)); done"


def build(out: Path) -> Path:
    program = out / "fork_loop"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(program), str(BENCH / "fork_loop.c")],
                   check=True)
    return program


def per_op(cmd: list[str]) -> list[float]:
    """The program's numbers (µs per operation) in ms."""
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=600).stdout
    return [float(word) / 1000 for word in out.split()]


def wall(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, timeout=600)
    return time.perf_counter() - started


def per_pipeline(prefix: list[str], n: int) -> float:
    """ms per `echo x | cat | wc -c` in a shell loop, start-up subtracted."""
    def loop(count: int) -> float:
        return wall([*prefix, BUSYBOX, "sh", "-c", PIPELINE.format(n=count)])
    return (loop(n) - loop(0)) / n * 1000


def make_project(root: Path) -> Path:
    """Five C files and a Makefile linking them."""
    root.mkdir()
    for i in range(1, 5):
        (root / f"f{i}.c").write_text(f"int f{i}(int x) {{ return x * {i}; }}\n")
    (root / "main.c").write_text(
        "#include <stdio.h>\nint f1(int), f2(int), f3(int), f4(int);\n"
        "int main(void) { printf(\"%d\\n\", f1(1) + f2(2) + f3(3) + f4(4)); return 0; }\n")
    (root / "Makefile").write_text(
        "OBJS = main.o f1.o f2.o f3.o f4.o\nprog: $(OBJS)\n\tgcc -o $@ $(OBJS)\n"
        "%.o: %.c\n\tgcc -O2 -c -o $@ $<\n")
    return root


def per_make(prefix: list[str], project: Path) -> float:
    """ms of a whole `make -j2` from scratch."""
    for built in [*project.glob("*.o"), project / "prog"]:
        built.unlink(missing_ok=True)
    if prefix:
        cmd = [*prefix, "-v", "/usr:/usr:ro", "-v", f"{project}:/src", "-w", "/src",
               "/usr/bin/make", "-j2"]
    else:
        cmd = ["make", "-C", str(project), "-j2"]
    return wall(cmd) * 1000


def memory(pid: int) -> dict[str, int]:
    """KiB by smaps_rollup field."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return fields


def children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def cow(program: Path, mib: int) -> None:
    proc = subprocess.Popen([*KARN, "-m", f"{4 * mib}m", str(program), "cow", str(mib)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"ready\n"
        (child,) = children(proc.pid)
        for name, pid in (("parent monitor", proc.pid), ("child monitor", child)):
            m = memory(pid)
            private = m["Private_Clean"] + m["Private_Dirty"]
            print(f"  {name:15} Rss {m['Rss'] / 1024:7.1f} MiB  Pss {m['Pss'] / 1024:7.1f} MiB"
                  f"  Private {private / 1024:7.1f} MiB")
    finally:
        proc.communicate(b"\n", timeout=120)


def runners_here(no_runsc: bool) -> dict[str, tuple[list[str], int, int]]:
    """name: (command prefix, forks per --forks, pipeline loops per --forks)."""
    found = {"native": ([], 10, 5), "karn": (KARN, 1, 1)}
    if not no_runsc and shutil.which("runsc") and os.geteuid() == 0:
        found["runsc"] = (RUNSC, 2, 2)
    return found


def report(what: str, results: dict[str, list[float]], runs: int, unit: str = "") -> None:
    cells = "   ".join(f"{name} {statistics.median(values):8.2f} ms"
                       for name, values in results.items())
    print(f"{what}  {cells}   {unit}(median of {runs}, load average "
          f"{os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--forks", type=int, default=20)
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--no-runsc", action="store_true", help="leave gVisor out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        program = build(Path(tmp))
        runners = runners_here(args.no_runsc)
        for what, mode in (("fork+exit+wait", []), ("fork+exec+wait", ["exec"])):
            forks: dict[str, list[list[float]]] = {name: [] for name in runners}
            for _ in range(args.runs):  # taking turns: a change in load falls on all
                for name, (prefix, scale, _) in runners.items():
                    forks[name].append(
                        per_op([*prefix, str(program), *mode, str(args.forks * scale)]))
            report(what, {name: [r[1] for r in rows] for name, rows in forks.items()},
                   args.runs, "after the first ")
            report(f"  the first {what}", {name: [r[0] for r in rows]
                                          for name, rows in forks.items()}, args.runs)
        spawns: dict[str, list[list[float]]] = {name: [] for name in runners}
        for _ in range(args.runs):
            for name, (prefix, scale, _) in runners.items():
                spawns[name].append(per_op([*prefix, str(program), "spawn",
                                            str(args.forks * scale)]))
        for i, what in enumerate(("posix_spawn returns", "posix_spawn+wait")):
            report(what, {name: [r[i] for r in rows] for name, rows in spawns.items()},
                   args.runs)
        results: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.runs):
            for name, (prefix, _, loops) in runners.items():
                results[name].append(per_pipeline(prefix, args.forks * loops))
        report("sh pipeline", results, args.runs, "per `echo | cat | wc` ")
        project = make_project(Path(tmp) / "project")
        results = {"native": [], "karn": []}  # (karn's own -v mounts the toolchain)
        for _ in range(args.runs):
            results["native"].append(per_make([], project))
            results["karn"].append(per_make(KARN, project))
        report("make -j2", results, args.runs, "5 C files, whole run ")
        print(f"a {args.mib} MiB parent forks a child that waits:")
        cow(program, args.mib)


if __name__ == "__main__":
    main()
