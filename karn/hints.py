"""The names of `typing` that karn's modules use at run time, without importing `typing`.

`typing` imports re, enum, contextlib, functools, collections and warnings: ~5 ms of every
`karn run`'s start-up, for names that matter only to the type checker. A module on a run's
path takes them from here (tests/test_startup.py checks that a plain run imports neither
`typing` nor `re`); the type checker sees typing's own (TYPE_CHECKING is true for it).

At run time:
- NamedTuple: the same class syntax, making what collections.namedtuple makes (fields in
  the order of their annotations, defaults from their values, the class's methods and
  docstring kept) without compiling a __new__ for each class;
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
    import sys
    from _collections import _tuplegetter  # the C accessor namedtuple's fields use

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

    # The methods every named tuple class shares, reading its _fields: collections.
    # namedtuple compiles a __new__ for each class (~50 µs each, ~15 classes on a run's
    # path); this one binds its arguments itself where they are not exactly the fields.
    _tuple_new = tuple.__new__

    def _new(_cls: type, *args: object, **kwargs: object) -> tuple:  # (a field may be `cls`)
        if kwargs or len(args) != len(_cls._fields):  # type: ignore[attr-defined]
            args = _bind(_cls, args, kwargs)
        return _tuple_new(_cls, args)

    def _bind(cls: type, args: tuple, kwargs: dict[str, object]) -> tuple:
        fields: tuple[str, ...] = cls._fields  # type: ignore[attr-defined]
        defaults: dict[str, object] = cls._field_defaults  # type: ignore[attr-defined]
        name = cls.__name__
        if len(args) > len(fields):
            raise TypeError(f"{name}() takes {len(fields)} positional arguments but "
                            f"{len(args)} were given")
        for field in fields[: len(args)]:
            if field in kwargs:
                raise TypeError(f"{name}() got multiple values for argument {field!r}")
        values = list(args)
        for field in fields[len(args) :]:
            if field in kwargs:
                values.append(kwargs.pop(field))
            elif field in defaults:
                values.append(defaults[field])
            else:
                raise TypeError(f"{name}() missing required argument: {field!r}")
        if kwargs:
            raise TypeError(f"{name}() got an unexpected keyword argument "
                            f"{next(iter(kwargs))!r}")
        return tuple(values)

    def _make(cls: type, iterable: object) -> tuple:
        made = _tuple_new(cls, iterable)
        if len(made) != len(cls._fields):  # type: ignore[attr-defined]
            raise TypeError(f"Expected {len(cls._fields)} arguments, "  # type: ignore[attr-defined]
                            f"got {len(made)}")
        return made

    def _replace(self: tuple, /, **changes: object) -> tuple:
        made = self._make(map(changes.pop, self._fields, self))  # type: ignore[attr-defined]
        if changes:
            raise ValueError(f"Got unexpected field names: {list(changes)!r}")
        return made

    def _repr(self: tuple) -> str:
        fields = ", ".join(f"{field}={value!r}" for field, value in
                           zip(self._fields, self, strict=True))  # type: ignore[attr-defined]
        return f"{type(self).__name__}({fields})"

    def _asdict(self: tuple) -> dict[str, object]:
        return dict(zip(self._fields, self, strict=True))  # type: ignore[attr-defined]

    def _getnewargs(self: tuple) -> tuple:
        return tuple(self)

    _SHARED = {"__new__": _new, "_make": classmethod(_make), "_replace": _replace,
               "__repr__": _repr, "_asdict": _asdict, "__getnewargs__": _getnewargs}
    if sys.version_info >= (3, 13):  # copy.replace(), as namedtuple's from 3.13 on
        _SHARED["__replace__"] = _replace

    def _named_tuple(name: str, fields: tuple[str, ...], defaults: dict[str, object],
                     module: str | None) -> type:
        """What collections.namedtuple(name, fields, defaults=...) makes."""
        for field in fields:
            if field.startswith("_"):
                raise ValueError(f"Field names cannot start with an underscore: {field!r}")
        listed = ", ".join(fields) + ("," if len(fields) == 1 else "")
        namespace: dict[str, object] = {
            "__doc__": f"{name}({listed})", "__slots__": (), "_fields": fields,
            "_field_defaults": defaults, "__match_args__": fields, **_SHARED}
        for index, field in enumerate(fields):
            namespace[field] = _tuplegetter(index, f"Alias for field number {index}")
        made = type(name, (tuple,), namespace)
        if module is not None:
            made.__module__ = module
        return made

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
            fields = tuple(annotations)
            if reserved := _RESERVED.intersection(namespace):
                raise AttributeError(f"{name}: cannot set {', '.join(sorted(reserved))}")
            defaults = {field: namespace[field] for field in fields if field in namespace}
            if defaults and any(field not in namespace for field in fields[-len(defaults):]):
                raise TypeError(f"{name}: a field without a default follows one with")
            made = _named_tuple(name, fields, defaults, namespace.get("__module__"))
            made.__qualname__ = namespace.get("__qualname__", name)
            made.__annotations__ = annotations
            for key, value in namespace.items():
                if key not in _IMPLICIT and key not in fields:
                    setattr(made, key, value)
            return made

    class NamedTuple(metaclass=_NamedTupleMeta):
        _base_of_named_tuples = True
