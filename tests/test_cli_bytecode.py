"""karn/cli/bytecode.py: a karn module is loaded from its compiled file only where the
path finder would load that same file; anything else is left to the path finder."""

from __future__ import annotations

import importlib.util
import os
import py_compile
import subprocess
import sys
from pathlib import Path

from karn.cli.bytecode import KarnBytecodeFinder

REPO = Path(__file__).resolve().parent.parent


def _module(directory: Path, text: str, name: str = "mod") -> Path:
    source = directory / f"{name}.py"
    source.write_text(text)
    py_compile.compile(str(source), cfile=importlib.util.cache_from_source(str(source)),
                       doraise=True)
    return source


def _load(name: str, directory: Path) -> object:
    spec = KarnBytecodeFinder.find_spec(name, [str(directory)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fresh_bytecode_is_loaded(tmp_path: Path) -> None:
    source = _module(tmp_path, "X = 1\n")
    module = _load("karn.mod", tmp_path)
    assert module.X == 1  # type: ignore[attr-defined]
    assert module.__file__ == str(source)
    assert module.__cached__ == importlib.util.cache_from_source(str(source))


def test_a_package_gets_its_directory_as_path(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _module(tmp_path / "sub", "Y = 2\n", "__init__")
    module = _load("karn.sub", tmp_path)
    assert module.Y == 2  # type: ignore[attr-defined]
    assert module.__path__ == [str(tmp_path / "sub")]  # type: ignore[attr-defined]


def test_edited_source_is_left_to_the_path_finder(tmp_path: Path) -> None:
    source = _module(tmp_path, "X = 1\n")
    stat = source.stat()
    source.write_text("X = 2\n")  # the same size, a later mtime
    os.utime(source, (stat.st_atime, stat.st_mtime + 10))
    assert KarnBytecodeFinder.find_spec("karn.mod", [str(tmp_path)]) is None
    source.write_text("X = 22\n")  # the recorded mtime, another size
    os.utime(source, (stat.st_atime, stat.st_mtime))
    assert KarnBytecodeFinder.find_spec("karn.mod", [str(tmp_path)]) is None


def test_what_it_does_not_take(tmp_path: Path) -> None:
    (tmp_path / "bare.py").write_text("X = 1\n")  # no bytecode
    assert KarnBytecodeFinder.find_spec("karn.bare", [str(tmp_path)]) is None
    source = tmp_path / "hashed.py"
    source.write_text("X = 1\n")
    py_compile.compile(str(source), cfile=importlib.util.cache_from_source(str(source)),
                       invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
    assert KarnBytecodeFinder.find_spec("karn.hashed", [str(tmp_path)]) is None
    _module(tmp_path, "X = 1\n", "other")  # not karn's
    assert KarnBytecodeFinder.find_spec("other", [str(tmp_path)]) is None
    assert KarnBytecodeFinder.find_spec("karn.other", None) is None


def test_the_cli_loads_karn_through_it(tmp_path: Path) -> None:
    """A compiled copy of karn: its modules come through the finder, an edited one as
    edited (the path finder compiles it)."""
    subprocess.run(["cp", "-r", str(REPO / "karn"), str(tmp_path)], check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tmp_path / "karn")],
                   check=True)
    (tmp_path / "karn" / "sizes.py").write_text(
        (REPO / "karn" / "sizes.py").read_text() + "\nEDITED = True\n")
    script = ("import karn.cli, karn.errors, karn.sizes\n"
              "from karn.cli.bytecode import KarnBytecodeFinder as F\n"
              "print(karn.errors.__loader__ is F, karn.sizes.__loader__ is F, "
              "karn.sizes.EDITED)\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd="/",
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "True"]
