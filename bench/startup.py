#!/usr/bin/env python3
"""karn's start-up: `karn run hello` (static, examples/hello.c) against `python3 -c pass`.

    python3 bench/startup.py [--runs N] [--against DIR] [--imports]

Both run in a fresh virtual environment of this interpreter (`python3 -m venv
--without-pip`), as after `pip install karn` into a venv: its site imports nothing, where
this interpreter's own site may import modules karn needs (a pyenv build here imports
pathlib, tempfile, typing, re and more from `.pth` files, ~40 ms) and so hide their cost
from karn's row. karn runs through the `karn` command pip installs (the checkout's
bin/karn; for an older checkout the script pip writes for an entry point, which imports
`re`), with the checkout on PYTHONPATH. A third row runs the same command served by a
`karn daemon` of this tree (KARN_STATE_DIR of its own; the other rows set KARN_DAEMON=0).
The commands take turns run by run (A B A B ...), so that a machine whose speed drifts
slows them alike; each row is the median of N runs: wall time, and the CPU time (user +
sys) the process and its threads used. karn's own cost is its row minus python's.
--against DIR adds `karn run hello` of another checkout (e.g. `git worktree add DIR
main`), for a before/after table. Bytecode is compiled first in every checkout measured
(python3 -m compileall), as a wheel install has it: where PYTHONDONTWRITEBYTECODE is set,
a checkout without it compiles karn's sources on every run; so is the command line's
bundle of karn's modules where the checkout has one (python3 -m karn.cli.bundle, as
`make install` makes it).
--imports adds where `karn run hello`'s imports go (`-X importtime`, each module's own
time, the median over the runs), by package, leaving out what `python3 -c pass` imports.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def compile_bytecode(tree: Path) -> None:
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "karn")], check=True)
    if (tree / "karn/cli/bundle.py").exists():  # the command line's bundle, as installed
        subprocess.run([sys.executable, "-m", "karn.cli.bundle"], check=True, cwd="/",
                       env=dict(os.environ, PYTHONPATH=str(tree)), stdout=subprocess.DEVNULL)


# what pip writes for a console_scripts entry point (an --against checkout from before
# bin/karn had one: karn = karn.cli.entry:main, or karn.cli.main:main before the daemon)
CONSOLE_SCRIPT = """import re
import sys
try:
    from karn.cli.entry import main
except ImportError:
    from karn.cli.main import main
if __name__ == "__main__":
    sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
    sys.exit(main())
"""


def fresh_venv(where: Path) -> str:
    """A venv at `where` as `python3 -m venv --without-pip` makes it; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    return str(where / "bin/python3")


def karn_script(tree: Path, venv: Path, name: str) -> Path:
    """The `karn` command pip installs for `tree` into the venv: its bin/karn with the
    venv's python in the first line, or the script pip writes for an entry point."""
    own = tree / "bin/karn"
    body = own.read_text().split("\n", 1)[1] if own.exists() else CONSOLE_SCRIPT
    script = venv / "bin" / name
    script.write_text(f"#!{venv}/bin/python3\n{body}")
    script.chmod(0o755)
    return script


def time_once(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run; exits on a failed run. Run from / : `python3 -m`
    imports from the working directory first, which would take a checkout's karn there."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd="/", stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        sys.exit(f"`{' '.join(cmd)}` exited {proc.returncode}: {err.strip()[-300:]}")
    return wall, usage.ru_utime + usage.ru_stime


# importtime rows are grouped by the first of these prefixes a module starts with
GROUPS = ("karn.cli", "karn.run", "karn.policy", "karn.image", "karn.loader", "karn.platform",
          "karn.sandbox", "karn.kernel.fs", "karn.kernel.net", "karn.kernel", "karn")


def self_times(cmd: list[str], env: dict[str, str]) -> dict[str, int]:
    """Each module's own import time in µs, from `-X importtime`."""
    proc = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], env=env, cwd="/",
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True)
    times = {}
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "imported package" not in line:
            own, _, name = line.removeprefix("import time:").split("|")
            times[name.strip()] = int(own)
    return times


