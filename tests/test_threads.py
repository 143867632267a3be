"""C pthreads programs under karn, compared with the same binary run natively.

Each program is built for glibc (static and dynamic) and musl (static); the dynamic glibc
build also needs libgcc_s (dlopened by pthread_cancel's unwinder), which karn collects.
"""

from __future__ import annotations

import time

import pytest

THREAD_VARIANTS = ("static", "dynamic", "musl-static")


@pytest.mark.parametrize("cpus", ["1", "2"])
@pytest.mark.parametrize("variant", THREAD_VARIANTS)
def test_mutex_condvar_ping_pong(variant, cpus, build, karn, native, same):
    exe = build("thr_pingpong", variant)
    same(native(exe, "2000"), karn("--cpus", cpus, exe, "2000"), f"ping-pong, --cpus {cpus}")


@pytest.mark.parametrize("cpus", ["1", "2"])
@pytest.mark.parametrize("variant", THREAD_VARIANTS)
def test_join_64_threads_with_return_values(variant, cpus, build, karn, native, same):
    exe = build("thr_join", variant)
    expected = native(exe, "64")
    assert b"together: 64 threads" in expected.stdout
    same(expected, karn("--cpus", cpus, exe, "64"), f"64 threads, --cpus {cpus}")


@pytest.mark.parametrize("where", ["cond_wait", "nanosleep", "read", "disabled"])
@pytest.mark.parametrize("variant", THREAD_VARIANTS)
def test_pthread_cancel(variant, where, build, karn, native, same):
    """Cancelled while blocked in a condvar wait, nanosleep or a pipe read: cleanup
    handlers run and join gets PTHREAD_CANCELED; with cancellation disabled, not."""
    exe = build("thr_cancel", variant)
    expected = native(exe, where)
    assert expected.stdout.count(b"PTHREAD_CANCELED") == (where != "disabled")
    same(expected, karn(exe, where, timeout=20), f"pthread_cancel in {where}")


@pytest.mark.parametrize("variant", THREAD_VARIANTS)
def test_exit_group_while_other_threads_block(variant, build, karn, native, same):
    """exit(7) from one thread ends the process although the others are blocked."""
    exe = build("thr_exit", variant)
    expected = native(exe, "7")
    assert expected.returncode == 7
    t0 = time.monotonic()
    got = karn("--cpus", "2", exe, "7", timeout=30)
    elapsed = time.monotonic() - t0
    same(expected, got, "exit_group with blocked threads")
    assert elapsed < 10, f"took {elapsed:.1f} s to end blocked threads"


@pytest.mark.parametrize("variant", THREAD_VARIANTS)
def test_robust_mutex_owner_died(variant, build, karn, native, same):
    exe = build("thr_robust", variant)
    expected = native(exe)
    assert b"lock after owner died: EOWNERDEAD" in expected.stdout
    same(expected, karn(exe), "robust mutex")


@pytest.mark.parametrize("variant", THREAD_VARIANTS)
def test_thread_churn(variant, build, karn, native, same):
    """Create+join cycles (karn reuses the vCPU and host thread of an ended thread), each
    new thread starting with its own TLS, its creator's signal mask and rounding mode (not
    the vCPU's last thread's), a CPU clock of its own (not its host thread's), a new tid
    and working signals; detached threads ending
    while others are created and joined."""
    exe = build("thr_churn", variant, extra_flags=("-lm",))
    expected = native(exe, "30")
    assert expected.returncode == 0 and b"overlap: 200 detached, sum 20100" in expected.stdout
    same(expected, karn("--cpus", "2", exe, "30", timeout=120), "thread churn")


def test_joined_thread_is_not_counted_by_the_next_create(build, karn, native, same):
    """With room for one thread beside main (--pids-limit 2), pthread_create after each
    pthread_join succeeds: the ended thread is off the count before the join returns."""
    exe = build("thr_churn", extra_flags=("-lm",))
    expected = native(exe, "60", "--serial-only")
    assert expected.returncode == 0
    same(expected, karn("--pids-limit", "2", exe, "60", "--serial-only", timeout=120),
         "create after join at the thread limit")


@pytest.mark.parametrize("cpus", ["1", "2"])
def test_membarrier_private_expedited(cpus, build, karn, native, same):
    """membarrier(2) as liburcu and musl's dynamic linker use it (musl registers at its
    first pthread_create; karn answered ENOSYS and logged it): the private expedited
    commands and their SYNC_CORE forms, EPERM before registering, EINVAL for bad flags or
    commands, barriers while another thread spins in user mode; output as native's."""
    exe = build("membarrier", "dynamic", ("-pthread",))
    expected = native(exe)
    assert b"barriers 100\n" in expected.stdout, expected.stdout
    got = karn("--cpus", cpus, exe)
    same(expected, got, f"membarrier, --cpus {cpus}")
    assert b"unimplemented" not in got.stderr
