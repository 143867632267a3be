"""Debian's dynamically linked python3 with its stdlib, built into a karn image and run.

The image holds the interpreter, its stdlib and (collected by the build) the libraries
its extension modules dlopen, such as libsqlite3 for _sqlite3.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the module's image holds the whole stdlib

PYTHON = "/usr/bin/python3"
SCRIPT = """
import hashlib, json, re, sqlite3, threading, queue
db = sqlite3.connect(":memory:")
db.execute("create table t (k text, v integer)")
db.executemany("insert into t values (?, ?)", [("a", 1), ("b", 2), ("c", 3)])
rows = db.execute("select k, v * 10 from t order by k").fetchall()
q = queue.Queue()
threads = [threading.Thread(target=lambda i=i: q.put(i * i)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"rows": rows, "squares": sorted(q.get() for _ in range(8))}))
print(hashlib.sha256(b"karn").hexdigest(), re.findall(r"\\d+", "a1b22c333"))
"""


def _stdlib() -> str:
    out = subprocess.run([PYTHON, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def python_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    if not os.access(PYTHON, os.X_OK):
        pytest.fail(f"{PYTHON} missing (apt-get install python3)", pytrace=False)
    home = tmp_path_factory.mktemp("karn-home")
    stdlib = _stdlib()
    env = {**os.environ, "KARN_HOME": str(home)}
    build = subprocess.run(
        [sys.executable, "-m", "karn", "build", "-t", "py:test", "--add", f"{stdlib}:{stdlib}",
         PYTHON], capture_output=True, env=env, timeout=300,
    )
    assert build.returncode == 0, build.stderr.decode()
    return home, "py:test"


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "KARN_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "karn", "run", *args], capture_output=True,
                          env=env, timeout=120)


def test_stdlib_script_matches_native(python_image: tuple[Path, str]) -> None:
    home, image = python_image
    native = subprocess.run([PYTHON, "-c", SCRIPT], capture_output=True, timeout=60)
    assert native.returncode == 0, native.stderr
    got = _run(home, image, "-c", SCRIPT)
    assert got.stderr == b""
    assert (got.returncode, got.stdout) == (native.returncode, native.stdout)


def test_uncaught_exception_prints_traceback_and_exits_1(python_image: tuple[Path, str]
                                                         ) -> None:
    home, image = python_image
    script = "def f():\n    raise ValueError('boom')\nf()\n"
    native = subprocess.run([PYTHON, "-c", script], capture_output=True, timeout=60)
    got = _run(home, image, "-c", script)
    assert got.returncode == native.returncode == 1
    assert got.stderr == native.stderr
    assert b"Traceback (most recent call last)" in got.stderr