def import_breakdown(cmd: list[str], env: dict[str, str], runs: int) -> list[str]:
    python_itself = set(self_times([cmd[0], "-c", "pass"], env))
    samples: dict[str, list[int]] = collections.defaultdict(list)
    for _ in range(runs):
        for name, own in self_times(cmd, env).items():
            if name not in python_itself:
                samples[name].append(own)
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for name in samples:
        group = next((g for g in GROUPS if name == g or name.startswith(g + ".")), "stdlib")
        groups[group].append(name)
    out = [f"\nImports of karn run hello (-X importtime, own time, median of {runs} runs):\n",
           "| modules | count | import time |\n| --- | ---: | ---: |"]
    total = 0.0
    for group, names in sorted(groups.items(), key=lambda kv: kv[0]):
        ms = sum(statistics.median(samples[n]) for n in names) / 1e3
        total += ms
        label = {"stdlib": "the standard library", "karn.policy": group}.get(
            group, f"{group}.* (the rest)" if group in ("karn", "karn.kernel") else f"{group}.*")
        out.append(f"| {label} | {len(names)} | {ms:.1f} ms |")
    out.append(f"| all | {len(samples)} | {total:.1f} ms |")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=21, help="runs of each command (21)")
    parser.add_argument("--against", type=Path, help="another checkout to measure too")
    parser.add_argument("--imports", action="store_true",
                        help="also the import time of this tree's run, by package")
    args = parser.parse_args()
    trees = {"karn run hello": REPO}
    if args.against is not None:
        trees = {"karn run hello (this tree)": REPO,
                 f"karn run hello ({args.against})": args.against.resolve()}
    for tree in trees.values():
        compile_bytecode(tree)
    # Not below /tmp: a program there is copied into the guest's /tmp tmpfs at every run
    # (builder.py _tmpfs_seed), ~3 ms for this 745 KiB hello that a program elsewhere
    # does not cost.
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        hello = Path(tmp) / "hello"
        subprocess.run(["gcc", "-O2", "-static", "-o", str(hello), str(REPO / "examples/hello.c")],
                       check=True)
        venv = Path(tmp) / "venv"
        python = fresh_venv(venv)
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "python3 -c pass": ([python, "-c", "pass"], dict(os.environ)),
        }
        for n, (name, tree) in enumerate(trees.items()):
            env = dict(os.environ, PYTHONPATH=str(tree), KARN_DAEMON="0")
            script = karn_script(tree, venv, f"karn{n}")
            commands[name] = ([python, str(script), "run", str(hello)], env)
        karn = karn_script(REPO, venv, "karn")
        served = dict(os.environ, PYTHONPATH=str(REPO), KARN_STATE_DIR=f"{tmp}/state")
        served.pop("KARN_DAEMON", None)
        commands["karn run hello (karn daemon)"] = ([python, str(karn), "run", str(hello)],
                                                    served)
        daemon = subprocess.Popen([python, str(karn), "daemon"], env=served, cwd="/",
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert daemon.stderr is not None
            if b"serving" not in daemon.stderr.readline():  # ready once it says so
                sys.exit("karn daemon did not start")
            times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
            for cmd, env in commands.values():  # warm-up: page cache
                time_once(cmd, env)
            for _ in range(args.runs):
                for name, (cmd, env) in commands.items():
                    times[name].append(time_once(cmd, env))
        finally:
            daemon.terminate()
            daemon.wait()
        imports = import_breakdown(*commands[next(iter(trees))], args.runs) if args.imports else []
    load = os.getloadavg()[0]
    print(f"Medians of {args.runs} runs, commands in turn; bytecode compiled; a fresh venv "
          f"of {sys.executable}; load average {load:.1f} at the end.\n")
    print("| command | wall | CPU (user+sys) |\n| --- | ---: | ---: |")
    medians = {}
    for name, runs in times.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        medians[name] = (wall, cpu)
        print(f"| {name} | {wall * 1e3:.1f} ms | {cpu * 1e3:.1f} ms |")
    py_wall, py_cpu = medians["python3 -c pass"]
    print()
    for name in [*trees, "karn run hello (karn daemon)"]:
        wall, cpu = medians[name]
        print(f"{name} minus python3 -c pass: {(wall - py_wall) * 1e3:.1f} ms wall, "
              f"{(cpu - py_cpu) * 1e3:.1f} ms CPU")
    if len(trees) == 2:  # run by run: the two trees' runs were made side by side
        this, other = (times[name] for name in trees)
        wall = statistics.median(a[0] - b[0] for a, b in zip(this, other, strict=True))
        cpu = statistics.median(a[1] - b[1] for a, b in zip(this, other, strict=True))
        print(f"this tree minus {args.against}, pair by pair (median): {wall * 1e3:+.1f} ms "
              f"wall, {cpu * 1e3:+.1f} ms CPU")
    print("\n".join(imports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
