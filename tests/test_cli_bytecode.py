"""karn/cli/bytecode.py: a karn module is loaded from the bundle (karn/cli/bundle.py) or
its compiled file only where its source is as compiled; anything else is left to the path
finder."""

from __future__ import annotations

import importlib.util
import os
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from karn.cli.bundle import write_bundle
from karn.cli.bytecode import KarnBytecodeFinder, _Bundle, bundle_path

REPO = Path(__file__).resolve().parent.parent


def _module(directory: Path, text: str, name: str = "mod") -> Path:
    source = directory / f"{name}.py"
    source.write_text(text)
    py_compile.compile(str(source), cfile=importlib.util.cache_from_source(str(source)),
                       doraise=True)
    return source


def _load(name: str, directory: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.setattr(KarnBytecodeFinder, "bundle", None)  # the .pyc files only
    spec = KarnBytecodeFinder.find_spec(name, [str(directory)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fresh_bytecode_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "mod.py"
    source.write_text("X = 1\ndef f():\n    pass\n")
    py_compile.compile(str(source), cfile=importlib.util.cache_from_source(str(source)),
                       dfile="karn/mod.py", doraise=True)  # as `compileall karn` names it
    module = _load("karn.mod", tmp_path, monkeypatch)
    assert module.X == 1  # type: ignore[attr-defined]
    assert module.f.__code__.co_filename == str(source)  # type: ignore[attr-defined]
    assert module.__file__ == str(source)
    assert module.__cached__ == importlib.util.cache_from_source(str(source))


def test_a_package_gets_its_directory_as_path(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    _module(tmp_path / "sub", "Y = 2\n", "__init__")
    module = _load("karn.sub", tmp_path, monkeypatch)
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


def _package(tmp_path: Path) -> Path:
    """A package `karn` with a module and a subpackage, and its bundle."""
    root = tmp_path / "karn"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "mod.py").write_text("X = 1\n")
    (root / "sub" / "__init__.py").write_text("Y = 2\n")
    assert write_bundle(str(root)) == 2  # (not the package itself: imported before)
    return root


def _value(bundle: _Bundle, name: str, where: Path, variable: str) -> object:
    """`variable` of module `name` as the bundle has it for directory `where`; None if
    the bundle does not serve it."""
    found = bundle.code(name, str(where))
    if found is None:
        return None
    namespace: dict[str, object] = {}
    exec(found[2], namespace)
    return namespace[variable]


def test_the_bundle_serves_unchanged_modules(tmp_path: Path) -> None:
    root = _package(tmp_path)
    bundle = _Bundle(str(root))
    assert _value(bundle, "karn.mod", root, "X") == 1
    assert _value(bundle, "karn.sub", root, "Y") == 2
    found = bundle.code("karn.sub", str(root))
    assert found is not None and found[:2] == (str(root / "sub" / "__init__.py"), True)
    assert bundle.code("karn.mod", str(root / "sub")) is None  # not where it is looked for
    source = root / "mod.py"
    stat = source.stat()
    source.write_text("X = 2\n")  # the same size, 1 ns later
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert bundle.code("karn.mod", str(root)) is None
    source.write_text("X = 22\n")  # the recorded mtime, another size
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert bundle.code("karn.mod", str(root)) is None


def test_a_moved_tree_names_its_sources_where_they_are(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _package(tmp_path)
    moved = tmp_path / "elsewhere" / "karn"
    shutil.copytree(root, moved)  # mtimes kept: the bundle still holds for every module
    monkeypatch.setattr(KarnBytecodeFinder, "bundle", _Bundle(str(moved)))
    spec = KarnBytecodeFinder.find_spec("karn.mod", [str(moved)])
    assert spec is not None and spec.loader_state.co_filename == str(moved / "mod.py")


def test_a_damaged_bundle_is_not_used(tmp_path: Path) -> None:
    root = _package(tmp_path)
    path = Path(bundle_path(str(root)))
    whole = path.read_bytes()
    for damaged in (whole[:30], b"", b"\0" * 4 + whole[4:]):
        path.write_bytes(damaged)
        bundle = _Bundle(str(root))
        assert bundle.code("karn.mod", str(root)) is None


def test_the_cli_loads_karn_through_it(tmp_path: Path) -> None:
    """A compiled copy of karn: its modules come through the finder, an edited one as
    edited (the path finder compiles it)."""
    subprocess.run(["cp", "-r", str(REPO / "karn"), str(tmp_path)], check=True)
    env = dict(os.environ, PYTHONPATH=str(tmp_path), PYTHONDONTWRITEBYTECODE="1")
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(tmp_path / "karn")],
                   check=True)
    subprocess.run([sys.executable, "-m", "karn.cli.bundle"], env=env, cwd="/", check=True,
                   capture_output=True)
    # edited after the bundle (it has the old one) and after compileall (a stale .pyc)
    (tmp_path / "karn" / "sizes.py").write_text(
        (REPO / "karn" / "sizes.py").read_text() + "\nEDITED = True\n")
    script = ("import sys; sys.argv = ['karn', '--version']\n"
              "from karn.cli import entry\n"
              "try:\n    entry.main()\nexcept SystemExit:\n    pass\n"
              "import karn.errors, karn.sizes\n"
              "from karn.cli.bytecode import KarnBytecodeFinder as F\n"
              "print(karn.errors.__loader__ is F, karn.sizes.__loader__ is F, "
              "karn.sizes.EDITED, 'karn.errors' in F.bundle.index)\n")
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd="/",
                         capture_output=True, text=True, check=True).stdout
    assert out.split()[-4:] == ["True", "False", "True", "True"]  # (after the version)
