"""Guards on channels: every check must pass or the message is rejected (fail-closed).

A guard that cannot decide (bad UTF-8, invalid JSON, an exception in a check) rejects;
the reason goes to the caller, which counts and logs it. JSON Schema validation uses the
`jsonschema` package (the reference implementation; every draft it knows).

A guard and the receiver must read a message the same way, or the guard checks one
message and the receiver acts on another. So a schema guard accepts only I-JSON
(RFC 7493: no duplicate keys, no NaN/Infinity, no lone surrogates or noncharacters,
numbers a double holds exactly) and forwards its canonical re-serialisation, which any
JSON parser reads as the document the guard validated. Deny words are matched in the
raw text and in every decoded string and key, after normalisation (below).
"""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
from collections.abc import Iterable, Iterator

from karn.hints import Any
from karn.system.schemacheck import compile_schema

MAX_EXACT_INT = 2**53 - 1  # I-JSON: integers a double represents exactly
# Code points I-JSON forbids in strings: surrogates (a decoded string holds one only
# when it was lone: a valid pair decodes to one character) and noncharacters.
FORBIDDEN = re.compile(
    "[\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"{chr(p << 16 | 0xFFFE)}{chr(p << 16 | 0xFFFF)}" for p in range(17))
    + "]"
)


class Rejected(Exception):
    """The guard's reason for refusing a message."""


REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
DATA_KEYWORDS = ("const", "enum", "default", "examples")  # hold instances, not schemas


def check_schema(schema: dict) -> str | None:
    """Why a JSON schema is invalid, or refers to anything outside itself, or None."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as err:
        return err.message
    stack: list[Any] = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                if key in REF_KEYWORDS and isinstance(value, str) and not value.startswith("#"):
                    return (
                        f"{key} {value!r} is not local ('#/...'): a guard never "
                        "fetches or reads schemas"
                    )
                if key not in DATA_KEYWORDS:
                    stack.append(value)
    return None


def _no_retrieval(uri: str) -> Any:
    raise LookupError(f"a guard never fetches schemas ({uri})")


def validator(schema: dict) -> Any:
    """A JSON Schema validator that resolves references only inside the schema itself
    (jsonschema would otherwise fetch a remote $ref over HTTP)."""
    import jsonschema
    import referencing

    # mypy's attrs plugin does not know the field alias `retrieve` (referencing's API)
    registry: Any = referencing.Registry(retrieve=_no_retrieval)  # type: ignore[call-arg]
    return jsonschema.validators.validator_for(schema)(schema, registry=registry)


def compile_allow(pattern: str) -> Any:
    """An allow-list pattern for RE2, whose matching takes linear time whatever the
    pattern and message (no catastrophic backtracking: a guard must not be stalled by a
    message); ValueError for what RE2 does not accept (backreferences, lookaround).

    It matches a message's UTF-8 bytes: RE2 matches a str as its UTF-8 encoding anyway
    (in UTF-8 mode, `.` and classes take whole characters), so the pattern's bytes match
    the same messages, without the wrapper's encoding and offset work per message
    (~3.6 -> 1.5 µs for 64 B)."""
    import re2

    options = re2.Options()
    options.dot_nl = True  # DOTALL: the whole message, newlines included
    options.log_errors = False
    try:
        return re2.compile(pattern.encode("utf-8"), options)
    except re2.error as err:
        detail = err.args[0].decode(errors="replace") if err.args else str(err)
        raise ValueError(f"not a pattern RE2 accepts: {detail}") from None
    except UnicodeError:
        raise ValueError("not a pattern RE2 accepts: not valid Unicode") from None


def normalise(text: str) -> str:
    """What deny words are matched against: NFKC (so look-alike compatibility forms and
    no-break spaces become plain ones), case-folded, invisible format characters (zero-width
    spaces, joiners, bidi marks) removed, every run of white space one space."""
    if text.isascii():  # the common case, and nothing there to normalise or remove
        return " ".join(text.lower().split())
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return " ".join(text.split())


def _reject_constant(name: str) -> Any:
    raise Rejected(f"not I-JSON: {name} is not a JSON number")


def _exact_int(digits: str) -> int:
    value = int(digits)
    if abs(value) > MAX_EXACT_INT:
        raise Rejected(f"not I-JSON: integer {digits[:40]} is beyond ±2^53-1")
    return value


def _finite_float(digits: str) -> float:
    value = float(digits)
    if not math.isfinite(value):
        raise Rejected(f"not I-JSON: number {digits[:40]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise Rejected(f"not I-JSON: duplicate key {key[:40]!r}")
        doc[key] = value
    return doc


def parse_strict(text: str, plain: bool = False) -> Any:
    """One I-JSON document; Rejected otherwise. `plain`: the text is ASCII without a
    backslash, so its strings are too (no escape can make a surrogate or noncharacter)."""
    try:
        doc = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
            parse_int=_exact_int,
            parse_float=_finite_float,
        )
    except ValueError as err:
        raise Rejected(f"not JSON: {err}") from None
    for s in () if plain else strings(doc):
        bad = None if s.isascii() else FORBIDDEN.search(s)  # the class is slow: ~45 ns/char
        if bad is not None:
            c = ord(bad.group())
            kind = "lone surrogate" if 0xD800 <= c <= 0xDFFF else "noncharacter"
            raise Rejected(f"not I-JSON: {kind} U+{c:04X} in a string")
    return doc


def strings(doc: Any) -> Iterator[str]:
    """Every string in a decoded JSON document: keys and values, at any depth (pairs
    lists of a lenient parse included)."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def canonical(doc: Any) -> bytes:
    """The bytes a schema guard forwards: compact separators, keys in the sender's order,
    UTF-8 characters as themselves (ensure_ascii off, so a receiver that searches the raw
    text sees what the deny words were matched against); only '"', '\\' and control
    characters are escaped."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class Guard:
    """A guard as the system description declares it (docs/systems.md)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.max_size: int | None = None
        self.schema: dict | None = None
        self.allow: str | None = None  # the whole message must match
        self.deny: list[str] = []  # case-insensitive words or phrases
        self.rate: float | None = None  # messages per second (token bucket)
        self.burst: int = 1

    FIELDS = ("max_size", "schema", "allow", "deny", "rate", "burst")

    def to_json(self) -> dict:
        """As the supervisor hands it to the receiver's monitor (docs/design/channels.md)."""
        return {"name": self.name, **{key: getattr(self, key) for key in self.FIELDS}}

    @classmethod
    def from_json(cls, fields: dict) -> Guard:
        guard = cls(str(fields["name"]))
        for key in cls.FIELDS:
            if key in fields:
                setattr(guard, key, fields[key])
        return guard


