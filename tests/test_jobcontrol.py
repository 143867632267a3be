"""Job control (issue 15): SIGSTOP/SIGTSTP/SIGTTIN/SIGTTOU stop a guest process, every
thread of it, until SIGCONT; the parent learns it from wait (WUNTRACED, WCONTINUED,
waitid's WSTOPPED) and SIGCHLD (CLD_STOPPED, CLD_CONTINUED); /proc shows state T.
Compared with native runs of the same programs (kernel/jobcontrol.py)."""

from __future__ import annotations

import pytest
from conftest import BUSYBOX


@pytest.mark.parametrize("variant", ["static", "dynamic"])
def test_stops_and_continues_as_native(build, karn, native, same, variant):
    probe = build("job_stops", variant, extra_flags=("-pthread",))
    same(native(probe), karn(probe), "job-control stops")


def test_pid_1_does_not_stop(karn):
    """The first process has no parent in the guest to continue it: a stop signal leaves
    it running, as a container's init (docker run busybox sh -c 'kill -STOP $$')."""
    got = karn(BUSYBOX, "sh", "-c", "kill -STOP $$; kill -TSTP $$; echo still running")
    assert got.returncode == 0 and got.stdout == b"still running\n", got
