"""A new user's first hour (issue 16): things that should just work, or fail in one line.

Each test runs karn as a user would (`python -m karn ...`) and checks what they see: the
output, the exit status, and no Python traceback.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import karn_run, native_run

PYTHON = "/usr/bin/python3"


def _no_traceback(stderr: bytes) -> None:
    assert b"Traceback" not in stderr, stderr.decode(errors="replace")


# ---- runtimes that just run -------------------------------------------------------------

PYTHON_SCRIPT = textwrap.dedent("""
    import json, sqlite3, ssl, hashlib
    db = sqlite3.connect(":memory:")
    db.execute("create table t (k text)")
    db.execute("insert into t values ('karn')")
    print(json.dumps(db.execute("select k from t").fetchall()), sqlite3.sqlite_version)
    print(ssl.OPENSSL_VERSION, ssl.create_default_context().protocol)
    print(hashlib.sha256(b"karn").hexdigest())
""")


def test_python_runs_with_no_volumes() -> None:
    """The interpreter's standard library and its extension modules' libraries (libsqlite3,
    libssl) come with it: the same output as the host's own run."""
    native = native_run(PYTHON, "-c", PYTHON_SCRIPT)
    assert native.returncode == 0, native.stderr
    guest = karn_run(PYTHON, "-c", PYTHON_SCRIPT)
    assert guest.returncode == 0, guest.stderr.decode(errors="replace")
    assert guest.stdout == native.stdout


def test_python_found_in_path_by_bare_name() -> None:
    path = {"PATH": "/usr/bin:/bin"}
    guest = karn_run("python3", "-c", "import sys; print(sys.prefix)", extra_env=path)
    assert guest.returncode == 0, guest.stderr.decode(errors="replace")
    native = native_run("python3", "-c", "import sys; print(sys.prefix)", extra_env=path)
    assert guest.stdout == native.stdout


@pytest.fixture
def var_tmp() -> Iterator[Path]:
    """A directory outside /tmp (the guest's /tmp is its own tmpfs)."""
    path = Path(tempfile.mkdtemp(prefix="karn-ux-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_runtime_tree_outside_the_standard_places_needs_collect(var_tmp: Path) -> None:
    """An interpreter installed under a home directory: its library tree is not taken
    unless the user shares it (--collect TREE), and the warning says so."""
    version = os.path.basename(os.path.realpath(PYTHON))  # python3.X
    stdlib = native_run(PYTHON, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))")
    prefix = var_tmp / "opt"
    (prefix / "bin").mkdir(parents=True)
    shutil.copy2(os.path.realpath(PYTHON), prefix / "bin" / version)
    tree = prefix / "lib" / version
    shutil.copytree(stdlib.stdout.decode().strip(), tree, symlinks=True,
                    ignore=shutil.ignore_patterns("test", "idlelib", "tkinter", "ensurepip"))
    script = "import json, sqlite3; print(json.dumps([sqlite3.sqlite_version]))"
    refused = karn_run(prefix / "bin" / version, "-c", script)
    assert refused.returncode != 0
    assert f"--collect {tree}".encode() in refused.stderr
    shared = karn_run("--collect", tree, prefix / "bin" / version, "-c", script)
    assert shared.returncode == 0, shared.stderr.decode(errors="replace")
    assert shared.stdout == native_run(PYTHON, "-c", script).stdout


def test_perl_runs_with_its_modules() -> None:
    perl = shutil.which("perl")
    if perl is None:
        pytest.skip("perl is not installed")
    script = 'use POSIX qw(floor); use List::Util qw(sum); print floor(7/2), " ", sum(1..10), "\\n"'
    native = native_run(perl, "-e", script)
    guest = karn_run(perl, "-e", script)
    assert guest.returncode == 0, guest.stderr.decode(errors="replace")
    assert guest.stdout == native.stdout


def test_python_image_built_from_the_interpreter_alone(home: os.PathLike[str]) -> None:
    """`karn build python3` makes an image that imports sqlite3 with no --add."""
    from helpers import karn_in

    built = karn_in(home, "build", "-t", "py:bare", PYTHON, timeout=300)
    assert built.returncode == 0, built.stderr.decode(errors="replace")
    ran = karn_in(home, "run", "py:bare", "-c", "import sqlite3; print(sqlite3.sqlite_version)")
    assert ran.returncode == 0, ran.stderr.decode(errors="replace")
    native = native_run(PYTHON, "-c", "import sqlite3; print(sqlite3.sqlite_version)")
    assert ran.stdout == native.stdout
