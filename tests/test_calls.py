"""Calls real programs and test suites need (issue 15): each C program in
tests/programs/calls_*.c prints what it sees (results, errno names, comparisons, never
times or addresses), and a karn run must print the same as the same binary run natively.
"""

from __future__ import annotations

import pytest

THREADED = ("-pthread",)


@pytest.mark.parametrize("variant", ["static", "musl-static"])
def test_cpu_time_getrusage_and_cpu_clocks(variant, build, karn, native, same):
    """getrusage, times and the CPU-time clocks count the guest's threads' CPU time."""
    exe = build("calls_cputime", variant, extra_flags=THREADED)
    expected = native(exe)
    assert expected.returncode == 0, expected.stdout.decode()
    same(expected, karn(exe), f"calls_cputime ({variant})")
