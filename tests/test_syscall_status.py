"""Every syscall row's status is explicit, and a real guest sees what the table says.

The table (karn/kernel/syscalls.py) gives each served number one of three statuses;
docs/syscalls.md is rendered from it (tests/test_syscall_docs.py). Here a C program,
compiled at test time, calls every `error` row and every number without a row from a
KVM guest and reports the errno it got.
"""

from __future__ import annotations

import errno

import pytest

from karn.abi.syscalls import SYSCALL_NAMES, SYSCALL_NUMBERS
from karn.kernel.syscalls import ERRORS, TABLE, Error, Partial, Supported, load_areas

# Arguments that make each refused call well-formed (an existing path, a name, a buffer,
# fd 0), so the table's errno is the answer and not EFAULT or EBADF. A new `error` row
# whose call needs arguments gets them here; one that needs none takes zeros.
WELL_FORMED: dict[str, tuple[str, ...]] = {}


def run_calls(build, karn, calls: list[str]) -> tuple[dict[int, list[int]], str]:
    """Run the calls in a guest: number -> the errnos it returned (0: success), and stderr."""
    got = karn(build("syscall_status", "static"), *calls)
    err = got.stderr.decode(errors="replace")
    assert got.returncode == 0, err
    assert "Traceback" not in err, err
    results: dict[int, list[int]] = {}
    for line in got.stdout.decode().splitlines():
        number, _, code = line.split()
        results.setdefault(int(number), []).append(int(code))
    return results, err


def test_every_row_has_one_of_the_three_statuses():
    served = {name for area in load_areas() for name in area.HANDLERS}
    assert {entry.name for entry in TABLE.values()} == served | set(ERRORS)
    for number, entry in TABLE.items():
        assert SYSCALL_NAMES[number] == entry.name
        status = entry.status
        assert isinstance(status, Supported | Partial | Error), (entry.name, status)
        if isinstance(status, Partial):
            assert status.note.strip(), f"{entry.name}: a partial row must say what is missing"
        if isinstance(status, Error):
            assert status.code in errno.errorcode and status.reason.strip(), entry.name
            assert ERRORS[entry.name] is status, f"{entry.name}: error rows live in ERRORS"


def test_error_rows_return_their_errno_in_a_real_guest(build, karn):
    rows = {SYSCALL_NUMBERS[name]: status.code for name, status in ERRORS.items()}
    assert len(rows) >= 2  # rseq, ptrace
    calls = [",".join((str(nr), *WELL_FORMED.get(SYSCALL_NAMES[nr], ()))) for nr in rows]
    results, err = run_calls(build, karn, calls)
    wrong = {
        SYSCALL_NAMES[nr]: (
            [errno.errorcode.get(c, c) for c in results.get(nr, [])],
            errno.errorcode[code],
        )
        for nr, code in rows.items()
        if results.get(nr) != [code]
    }
    assert not wrong, f"(the guest got, the table says): {wrong}\n{err}"
    assert "unimplemented syscall" not in err, err  # refusals are no unimplemented calls


def test_numbers_without_a_row_are_enosys_and_logged_once_by_name(build, karn):
    missing = sorted(set(SYSCALL_NAMES) - set(TABLE))
    assert len(missing) > 100
    far = 5000  # beyond every table: no name to log, one shared line
    calls = [str(nr) for nr in (*missing, *missing, far, far + 1)]
    results, err = run_calls(build, karn, calls)
    not_enosys = {
        SYSCALL_NAMES.get(nr, nr): codes
        for nr, codes in results.items()
        if codes != [errno.ENOSYS] * len(codes)
    }
    assert not not_enosys, not_enosys
    assert set(results) == {*missing, far, far + 1}
    lines = [line for line in err.splitlines() if "unimplemented syscall" in line]
    for nr in missing:
        named = [line for line in lines if f"syscall {SYSCALL_NAMES[nr]} ({nr})" in line]
        assert len(named) == 1, f"{SYSCALL_NAMES[nr]}: logged {len(named)} times\n{err}"
    assert len(lines) == len(missing) + 1, err  # and one line for the unknown numbers


@pytest.mark.parametrize("name", ["rseq", "ptrace"])
def test_docs_row_states_the_errno(name):
    from karn.kernel.syscall_docs import render

    code = errno.errorcode[ERRORS[name].code]
    row = f"| {SYSCALL_NUMBERS[name]} | {name} |"
    assert any(
        line.startswith(row) and f"| error {code} |" in line for line in render().splitlines()
    ), name
