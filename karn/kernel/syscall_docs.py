"""Render docs/syscalls.md from the syscall table, so the docs cannot drift from the code.

Regenerate with: python3 -m karn.kernel.syscall_docs > docs/syscalls.md
"""

from __future__ import annotations

from karn.abi.errno import errno_name
from karn.abi.syscalls import SYSCALL_NAMES
from karn.kernel.syscalls import TABLE, Denied, Error, Partial, Status, Supported, load_areas


def status_cells(status: Status | Denied) -> tuple[str, str]:
    """The status and notes columns of a row (a policy's denial has none)."""
    match status:
        case Supported():
            return "supported", ""
        case Partial(note):
            return "partial", note
        case Error(code, reason):
            return f"error {errno_name(code)}", reason
    raise TypeError(f"not a syscall status: {status!r}")


def render() -> str:
    load_areas()  # each row's status is its area's
    counts: dict[type, int] = {kind: 0 for kind in (Supported, Partial, Error)}
    rows = []
    for number in sorted(TABLE):
        entry = TABLE[number]
        status, notes = status_cells(entry.status)
        counts[type(entry.status)] += 1
        rows.append(f"| {number} | {entry.name} | {entry.area} | {status} | {notes} |")
    lines = [
        "# System calls",
        "",
        "Generated from `karn/kernel/syscalls.py` by `python3 -m karn.kernel.syscall_docs`;",
        "a test fails when this page and the table disagree.",
        "",
        f"{len(TABLE)} of {len(SYSCALL_NAMES)} x86-64 system calls have a row below:",
        f"{counts[Supported]} supported as Linux does, {counts[Partial]} partial (served with",
        f"the limitation in the notes) and {counts[Error]} refused on purpose: every",
        "well-formed call of an `error` row fails with the errno shown. Any other number",
        "returns `-ENOSYS` and is logged once by name (`karn: unimplemented syscall`).",
        "",
        "| nr | name | area | status | notes |",
        "|---:|------|------|--------|-------|",
        *rows,
        "",
        "Calls not listed return `-ENOSYS`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
