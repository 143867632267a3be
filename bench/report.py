"""Shared by the bench scripts: replace one `## Section` of docs/benchmarks.md."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def replace_section(section: str, report: str, docs: Path = DOCS) -> None:
    """`report` starts with the `section` heading; other sections are kept as they are."""
    text = docs.read_text() if docs.exists() else "# karn benchmarks\n"
    if section in text:
        head, _, rest = text.partition(section)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
        text = head + report + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + report
    docs.write_text(text)
    print(f"wrote {docs}", file=sys.stderr)
