#!/usr/bin/env python3
"""fork+exit+wait and fork+exec+wait per operation, native and under karn, posix_spawn
(vfork) of a program that exits, a shell pipeline, and what a forked child of a big
parent adds to the host's resident memory (issue 15):

    python3 bench/fork.py [--runs N] [--forks N] [--mib N]

Each fork run measures inside the program (bench/fork_loop.c; start-up excluded); medians
of --runs runs in ms per operation. The spawn rows give the time posix_spawn takes (the
parent is suspended until its child execs) and spawn+wait. The pipeline row times whole
`busybox sh -c` runs of a loop of `echo | cat | wc -c` (three processes each) with N and
with 0 iterations and divides the difference by N, so start-up cancels out. The make row
times `make -j2` of a five-file C project (gcc spawning cc1, as, collect2 and ld for each)
from scratch, the toolchain mounted read-only (`-v /usr:/usr:ro`), whole runs. Then a parent
touching --mib MiB forks a child that waits: the host memory of the child's monitor
process from /proc/PID/smaps_rollup (Rss counts pages shared with the parent; Private is
what the child added), beside the parent's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
KARN = [sys.executable, "-m", "karn", "run"]
BUSYBOX = "/bin/busybox"
PIPELINE = "i=0; while [ $i -lt {n} ]; do echo x | cat | wc -c >/dev/null; i=$((i+1)); done"


def build(out: Path) -> Path:
    program = out / "fork_loop"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(program), str(BENCH / "fork_loop.c")],
                   check=True)
    return program


def per_fork(cmd: list[str]) -> float:
    return per_op(cmd)[-1]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--forks", type=int, default=20)
    parser.add_argument("--mib", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        program = build(Path(tmp))
        for what, mode in (("fork+exit+wait", []), ("fork+exec+wait", ["exec"])):
            native, karn = [], []
            for _ in range(args.runs):  # taking turns: a change in load falls on both
                native.append(per_fork([str(program), *mode, str(args.forks * 10)]))
                karn.append(per_fork([*KARN, str(program), *mode, str(args.forks)]))
            print(f"{what}  native {statistics.median(native):8.2f} ms   "
                  f"karn {statistics.median(karn):8.2f} ms   (median of {args.runs}, "
                  f"load average {os.getloadavg()[0]:.1f})")
        native_spawn, karn_spawn = [], []
        for _ in range(args.runs):
            native_spawn.append(per_op([str(program), "spawn", str(args.forks * 10)]))
            karn_spawn.append(per_op([*KARN, str(program), "spawn", str(args.forks)]))
        for i, what in enumerate(("posix_spawn returns", "posix_spawn+wait")):
            print(f"{what}  native {statistics.median(r[i] for r in native_spawn):8.2f} ms   "
                  f"karn {statistics.median(r[i] for r in karn_spawn):8.2f} ms   (median of "
                  f"{args.runs}, load average {os.getloadavg()[0]:.1f})")
        native, karn = [], []
        for _ in range(args.runs):
            native.append(per_pipeline([], args.forks * 5))
            karn.append(per_pipeline(KARN, args.forks))
        print(f"sh pipeline  native {statistics.median(native):8.2f} ms   "
              f"karn {statistics.median(karn):8.2f} ms   per `echo | cat | wc` (median of "
              f"{args.runs}, load average {os.getloadavg()[0]:.1f})")
        project = make_project(Path(tmp) / "project")
        native, karn = [], []
        for _ in range(args.runs):
            native.append(per_make([], project))
            karn.append(per_make(KARN, project))
        print(f"make -j2  native {statistics.median(native):8.2f} ms   "
              f"karn {statistics.median(karn):8.2f} ms   5 C files, whole run (median of "
              f"{args.runs}, load average {os.getloadavg()[0]:.1f})")
        print(f"a {args.mib} MiB parent forks a child that waits:")
        cow(program, args.mib)


if __name__ == "__main__":
    main()
