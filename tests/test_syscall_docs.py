"""docs/syscalls.md is generated from the syscall table; it must never drift."""

from pathlib import Path

from karn.kernel.syscall_docs import render

DOC = Path(__file__).resolve().parent.parent / "docs" / "syscalls.md"


def test_syscall_page_matches_table():
    assert DOC.read_text() == render(), (
        "docs/syscalls.md is stale: run python3 -m karn.kernel.syscall_docs > docs/syscalls.md"
    )
