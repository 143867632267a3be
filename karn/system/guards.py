"""Guards on channels: every check must pass or the message is rejected (fail-closed).

A guard that cannot decide (bad UTF-8, invalid JSON, an exception in a check) rejects;
the reason goes to the caller, which counts and logs it. JSON Schema validation uses the
`jsonschema` package (the reference implementation; every draft it knows).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from karn.system.description import Guard


def check_schema(schema: dict) -> str | None:
    """Why a JSON schema is invalid, or None."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as err:
        return err.message
    return None


class GuardCheck:
    """A guard's checks, compiled once; `reject(message)` -> the reason, or None to pass."""

    def __init__(self, guard: Guard) -> None:
        self.name = guard.name
        self.max_size = guard.max_size
        self.allow = re.compile(guard.allow, re.DOTALL) if guard.allow is not None else None
        self.deny = [w.lower() for w in guard.deny]
        self.validator: Any = None
        if guard.schema is not None:
            import jsonschema

            self.validator = jsonschema.validators.validator_for(guard.schema)(guard.schema)
        self.rate = guard.rate
        self.burst = float(guard.burst)
        self.tokens = self.burst
        self.refilled = time.monotonic()

    def reject(self, message: bytes) -> str | None:
        try:
            return self._reject(message)
        except Exception as err:  # noqa: BLE001 - fail closed on anything unexpected
            return f"guard error: {type(err).__name__}: {err}"

    def _reject(self, message: bytes) -> str | None:
        if self.max_size is not None and len(message) > self.max_size:
            return f"size {len(message)} over the guard's limit of {self.max_size}"
        needs_text = self.allow is not None or self.deny or self.validator is not None
        text = ""
        if needs_text:
            try:
                text = message.decode("utf-8")
            except UnicodeDecodeError:
                return "not UTF-8 text"
        if self.allow is not None and not self.allow.fullmatch(text):
            return "does not match the allow-list pattern"
        lowered = text.lower()
        for word in self.deny:
            if word in lowered:
                return f"contains denied word {word!r}"
        if self.validator is not None:
            try:
                doc = json.loads(text)
            except ValueError as err:
                return f"not JSON: {err}"
            error = next(iter(self.validator.iter_errors(doc)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(root)"
                return f"schema: {where}: {error.message}"
        if self.rate is not None and not self._take_token():
            return f"over the rate limit of {self.rate:g} messages/s"
        return None

    def _take_token(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True
