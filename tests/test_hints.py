"""karn/hints.py stands in for typing at run time: every NamedTuple class karn defines must
come out as typing.NamedTuple would have made it from the same class body."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Imports each module given, with karn.hints.NamedTuple left alone or replaced by typing's
# first ("typing"), and prints what each of its named tuple classes is made of.
DESCRIBE = """
import copy, importlib, json, pickle, sys
import karn.hints
if sys.argv[1] == "typing":
    import typing
    karn.hints.NamedTuple = typing.NamedTuple
IMPLICIT = {"__annotations__", "__orig_bases__", "__static_attributes__", "__firstlineno__"}
found = {}
for name in sys.argv[2:]:
    module = importlib.import_module(name)
    for attr, cls in vars(module).items():
        if not (isinstance(cls, type) and issubclass(cls, tuple) and cls.__module__ == name
                and hasattr(cls, "_fields")):
            continue
        sample = cls(*range(len(cls._fields)))
        found[f"{name}.{cls.__qualname__}"] = {
            "fields": cls._fields,
            "defaults": {k: repr(v) for k, v in cls._field_defaults.items()},
            "doc": cls.__doc__,
            "members": sorted(set(vars(cls)) - IMPLICIT),
            "mro": [c.__qualname__ for c in cls.__mro__],
            "pickled": pickle.loads(pickle.dumps(sample)) == sample,
            "copied": copy.deepcopy(sample) == sample,
            "as_dict": list(sample._asdict().items()),
            "repr": repr(sample),
        }
print(json.dumps(found, sort_keys=True))
"""


def named_tuple_modules() -> list[str]:
    return sorted(
        ".".join(path.relative_to(REPO).with_suffix("").parts)
        for path in (REPO / "karn").rglob("*.py")
        if "(NamedTuple)" in path.read_text()
    )


def describe(kind: str, modules: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", DESCRIBE, kind, *modules], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_named_tuples_are_built_as_typing_builds_them() -> None:
    modules = named_tuple_modules()
    ours, typings = describe("hints", modules), describe("typing", modules)
    assert len(ours) >= 30, sorted(ours)  # every module's classes were found
    assert ours == typings


def test_a_named_tuple_body_that_typing_refuses_is_refused() -> None:
    from karn.hints import NamedTuple

    with pytest.raises(AttributeError, match="__new__"):
        class Point(NamedTuple):
            x: int

            def __new__(cls, x: int) -> Point:
                return super().__new__(cls, (x,))


def test_a_named_tuple_takes_its_arguments_as_typings_does() -> None:
    """Positional, by name, defaults, _make, _replace, and the same errors for the rest."""
    import typing

    from karn.hints import NamedTuple

    class Ours(NamedTuple):
        a: int
        b: str
        c: float = 0.5

    class Theirs(typing.NamedTuple):
        a: int
        b: str
        c: float = 0.5

    good = [((1, "x"), {}), ((1, "x", 2.0), {}), ((1,), {"b": "y"}), ((), {"b": "y", "a": 3}),
            ((), {"a": 1, "b": "x", "c": 9.0})]
    for args, kwargs in good:
        assert tuple(Ours(*args, **kwargs)) == tuple(Theirs(*args, **kwargs))
    bad = [((1,), {}), ((1, "x", 2.0, 4), {}), ((1, "x"), {"a": 2}), ((1, "x"), {"d": 2})]
    for args, kwargs in bad:
        with pytest.raises(TypeError):
            Theirs(*args, **kwargs)
        with pytest.raises(TypeError):
            Ours(*args, **kwargs)
    assert Ours._make([1, "x", 3.0]) == Theirs._make([1, "x", 3.0])
    with pytest.raises(TypeError):
        Ours._make([1])
    assert tuple(Ours(1, "x")._replace(b="z")) == tuple(Theirs(1, "x")._replace(b="z"))
    with pytest.raises(ValueError):
        Ours(1, "x")._replace(d=1)
