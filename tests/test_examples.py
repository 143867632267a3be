"""The recipes in examples/: every command of each README's ```console blocks is run, in
order, in the example's directory, and its output compared with the lines the README shows
after it (a command shown without output need only succeed). The README cannot rot."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import REPO

EXAMPLES = sorted(readme.parent.name for readme in (REPO / "examples").glob("*/README.md"))
COMMAND_TIMEOUT = 300.0


def readme_steps(readme: Path) -> list[tuple[str, list[str]]]:
    """(command, expected stdout lines) for each `$ ` line of the ```console blocks."""
    steps: list[tuple[str, list[str]]] = []
    in_block = False
    for line in readme.read_text().splitlines():
        if line.startswith("```"):
            in_block = line.strip() == "```console"
            continue
        if not in_block:
            continue
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return steps


@pytest.fixture()
def user_env() -> Iterator[dict[str, str]]:
    """A shell as a user has it after the README's install step: `karn` on PATH (this
    checkout), a store and a state directory of the test's own."""
    base = Path(tempfile.mkdtemp(prefix="ke-", dir="/tmp"))  # short: socket paths
    bin_dir = base / "bin"
    bin_dir.mkdir()
    karn = bin_dir / "karn"
    karn.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m karn "$@"\n')
    karn.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
           "PYTHONPATH": str(REPO), "KARN_HOME": str(base / "home"),
           "KARN_STATE_DIR": str(base / "state")}
    yield env
    for meta in (base / "state" / "instances").glob("*/meta.json"):  # nothing left running
        try:
            os.kill(json.loads(meta.read_text())["pid"], 9)
        except (OSError, ValueError, KeyError):
            pass
    shutil.rmtree(base, ignore_errors=True)


def test_readme_parser_sees_commands_and_output() -> None:
    steps = readme_steps(REPO / "examples" / "redis" / "README.md")
    assert steps[0][0].startswith("karn run -d --name redis") and steps[0][1] == []
    assert ("redis-cli -p 18083 set greeting \"hello from redis in a karn unikernel\"",
            ["OK"]) in steps


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES)
def test_example_readme_commands(example: str, user_env: dict[str, str]) -> None:
    directory = REPO / "examples" / example
    steps = readme_steps(directory / "README.md")
    assert steps, f"examples/{example}/README.md has no ```console commands"
    for command, expected in steps:
        ran = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=directory,
                             env=user_env, capture_output=True, text=True,
                             timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)
        said = f"$ {command}\n{ran.stdout}{ran.stderr}"
        assert ran.returncode == 0, said
        assert "Traceback" not in ran.stderr, said
        if expected:
            assert ran.stdout.splitlines() == expected, said
