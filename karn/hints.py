"""The names of `typing` that karn's modules use at run time, without importing `typing`.

`typing` imports re, enum, contextlib, functools, collections and warnings: ~5 ms of every
`karn run`'s start-up, for names that matter only to the type checker. A module on a run's
path takes them from here (tests/test_startup.py checks that a plain run imports neither
`typing` nor `re`); the type checker sees typing's own (TYPE_CHECKING is true for it).

At run time:
- NamedTuple: the same class syntax over collections.namedtuple (fields in the order of
  their annotations, defaults from their values, the class's methods and docstring kept);
- Protocol: a plain base class (subscriptable, for a generic protocol);
- TypeVar: a named placeholder; Any and NoReturn: object.

Modules that need more of it (IO, cast: images, debugging) import `typing` itself.
"""

from __future__ import annotations

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any as Any
    from typing import NamedTuple as NamedTuple
    from typing import NoReturn as NoReturn
    from typing import Protocol as Protocol
    from typing import TypeVar as TypeVar
else:
    from collections import namedtuple

    Any = NoReturn = object

    class TypeVar:
        """A type variable's name, for annotations nobody evaluates."""

        def __init__(self, name: str, *constraints: object, **options: object) -> None:
            self.__name__ = name

        def __repr__(self) -> str:
            return f"~{self.__name__}"

    class Protocol:
        """A protocol's classes are plain ones at run time."""

        __slots__ = ()

        def __class_getitem__(cls, parameters: object) -> type:
            return cls

    # what the class statement puts in a namespace besides the fields and their methods
    _IMPLICIT = frozenset(("__module__", "__qualname__", "__annotations__",
                           "__orig_bases__", "__static_attributes__", "__firstlineno__"))

    # what typing.NamedTuple refuses to let a class body set (__classcell__: super() in a
    # method, which a class made by namedtuple() cannot serve)
    _RESERVED = frozenset(("__new__", "__init__", "__slots__", "__getnewargs__", "_fields",
                           "_field_defaults", "_make", "_replace", "_asdict", "_source",
                           "__classcell__"))

    class _NamedTupleMeta(type):
        def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict) -> type:
            if namespace.get("_base_of_named_tuples"):
                return super().__new__(mcs, name, bases, namespace)
            annotations = namespace.get("__annotations__")
            if annotations is None:
                if any(key.startswith("__annotate") for key in namespace):  # deferred
                    raise TypeError(f"{name}: karn.hints.NamedTuple needs `from __future__ "
                                    "import annotations` in its module (Python 3.14+)")
                annotations = {}
            fields = list(annotations)
            if reserved := _RESERVED.intersection(namespace):
                raise AttributeError(f"{name}: cannot set {', '.join(sorted(reserved))}")
            defaults = [namespace[field] for field in fields if field in namespace]
            if defaults and any(field not in namespace for field in fields[-len(defaults):]):
                raise TypeError(f"{name}: a field without a default follows one with")
            made = namedtuple(name, fields, defaults=defaults,
                              module=namespace.get("__module__"))
            made.__qualname__ = namespace.get("__qualname__", name)
            made.__annotations__ = annotations
            for key, value in namespace.items():
                if key not in _IMPLICIT and key not in fields:
                    setattr(made, key, value)
            return made

    class NamedTuple(metaclass=_NamedTupleMeta):
        _base_of_named_tuples = True
