"""A JSON schema compiled once into a Python predicate that says quickly when a document is
certainly valid (a guard's common case), for the keywords whose meaning is the same in
every draft jsonschema knows; anything else is left to jsonschema.

The predicate never decides against a document: False means "not shown valid here", and
the guard then asks jsonschema (karn/system/guards.py), which stays the reference for the
verdict and gives the reason. So the predicate may be incomplete but must never accept a
document jsonschema rejects: it accepts only what it has checked by the rules below, and
a schema with any keyword outside them (or with a draft-dependent form, such as a boolean
exclusiveMinimum or an array `items`) is not compiled at all (None).

Measured on a 64 B message with bench/system.py's schema: jsonschema's iter_errors ~6 µs,
this predicate well under 1 µs.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from karn.hints import Any

Predicate = Callable[[Any], bool]

# Keywords that only annotate (jsonschema asserts none of them; `format` only with a
# format checker, which guards do not use).
ANNOTATIONS = frozenset({"$schema", "$id", "id", "$comment", "title", "description",
                         "default", "examples", "format", "readOnly", "writeOnly",
                         "deprecated"})
TYPES: dict[str, Callable[[Any], bool]] = {
    # bool is an int in Python but not a JSON number; an integral float is an "integer"
    # in some drafts and not in others, so it is left to jsonschema (never shown valid).
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same JSON types throughout (stricter than jsonschema's equality,
    which also takes 1 and 1.0 as equal: so `same` implies it)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def compile_schema(schema: Any) -> Predicate | None:
    """The predicate for `schema`, or None when it uses anything not handled here."""
    try:
        return _compile(schema)
    except _Unsupported:
        return None


class _Unsupported(Exception):
    pass


def _compile(schema: Any) -> Predicate:
    if schema is True or schema == {}:
        return lambda _v: True
    if not isinstance(schema, dict):
        raise _Unsupported  # false, or not a schema: jsonschema decides
    checks: list[Predicate] = []
    for key, value in schema.items():
        if key in ANNOTATIONS:
            continue
        make = _KEYWORDS.get(key)
        if make is None:
            raise _Unsupported
        checks.append(make(value, schema))
    if len(checks) == 1:
        return checks[0]
    return lambda v: all(check(v) for check in checks)


def _type(value: Any, _schema: dict) -> Predicate:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(n in TYPES for n in names):
        raise _Unsupported
    tests = [TYPES[n] for n in names]
    if len(tests) == 1:
        return tests[0]
    return lambda v: any(test(v) for test in tests)


def _properties(value: Any, _schema: dict) -> Predicate:
    if not isinstance(value, dict):
        raise _Unsupported
    subs = {name: _compile(sub) for name, sub in value.items()}

    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        for name, sub in subs.items():
            if name in v and not sub(v[name]):
                return False
        return True
    return check


def _additional(value: Any, schema: dict) -> Predicate:
    if "patternProperties" in schema:
        raise _Unsupported
    known = frozenset(schema.get("properties", {}))
    sub = _compile(value) if value is not False else None

    def check(v: Any) -> bool:
        if not isinstance(v, dict):
            return True
        extra = [k for k in v if k not in known]
        if sub is None:
            return not extra
        return all(sub(v[k]) for k in extra)
    return check


def _required(value: Any, _schema: dict) -> Predicate:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise _Unsupported
    names = tuple(value)
    return lambda v: not isinstance(v, dict) or all(n in v for n in names)


def _enum(value: Any, _schema: dict) -> Predicate:
    if not isinstance(value, list):
        raise _Unsupported
    return lambda v: any(same(v, option) for option in value)


def _const(value: Any, _schema: dict) -> Predicate:
    return lambda v: same(v, value)


def _bound(compare: Callable[[Any, Any], bool]) -> Callable[[Any, dict], Predicate]:
    def make(value: Any, _schema: dict) -> Predicate:
        if not _number(value):  # draft 4's boolean exclusiveMinimum, or nonsense
            raise _Unsupported
        return lambda v: not _number(v) or compare(v, value)
    return make


def _length(compare: Callable[[int, int], bool], kind: type[str] | type[list]
            ) -> Callable[[Any, dict], Predicate]:
    def make(value: Any, _schema: dict) -> Predicate:
        if type(value) is not int or value < 0:
            raise _Unsupported

        def check(v: Any) -> bool:
            return type(v) is not kind or compare(len(v), value)
        return check
    return make


def _pattern(value: Any, _schema: dict) -> Predicate:
    if not isinstance(value, str):
        raise _Unsupported
    search = re.compile(value).search  # as jsonschema: re.search on the string
    return lambda v: not isinstance(v, str) or search(v) is not None


def _items(value: Any, _schema: dict) -> Predicate:
    if not isinstance(value, dict | bool):  # an array (tuple validation) differs by draft
        raise _Unsupported
    sub = _compile(value)
    return lambda v: not isinstance(v, list) or all(sub(x) for x in v)


_KEYWORDS: dict[str, Callable[[Any, dict], Predicate]] = {
    "type": _type,
    "properties": _properties,
    "additionalProperties": _additional,
    "required": _required,
    "enum": _enum,
    "const": _const,
    "minimum": _bound(lambda v, b: v >= b),
    "maximum": _bound(lambda v, b: v <= b),
    "exclusiveMinimum": _bound(lambda v, b: v > b),
    "exclusiveMaximum": _bound(lambda v, b: v < b),
    "minLength": _length(lambda n, b: n >= b, str),
    "maxLength": _length(lambda n, b: n <= b, str),
    "minItems": _length(lambda n, b: n >= b, list),
    "maxItems": _length(lambda n, b: n <= b, list),
    "pattern": _pattern,
    "items": _items,
}
