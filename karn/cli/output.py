"""How commands print: `--format table|json`, and times as RFC 3339 (docs/cli.md)."""

from __future__ import annotations

import argparse
import json
import time


def add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="table (default) or json: a JSON array, one object per row")


def print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def rfc3339(epoch: float) -> str:
    """A Unix time as RFC 3339 in UTC, to the second (2026-12-02T05:00:22Z)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
