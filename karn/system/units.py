"""Durations and sizes as a system description writes them ("100ms", "64m")."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(us|ms|s)?\s*$")
_TO_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)(?:i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def duration_ms(value: object) -> float:
    """A duration in milliseconds: a number (ms) or a string "250us", "100ms", "2s"."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"invalid duration {value!r} (use e.g. 100ms, 2s, 500us)")
    return float(match.group(1)) * _TO_MS[match.group(2)]


def size_bytes(value: object) -> int:
    """A size in bytes: an integer or a string "512", "4k", "64m"."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"invalid size {value!r}")
        return value
    match = _SIZE.match(str(value))
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"invalid size {value!r} (use e.g. 256, 4k, 64m)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
