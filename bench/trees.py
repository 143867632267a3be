"""Shared by the bench scripts that run karn from other source trees (--base): each tree's
modules compiled to bytecode before the runs. These machines set PYTHONDONTWRITEBYTECODE=1,
so a checkout without bytecode compiles all of karn in every run it starts, which a
per-operation CPU figure then carries (a create+join's host CPU read 836 against 547 µs
for two trees that measure level once both are compiled: 594 against 592)."""

from __future__ import annotations

import compileall
from pathlib import Path


def compile_tree(tree: Path) -> None:
    """Write the bytecode of tree's karn package (quietly; what is current stays)."""
    compileall.compile_dir(str(tree / "karn"), quiet=1)
