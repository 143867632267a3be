"""Sizes as users write them: 268435456, "256m", "1.5g", "512MiB" (binary units)."""

from __future__ import annotations

UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(value: object) -> int:
    """Bytes (> 0) from an integer or a string; ValueError otherwise (each caller words
    its own error)."""
    if isinstance(value, bool):
        raise ValueError("must be a positive size (e.g. 64m)")
    if isinstance(value, int):
        size = value
    else:
        text = str(value).strip().lower().removesuffix("ib").removesuffix("b")
        unit = text[-1:] if text[-1:] in UNITS else ""
        try:
            size = int(float(text[: len(text) - len(unit)]) * UNITS[unit])
        except (ValueError, OverflowError):
            size = 0
    if size <= 0:
        raise ValueError("must be a positive size (e.g. 64m)")
    return size
