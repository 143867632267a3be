"""The monitor stays up and bounded whatever the guest does: many threads exiting at once,
stale mappings, memory touched behind the watchdog's back, thread and signal floods,
tmpfs metadata (issue 12: R1, R2, R11, V2's thread memory, RT signals, tmpfs inodes)."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import karn_run, native_run

STORM_THREADS = 100
STORM_RUNS = 20
STORM_STATUS = 7


def _karn_tmp(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A private TMPDIR for the monitor, so its leftovers are ours to count."""
    tmp = tmp_path / "monitor-tmp"
    tmp.mkdir()
    return {"TMPDIR": str(tmp)}, tmp


def test_many_threads_exit_without_monitor_crash(build, tmp_path: Path) -> None:
    """R1: exit_group while 100 threads sleep, spin and make syscalls, 20 times: the
    monitor exits with the guest's status every time (it used to die of SIGSEGV in
    pthread_kill on an exited vCPU thread, 4 runs in 6) and leaves no temp directories."""
    prog = build("thread_exit_storm", "static", ("-pthread",))
    args = (str(STORM_THREADS), str(STORM_STATUS))
    native = native_run(prog, *args)
    assert native.returncode == STORM_STATUS
    env, tmp = _karn_tmp(tmp_path)
    failures = []
    for run in range(STORM_RUNS):
        res = karn_run(prog, *args, extra_env=env)
        err = res.stderr.decode(errors="replace")
        if (res.returncode, res.stdout) != (native.returncode, native.stdout) or err:
            failures.append(
                f"run {run}: status {res.returncode}, stdout {res.stdout!r}, stderr {err[-500:]!r}"
            )
    assert not failures, f"{len(failures)}/{STORM_RUNS} runs failed:\n" + "\n".join(failures)
    assert [name for name in os.listdir(tmp) if name.startswith("karn-unix-")] == []
