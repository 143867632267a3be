"""Shared by the bench scripts: merge a report into docs/benchmarks.md.

A report is markdown with `## ` sections (and, from bench/run.py, a preamble before the
first). Each of its sections replaces the section of the same heading in the file, or is
appended; the file's other sections stay as they are, so one script never erases what
another measured.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def _split(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(preamble, [(heading line, whole section text)])."""
    parts = ("\n" + text).split("\n## ")
    preamble = parts[0].removeprefix("\n")
    sections = []
    for part in parts[1:]:
        heading = part.split("\n", 1)[0]
        sections.append((heading, "## " + part.rstrip("\n") + "\n"))
    return preamble, sections


def merge(report: str, docs: Path = DOCS) -> None:
    old_pre, old = _split(docs.read_text() if docs.exists() else "# Benchmarks\n")
    new_pre, new = _split(report)
    fresh = dict(new)
    merged = [fresh.pop(heading, text) for heading, text in old]
    merged += [text for heading, text in new if heading in fresh]
    preamble = new_pre if new_pre.strip() else old_pre
    docs.write_text(preamble.rstrip("\n") + "\n\n" + "\n".join(merged))
    print(f"wrote {docs}", file=sys.stderr)
