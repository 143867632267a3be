"""Render docs/syscalls.md from the syscall table, so the docs cannot drift from the code.

Regenerate with: python3 -m karn.kernel.syscall_docs > docs/syscalls.md
"""

from __future__ import annotations

from karn.kernel.numbers import SYSCALL_NAMES
from karn.kernel.syscalls import DELIBERATE_ENOSYS, TABLE


def render() -> str:
    implemented = len(TABLE)
    lines = [
        "# System calls",
        "",
        "Generated from `karn/kernel/syscalls.py` by `python3 -m karn.kernel.syscall_docs`;",
        "a test fails when this page and the table disagree.",
        "",
        f"{implemented} of {len(SYSCALL_NAMES)} x86-64 system calls are served. Any other",
        "number returns `-ENOSYS` and is logged once by name (`karn: unimplemented syscall`).",
        "",
        "| nr | name | area | status | notes |",
        "|---:|------|------|--------|-------|",
    ]
    for number in sorted(SYSCALL_NAMES):
        name = SYSCALL_NAMES[number]
        entry = TABLE.get(number)
        if entry is not None:
            status = "partial" if entry.note else "supported"
            lines.append(f"| {number} | {name} | {entry.area} | {status} | {entry.note} |")
        elif name in DELIBERATE_ENOSYS:
            lines.append(f"| {number} | {name} | | ENOSYS | {DELIBERATE_ENOSYS[name]} |")
    lines += [
        "",
        "Calls not listed return `-ENOSYS`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