class GuardCheck:
    """A guard's checks, compiled once; `check(message)` -> the bytes to forward, or
    Rejected with the reason."""

    def __init__(self, guard: Guard) -> None:
        self.name = guard.name
        self.max_size = guard.max_size
        self.allow = compile_allow(guard.allow) if guard.allow is not None else None
        self.deny = [normalise(w) for w in guard.deny]
        self.validator = validator(guard.schema) if guard.schema is not None else None
        # Says quickly when a document is certainly valid; jsonschema decides otherwise.
        self.valid = compile_schema(guard.schema) if guard.schema is not None else None
        self.rate = guard.rate
        self.burst = float(guard.burst)
        self.tokens = self.burst
        self.refilled = time.monotonic()

    def check(self, message: bytes) -> bytes:
        try:
            return self._check(message)
        except Rejected:
            raise
        except Exception as err:  # noqa: BLE001 - fail closed on anything unexpected
            raise Rejected(f"guard error: {type(err).__name__}: {err}") from None

    def _check(self, message: bytes) -> bytes:
        if self.max_size is not None and len(message) > self.max_size:
            raise Rejected(f"size {len(message)} over the guard's limit of {self.max_size}")
        forward = message
        if self.allow is not None or self.deny or self.validator is not None:
            try:
                text = message.decode("utf-8")  # strict: no encoded surrogates either
            except UnicodeDecodeError:
                raise Rejected("not UTF-8 text") from None
            if self.allow is not None and not self.allow.fullmatch(message):
                raise Rejected("does not match the allow-list pattern")
            self._deny([text])
            if self.validator is not None:
                plain = text.isascii() and "\\" not in text
                doc = parse_strict(text, plain)
                if not plain:  # else every string and key is a piece of the text, whose
                    # normalised form holds each one's (normalise maps a substring to a
                    # substring): the text's check above covered them
                    self._deny(strings(doc))
                if self.valid is None or not self.valid(doc):
                    error = next(iter(self.validator.iter_errors(doc)), None)
                    if error is not None:
                        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                        raise Rejected(f"schema: {where}: {error.message}")
                forward = canonical(doc)
            elif self.deny:
                self._deny(self._lenient_strings(text))
        if self.rate is not None and not self._take_token():
            raise Rejected(f"over the rate limit of {self.rate:g} messages/s")
        return forward

    def _deny(self, texts: Iterable[str]) -> None:
        if not self.deny:
            return
        for text in texts:
            found = normalise(text)
            for word in self.deny:
                if word in found:
                    raise Rejected(f"contains denied word {word!r}")

    @staticmethod
    def _lenient_strings(text: str) -> Iterable[str]:
        """A text guard's message may still be JSON to its receiver: the strings of every
        reading of it (all duplicates kept), or none if it is not JSON at all."""
        try:
            doc = json.loads(text, object_pairs_hook=lambda pairs: pairs)
        except (ValueError, RecursionError):
            return []
        return strings(doc)

    def _take_token(self) -> bool:
        assert self.rate is not None
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
