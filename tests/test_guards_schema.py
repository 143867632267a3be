"""The guard's compiled schema predicate (karn/system/schemacheck.py) never accepts what
jsonschema rejects, and the guard's fast paths keep every check (docs/security.md)."""

from __future__ import annotations

import itertools
import json

import pytest

from karn.system.guards import Guard, GuardCheck, Rejected, validator
from karn.system.schemacheck import compile_schema

SCHEMAS = [
    {"type": "object", "required": ["v"], "properties": {"v": {"type": "string"}}},
    {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0,
                                            "exclusiveMaximum": 10}},
     "additionalProperties": False},
    {"type": ["string", "null"], "minLength": 2, "maxLength": 4, "pattern": "^a"},
    {"type": "array", "items": {"type": "number", "maximum": 1.5}, "minItems": 1,
     "maxItems": 2},
    {"enum": [1, "x", None, [1, 2], {"a": True}]},
    {"const": {"k": [1, 2.5]}},
    {"properties": {"a": {"type": "boolean"}}, "additionalProperties": {"type": "string"}},
    {"type": "number", "exclusiveMinimum": 0, "maximum": 3},
    {"$schema": "http://json-schema.org/draft-07/schema#", "title": "t", "type": "object",
     "properties": {"id": {"type": "integer"}, "tag": {"const": "a"}}, "required": ["id"]},
]
DOCS = [None, True, False, 0, 1, 1.0, -1, 2.5, 3, 9, 10, 11, 1.5, "", "a", "ab", "abcd",
        "abcde", "ba", "x", [], [1], [1, 2], [1.0, 2], [True], [1, 2, 3], [2], {},
        {"v": "s"}, {"v": 1}, {"v": "s", "w": 1}, {"n": 5}, {"n": 10}, {"n": 5.0},
        {"n": True}, {"n": -1}, {"a": True}, {"a": 1}, {"a": True, "b": "s"},
        {"a": True, "b": 2}, {"k": [1, 2.5]}, {"k": [1.0, 2.5]}, {"id": 1, "tag": "a"},
        {"id": 1.0}, {"id": True}, {"tag": "a"}, {"a": 1, "k": [1, 2.5]}]


@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
def test_compiled_schema_accepts_only_what_jsonschema_accepts(schema: dict) -> None:
    fast = compile_schema(schema)
    assert fast is not None
    reference = validator(schema)
    shown = 0
    for doc in DOCS:
        if fast(doc):
            shown += 1
            assert reference.is_valid(doc), (schema, doc)
    assert shown  # it does show some documents valid: not a predicate that says no to all


@pytest.mark.parametrize("schema", [
    {"$ref": "#/definitions/a", "definitions": {"a": {}}},
    {"anyOf": [{"type": "string"}]},
    {"type": "number", "minimum": 0, "exclusiveMinimum": True},  # draft 4's form
    {"type": "array", "items": [{"type": "string"}]},  # tuple form: differs by draft
    {"patternProperties": {"^a": {}}, "additionalProperties": False},
    {"properties": {"a": {"uniqueItems": True}}},
    False,
])
def test_schemas_beyond_the_compiled_keywords_are_left_to_jsonschema(schema: object) -> None:
    assert compile_schema(schema) is None


def _check(schema: dict | None = None, deny: list[str] | None = None,
           allow: str | None = None) -> GuardCheck:
    guard = Guard("g")
    guard.schema, guard.deny, guard.allow = schema, deny or [], allow
    return GuardCheck(guard)


def test_guard_verdicts_with_the_fast_paths() -> None:
    check = _check(SCHEMAS[0], deny=["drop table"], allow="^\\{.*\\}$")
    assert check.check(b'{"v": "ok"}') == b'{"v":"ok"}'
    for message, reason in [
        (b'{"v": 1}', "schema"),
        (b'{"w": "x"}', "schema"),
        (b'{"v": "DROP  Table now"}', "denied"),  # in the plain text
        (b'{"v": "\\u0064rop table"}', "denied"),  # only in the decoded string
        (b'{"v": "\\u0044ROP\\tTABLE"}', "denied"),
        ('{"v": "ｄｒｏｐ table"}'.encode(), "denied"),  # NFKC
        (b'{"v": "\\ud800"}', "lone surrogate"),
        (b'{"v": "a", "v": "b"}', "duplicate"),
        (b' {"v": "a"}', "allow-list"),
        ('{"v": "é"}\n'.encode(), "allow-list"),
    ]:
        with pytest.raises(Rejected, match=reason):
            check.check(message)


def test_allow_pattern_on_bytes_matches_characters() -> None:
    """The pattern is matched on the message's UTF-8 bytes: `.` still takes one character,
    so a length-bounded pattern counts characters, as it did on text."""
    check = _check(allow="^.{2}$")
    assert check.check("éa".encode()) == "éa".encode()
    with pytest.raises(Rejected):
        check.check("éab".encode())
    with pytest.raises(Rejected):
        check.check(b"\xe9a")  # not UTF-8


def test_fast_and_reference_agree_on_every_combination() -> None:
    """The guard's verdict with the compiled predicate equals jsonschema's alone."""
    for schema, doc in itertools.product(SCHEMAS, DOCS):
        message = json.dumps(doc).encode()
        fast = _check(schema)
        slow = _check(schema)
        slow.valid = None
        results = []
        for check in (fast, slow):
            try:
                results.append(check.check(message))
            except Rejected as err:
                results.append(str(err))
        assert results[0] == results[1], (schema, doc)
