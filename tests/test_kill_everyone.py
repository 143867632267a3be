"""kill(-1, sig) signals every process but the caller: in a guest alone in its world that
is no one (ESRCH), as for pid 1 in a pid namespace of its own. It must not signal itself:
an init-like program's shutdown (kill(-1, SIGTERM)) would kill the program itself."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("variant", ["static", "musl-static"])
def test_kill_minus_one_reaches_no_one(variant, build, karn, native, same):
    exe = build("kill_everyone", variant)
    expected = native("unshare", "--pid", "--fork", exe)
    assert expected.returncode == 0, expected.stderr.decode()
    esrch = b"kill(-1, SIGUSR1) = -1 ESRCH"
    assert esrch in expected.stdout  # pid 1 natively, alone in its pid namespace
    same(expected, karn(exe), f"kill_everyone ({variant})")
