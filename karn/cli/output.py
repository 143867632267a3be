"""How commands print: `--format table|json`, and times as RFC 3339 (docs/cli.md)."""

from __future__ import annotations

import argparse
import json
import time


def add_format(parser: argparse.ArgumentParser, default: str = "table",
               json_help: str = "a JSON array, one object per row") -> None:
    other = "json" if default == "table" else "table"
    parser.add_argument("--format", choices=("table", "json"), default=default,
                        help=f"{default} (default) or {other}; json: {json_help}")


def print_fields(objects: list[dict]) -> None:
    """`--format table` of inspect: one KEY  VALUE line per top-level field (nested
    values as one-line JSON), a blank line between objects."""
    for number, obj in enumerate(objects):
        if number:
            print()
        width = max((len(key) for key in obj), default=0)
        for key, value in obj.items():
            text = value if isinstance(value, str) and value else json.dumps(
                value, ensure_ascii=False)
            print(f"{key.ljust(width)}  {text}")


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def rfc3339(epoch: float) -> str:
    """A Unix time as RFC 3339 in UTC, to the second (2026-12-02T05:00:22Z)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
