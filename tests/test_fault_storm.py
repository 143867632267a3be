"""Threads taking CPU exceptions at the same moment (tests/programs/fault_storm.c): each
vCPU has its own exception stack, so every handler sees its own thread's faulting rip,
rsp, flags and address, as natively. With one shared stack a thread read another's frame
and returned onto the wrong stack (crash), or reported another thread's state."""

from __future__ import annotations

import pytest

THREADS, FAULTS = "8", "300"


@pytest.mark.parametrize("kind", ["ud2", "segv", "int3"])
def test_concurrent_faults_see_their_own_frames(kind, build, karn, native, same):
    exe = build("fault_storm", "static", ("-pthread",))
    expected = native(exe, kind, THREADS, FAULTS)
    assert expected.returncode == 0, expected.stdout
    same(expected, karn("--cpus", "2", exe, kind, THREADS, FAULTS), f"fault storm {kind}")


@pytest.mark.parametrize("transport", ["exit", "fast"])
def test_concurrent_faults_with_either_transport(transport, build, karn, native, same):
    """The same with each transport named (fast: each vCPU's GS base is its slot), whatever
    the default is."""
    exe = build("fault_storm", "static", ("-pthread",))
    expected = native(exe, "segv", THREADS, FAULTS)
    same(expected, karn("--syscall-transport", transport, "--cpus", "2", exe, "segv",
                        THREADS, FAULTS), f"fault storm segv ({transport})")
