"""The --cpus gate time-slices: a thread spinning in user mode cannot keep the only vCPU
slot from the threads it waits for, sched_yield hands the slot over, and a signal reaches
a thread waiting for the slot.

Every test runs with --cpus 1 and more threads than that, so the gate is closed; programs
are compared with native runs where their output is deterministic. No test measures time:
each waits for the program to finish, with deadlines far above a loaded machine's need.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from helpers import signal_when_ready, wait_for

PYTHON = "/usr/bin/python3"


def test_a_spinning_main_thread_lets_the_thread_it_waits_for_run(build, karn, native, same):
    """main spins on a volatile flag that a second thread sets after syscalls and sleeps."""
    exe = build("preempt_flag")
    same(native(exe), karn("--cpus", "1", exe, timeout=120), "spinner and setter, --cpus 1")


def test_fifty_threads_of_non_blocking_queue_work_finish(build, karn, native, same):
    """25 producers and 25 consumers on a try-lock queue, yielding when they cannot go on."""
    exe = build("preempt_queue")
    same(native(exe), karn("--cpus", "1", exe, timeout=180), "50 queue threads, --cpus 1")


def test_sched_yield_hands_the_cpu_over(build, karn, native, same):
    """Two threads pass a turn 2000 times each way, waiting with sched_yield only."""
    exe = build("preempt_yield")
    same(native(exe, "2000"), karn("--cpus", "1", exe, "2000", timeout=120),
         "sched_yield turns, --cpus 1")


def test_a_sleeper_wakes_while_another_thread_spins(build, karn, native, same):
    exe = build("preempt_sleep")
    same(native(exe, "20"), karn("--cpus", "1", exe, "20", timeout=120),
         "sleeps beside a spinner, --cpus 1")


# -- signals to karn while the target thread waits for the slot ---------------------------


def _karn_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "karn", "run", *args]


@pytest.mark.parametrize("handler", [True, False], ids=["handled", "default-action"])
def test_sigterm_to_karn_reaches_a_thread_waiting_for_the_slot(build, handler):
    """Two threads spin at --cpus 1 (one always waits for the slot); only the main thread
    takes SIGTERM. Its handler (or the default action) must run at once and end the run
    with 143, and --trace-summary still prints its table."""
    exe = build("preempt_sigterm")
    args = [] if handler else ["default"]
    status, out, err = signal_when_ready(
        _karn_cmd("--cpus", "1", "--trace-summary", str(exe), *args), signal.SIGTERM,
        timeout=60)
    assert status == 143, err
    assert out == (b"ready\nhandler ran\n" if handler else b"ready\n")
    assert "% time" in err and " total" in err, err  # the summary table
    assert "clone3" in err or "clone" in err, err


def test_sigint_ends_a_guest_whose_threads_all_spin(build):
    exe = build("preempt_sigterm")
    status, out, err = signal_when_ready(
        _karn_cmd("--cpus", "1", str(exe), "default"), signal.SIGINT, timeout=60)
    assert status == 128 + signal.SIGINT, err
    assert out == b"ready\n"


def test_inspect_shows_the_gate_preempting(build, state_env):
    """`karn inspect` of a guest whose two threads spin at --cpus 1: one slot, one thread
    waiting, and kicks that go on."""
    exe = build("preempt_sigterm")

    def karn_cli(*args: str) -> str:
        got = subprocess.run([sys.executable, "-m", "karn", *args], capture_output=True,
                             text=True, env=state_env, timeout=60, stdin=subprocess.DEVNULL)
        assert got.returncode == 0, (args, got.stderr)
        return got.stdout

    karn_cli("run", "-d", "--name", "spinners", "--cpus", "1", str(exe), "default")
    try:
        def gate() -> dict:
            return json.loads(karn_cli("inspect", "spinners"))[0].get("cpu_gate") or {}

        first = wait_for(lambda: (g := gate()).get("kicks") and g, "the gate's first kick")
        assert first["slots"] == 1 and first["gated"] is True
        wait_for(lambda: gate()["kicks"] > first["kicks"], "more kicks")
        assert len(gate()["running_ms"]) <= 1
    finally:
        karn_cli("kill", "-s", "KILL", "spinners")


# -- CPython: the GIL's hand-overs go through the gate ------------------------------------

PY_SPIN = """
    import threading, time
    stop = False
    def spin():
        n = 0
        while not stop:
            n += 1
    t = threading.Thread(target=spin)
    t.start()
    for i in range(20):
        time.sleep(0.01)
    stop = True
    t.join()
    print("main slept 20 times while a thread spun in bytecode")
"""

PY_QUEUE = """
    import queue, threading
    q = queue.Queue(maxsize=10)
    done = [0] * 50
    def worker(i):
        got = 0
        while got < 20:
            try:
                if i % 2:
                    q.put_nowait(i)
                else:
                    q.get_nowait()
                got += 1
            except (queue.Empty, queue.Full):
                pass
        done[i] = got
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("threads", len(threads), "items", sum(done), "left", q.qsize())
"""


@pytest.fixture(scope="module")
def debian_python() -> None:
    if not os.access(PYTHON, os.X_OK):
        pytest.fail(f"{PYTHON} is needed (Debian's python3)", pytrace=False)


@pytest.mark.parametrize("script", [PY_SPIN, PY_QUEUE], ids=["spinning-thread", "queue-50"])
def test_python_threads_make_progress_on_one_cpu(debian_python, script, karn, native, same):
    code = textwrap.dedent(script)
    expected = native(PYTHON, "-c", code)
    assert expected.returncode == 0, expected.stderr.decode()
    same(expected, karn("--cpus", "1", "--root", "/", PYTHON, "-c", code, timeout=180),
         "python threads, --cpus 1")
