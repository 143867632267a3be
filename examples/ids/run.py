#!/usr/bin/env python3
"""One command for the reference system: make the data, build the image, run the system
under karn on the recordings and print the detection report.

    python3 examples/ids/run.py [--bus-seconds S] [--ip-seconds S] [--seed N] [--speed X]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from ids import report, scenario  # noqa: E402

IMAGE = "ids:1"
PYTHON = "/usr/bin/python3"


def karn(*args: str, timeout: float = 600, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "karn", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def build_image(tag: str = IMAGE, env: dict[str, str] | None = None) -> None:
    """Debian's python3 (with its standard library, collected by karn) plus the ids
    package and dpkt, started as `python3 ARGS` with /opt/ids on its path."""
    import dpkt

    proc = karn("build", "-t", tag, "--add", f"{os.path.join(HERE, 'ids')}:/opt/ids/ids",
                "--add", f"{os.path.dirname(dpkt.__file__)}:/opt/ids/dpkt",
                "-e", "PYTHONPATH=/opt/ids", "-e", "PYTHONDONTWRITEBYTECODE=1",
                "--entrypoint", PYTHON, PYTHON, env=env)
    if proc.returncode:
        raise SystemExit(f"karn build failed: {proc.stderr.strip()}")


def system_file(directory: str, speed: float) -> str:
    """system.toml with its data directory and replay speed set."""
    with open(os.path.join(HERE, "system.toml")) as f:
        text = f.read()
    text = text.replace('"data:/data:ro"', f'"{directory}:/data:ro"')
    text = re.sub(r'"--speed", "[0-9.]+"', f'"--speed", "{speed:g}"', text)
    text = text.replace('schema_file = "alert.schema.json"',
                        f'schema_file = "{os.path.join(HERE, "alert.schema.json")}"')
    path = os.path.join(directory, "system.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def logs(part: str) -> str:
    return karn("system", "logs", "-s", "ids", part).stdout


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bus-seconds", type=float, default=40)
    ap.add_argument("--ip-seconds", type=float, default=40)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--data", help="keep the data here (default: a temporary directory)")
    args = ap.parse_args(argv)
    directory = args.data or tempfile.mkdtemp(prefix="ids-")
    print(f"data: {directory}", flush=True)
    scenario.write(directory, args.bus_seconds, args.ip_seconds, args.seed)
    print(f"image: building {IMAGE}", flush=True)
    build_image()
    path = system_file(directory, args.speed)
    print("system: up (Ctrl-C stops it)", flush=True)
    up = subprocess.run([sys.executable, "-m", "karn", "system", "up", path])
    text, _ = report.report(directory, logs("tids"), logs("dac"), logs("consumer"))
    print(text)
    return up.returncode


if __name__ == "__main__":
    sys.exit(main())
