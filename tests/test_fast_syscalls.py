"""--syscall-transport fast (docs/design/fast-syscalls.md): syscall sites patched at their
second exit once the process has made WARM_EXITS exits, later calls served through shared
memory; every case against a native run of the same binary, with both transports where
both make sense.

The fast transport reports at info level how many calls its server answered: a case that
asserts the fast path was taken reads that line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import wait_for
from test_gdb import debug
from test_trace import trace_lines

from karn.platform.warmup import WARM_EXITS

TRANSPORTS = ("exit", "fast")
CALLS = "10000"
SERVED_DEADLINE = 120.0  # seconds
SERVED = re.compile(rb"fast syscalls: (\d+) sites patched, (\d+) calls served")
NOT_MADE = re.compile(rb"fast syscalls: not made \(the process ended after (\d+) exits")


def run(karn, transport: str, *args, timeout: float = 60):
    return karn("--syscall-transport", transport, *args, timeout=timeout)


def served(result: subprocess.CompletedProcess[bytes]) -> tuple[int, int]:
    """(sites patched, calls served) from the fast transport's info line."""
    m = SERVED.search(result.stderr)
    assert m, result.stderr.decode(errors="replace")
    return int(m[1]), int(m[2])


def karn_info(*args, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "karn", "--log-level", "info", "run", *args],
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)


@pytest.mark.parametrize("variant", ["static", "dynamic"])
def test_getpid_loop_is_served_in_shared_memory(variant, build, native, same):
    """The server needs a host core at the same time as the guest's vCPU; on a host short
    of cores the transport rightly sends every call through the exit path (it adapts), so
    runs are repeated until one is served in shared memory, within a generous deadline."""
    exe = build("fastcall", variant, ("-pthread",))
    expected = native(exe, "getpid", CALLS)
    deadline = time.monotonic() + SERVED_DEADLINE
    while True:
        got = karn_info("--syscall-transport", "fast", exe, "getpid", CALLS)
        assert got.stdout == expected.stdout and got.returncode == 0, got.stderr
        sites, calls = served(got)
        assert sites >= 1, got.stderr
        if calls >= 1 or time.monotonic() > deadline:
            break
    assert calls >= 1, got.stderr


def test_opens_are_served_in_shared_memory(build, native, tmp_path):
    """open and openat are fast calls: a loop of 1000 opens of a volume's file (none
    closed, so opens are nearly all the calls the program makes) is served in shared
    memory; before, each was an exit. A FIFO's open that must wait for its partner is
    redone on the exit path (tests/test_calls.py, fifo_open_fast). Repeated until a run
    is served, as the server needs a host core (see the getpid case)."""
    exe = build("fastcall", "static", ("-pthread",))
    (tmp_path / "data").write_bytes(b"k")
    expected = native(exe, "open", str(tmp_path / "data"), "1000")
    assert expected.stdout == b"open: 1000 opens, failed 0, first byte k\n", expected.stdout
    deadline = time.monotonic() + SERVED_DEADLINE
    while True:
        got = karn_info("--syscall-transport", "fast", "-v", f"{tmp_path}:/v:ro", exe,
                        "open", "/v/data", "1000")
        assert got.stdout == expected.stdout and got.returncode == 0, got.stderr
        calls = served(got)[1]
        if calls >= 500 or time.monotonic() > deadline:
            break
    assert calls >= 500, got.stderr  # the program's other calls are a handful


def test_futex_wakes_are_served_in_shared_memory(build, native):
    """The futex calls that cannot wait reach the server (repeated as the getpid case: the
    server needs a host core), and the output is native's."""
    exe = build("fastcall", "static", ("-pthread",))
    expected = native(exe, "futex")
    deadline = time.monotonic() + SERVED_DEADLINE
    while True:
        got = karn_info("--syscall-transport", "fast", "--cpus", "2", exe, "futex")
        assert got.stdout == expected.stdout and got.returncode == 0, got.stderr
        sites, calls = served(got)
        if calls >= 1 or time.monotonic() > deadline:
            break
    assert calls >= 1, got.stderr


IN_GUEST = re.compile(rb"(\d+) futex calls answered in the guest")


@pytest.mark.parametrize("mode", ["wake", "broadcast", "bitset", "requeue", "signal",
                                  "pingpong", "mapped"])
def test_futex_waits_spinning_in_the_guest(mode, build, native):
    """Untimed futex waits spin in their stub, registered in their slot, before they block;
    wakes in another stub or in the monitor end them. Every waiter is woken exactly once,
    every wake counts whom it woke (the sums are native's), a bitset wake reaches only its
    waiters, a requeue counts every waiter (a spinning one is woken instead of moved) and
    a signal handled during the wait (SA_RESTART) leaves it waiting; two threads hand a
    turn over through one word 3000 times (a lost wake-up hangs them), also with a file
    mapped read-only and MAP_SHARED (private to the process: it kept every futex call out
    of the guest). Repeated until some calls were answered in the guest (the info line; a
    waiter and its waker need host cores at the same time), and in the exit transport
    once."""
    exe = build("futex_spin", "static", ("-pthread",))
    expected = native(exe, mode)
    assert expected.returncode == 0 and expected.stdout.startswith(mode.encode()) \
        and b"returned 0: 0" not in expected.stdout, expected.stdout
    got = karn_info("--syscall-transport", "exit", "--cpus", "5", exe, mode)
    assert got.stdout == expected.stdout and got.returncode == 0, got.stderr
    deadline = time.monotonic() + SERVED_DEADLINE
    while True:
        got = karn_info("--syscall-transport", "fast", "--cpus", "5", exe, mode)
        assert got.stdout == expected.stdout and got.returncode == 0, got.stderr
        m = IN_GUEST.search(got.stderr)
        assert m, got.stderr
        if int(m[1]) >= 1 or time.monotonic() > deadline:
            break
    assert int(m[1]) >= 1, got.stderr


ROBUST_IN_GUEST = re.compile(rb"(\d+) set_robust_list")
IDLE_THREADS = 8  # programs/thr_robust.c's


@pytest.mark.parametrize("variant", ["static", "dynamic"])
def test_robust_list_set_in_the_guest(variant, build, native, same):
    """set_robust_list is answered in the stub once its site is patched (a thread start
    patches it once the process is warm, IDLE_THREADS starts of threads that do nothing,
    and the last thread's is answered in the guest: the info line counts it); the
    monitor still walks the head it was given when that thread ends holding a robust
    mutex (EOWNERDEAD, as native); with calls observed (--trace-summary) none is answered
    in the guest and every one is counted."""
    exe = build("thr_robust", variant)
    expected = native(exe)
    assert b"trylock after owner died: EOWNERDEAD" in expected.stdout, expected.stdout
    got = karn_info("--syscall-transport", "fast", exe)
    same(expected, got, "robust mutex")
    m = ROBUST_IN_GUEST.search(got.stderr)
    assert m and int(m[1]) >= 1, got.stderr
    traced = karn_info("--syscall-transport", "fast", "--trace-summary", exe)
    same(expected, traced, "robust mutex, traced")
    m = ROBUST_IN_GUEST.search(traced.stderr)
    assert m and int(m[1]) == 0, traced.stderr
    row = [line.split() for line in traced.stderr.splitlines()  # the summary's row:
           if line.endswith(b" set_robust_list") and not line.startswith(b"karn")]
    assert row and int(row[0][3]) == 2 + IDLE_THREADS + 1, traced.stderr  # (% time,
    # seconds, usecs/call, calls) the main thread's, the first one's, the idle ones', the
    # last one's


MASK_RACE_ROUNDS = "200"
# The rt_sigprocmask calls sigmask_race.c makes whatever its threads' timing: 11 in its
# results, 2 a round of its 100 delivery rounds.
MASK_CALLS_AT_LEAST = 211


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_signal_masks_answered_in_the_guest(transport, build, native, same):
    """rt_sigprocmask answered in the stub (the thread's mask kept in its vCPU's slot):
    Linux's results for bad arguments, a pending signal delivered before the call that
    unblocks it returns, and none lost while another thread changes its mask as signals
    arrive (tgkill to it, kill to the process): as native in both transports. In fast mode
    the info line counts calls answered in the guest; with --trace-summary none is, and
    the summary counts every call."""
    exe = build("sigmask_race", "static")
    expected = native(exe, MASK_RACE_ROUNDS)
    assert b"lost 0, SIGUSR2 lost 0" in expected.stdout, expected.stdout
    got = karn_info("--syscall-transport", transport, "--cpus", "2", exe, MASK_RACE_ROUNDS,
                    timeout=180)
    same(expected, got, f"signal masks ({transport})")
    if transport != "fast":
        return
    m = MASKS_IN_GUEST.search(got.stderr)
    assert m and int(m[1]) > 0, got.stderr
    traced = karn_info("--syscall-transport", "fast", "--cpus", "2", "--trace-summary", exe,
                       MASK_RACE_ROUNDS, timeout=180)
    same(expected, traced, "signal masks, traced")
    m = MASKS_IN_GUEST.search(traced.stderr)
    assert m and int(m[1]) == 0, traced.stderr
    row = [line.split() for line in traced.stderr.splitlines()
           if line.endswith(b" rt_sigprocmask") and not line.startswith(b"karn")]
    assert row and int(row[0][3]) >= MASK_CALLS_AT_LEAST, traced.stderr


def served_lines(result: subprocess.CompletedProcess[bytes]) -> list[tuple[int, int]]:
    """(sites patched, calls served) of every monitor's info line: forked processes' first,
    the first process's last (its monitor ends after its children's)."""
    return [(int(m[1]), int(m[2])) for m in SERVED.finditer(result.stderr)]


@pytest.mark.parametrize("mode", ["child", "exec"])
def test_forked_child_is_served_in_shared_memory(mode, build, native):
    """A forked child calls getpid 20000 times through the site its parent patched
    (child), or execs and calls through sites of its new image (exec); its own monitor's
    info line says its calls were served in shared memory (repeated until one is: the
    server needs a host core, as in the getpid case)."""
    exe = build("fork_fast", "static", ("-pthread",))
    expected = native(exe, mode)
    assert expected.returncode == 0 and b"exited 0" in expected.stdout, expected.stderr
    deadline = time.monotonic() + SERVED_DEADLINE
    while True:
        got = karn_info("--syscall-transport", "fast", exe, mode)
        assert got.stdout == expected.stdout and got.returncode == 0, got.stderr
        lines = served_lines(got)
        assert len(lines) == 2, got.stderr  # the child's monitor, then the parent's
        (child_sites, child_calls), _parent = lines
        assert child_sites >= 1, got.stderr
        if child_calls >= 1 or time.monotonic() > deadline:
            break
    assert child_calls >= 1, got.stderr


def test_forked_child_of_exit_transport_patches_nothing(build, native):
    exe = build("fork_fast", "static", ("-pthread",))
    expected = native(exe, "child", "1000")
    got = karn_info("--syscall-transport", "exit", exe, "child", "1000")
    assert got.stdout == expected.stdout and got.returncode == 0, got.stderr
    assert not SERVED.search(got.stderr), got.stderr


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fork_storm_while_threads_patch(transport, build, karn, native, same):
    """24 forks, 4 at a time, while two parent threads call 64 unpatched sites (each patched
    while the others run it, some at the moment of a fork); every child calls through the
    inherited sites on two threads of its own. All results right, no crash."""
    exe = build("fork_fast", "static", ("-pthread",))
    expected = native(exe, "storm", "24", "4")
    same(expected, run(karn, transport, "--cpus", "2", exe, "storm", "24", "4", timeout=180),
         f"fork storm ({transport})")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of process pid so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_idle_guest_costs_no_host_core(transport, build):
    """A guest whose threads all sleep or block (after a burst of fast calls that wakes
    the server) costs its monitor almost no CPU time: nothing spins for it. Measured from
    /proc of the monitor between the guest's "sleeping" and "awake" lines (3 s of guest
    sleep); a spinning server would take all of it."""
    exe = build("fastcall", "static", ("-pthread",))
    proc = subprocess.Popen([sys.executable, "-m", "karn", "run", "--syscall-transport",
                             transport, "--cpus", "2", str(exe), "idle", "3"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"getpid: wrong results 0\n"
        assert proc.stdout.readline() == b"sleeping\n"
        before = cpu_seconds(proc.pid)
        assert proc.stdout.readline() == b"awake\n"
        used = cpu_seconds(proc.pid) - before
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    assert used < 0.3, f"{used:.2f} s of monitor CPU time while the guest slept 3 s"


def test_exit_transport_patches_nothing(build):
    exe = build("fastcall", "static", ("-pthread",))
    got = karn_info("--syscall-transport", "exit", exe, "getpid", "100")
    assert got.returncode == 0 and not SERVED.search(got.stderr), got.stderr
    assert b"wrong results 0" in got.stdout


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ["pingpong", "futex", "timer", "restart", "eintr", "gs",
                                  "gs_thread", "remap"])
def test_cases_match_native(mode, transport, build, karn, native, same):
    """futex hand-over between threads; futex operations through one patched site (wakes,
    waits on a changed word, bad addresses, a wait that times out, one that is woken: the
    stub reads a wait's word itself); signal handlers while calls go through the stubs;
    a signal during a blocking read with and without SA_RESTART; a guest that sets its
    own GS base (the stubs use GS: sites are put back, its %gs: loads see its memory),
    and a thread it starts then, before the process is warm (its creator's GS base);
    code patched, unmapped and mapped again with another call at the same address."""
    exe = build("fastcall", "static", ("-pthread",))
    expected = native(exe, mode)
    assert expected.returncode == 0 and expected.stdout, expected.stderr
    same(expected, run(karn, transport, "--cpus", "2", exe, mode), f"{mode} ({transport})")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_threads_racing_on_unpatched_sites(transport, build, karn, native, same):
    """4 threads released together call the same 64 unpatched sites: each site is rewritten
    while others execute it; every call must return the right pid."""
    exe = build("fastcall", "static", ("-pthread",))
    expected = native(exe, "race")
    same(expected, run(karn, transport, "--cpus", "4", exe, "race"), f"race ({transport})")


def test_trace_is_the_same_with_both_transports(build, karn):
    exe = build("fastcall", "static", ("-pthread",))
    calls = {}
    for transport in TRANSPORTS:
        got = run(karn, transport, "--trace", "--no-aslr", exe, "getpid", "50")
        assert got.returncode == 0, got.stderr
        calls[transport] = [(m[3], m[4], m[5]) for m in trace_lines(got.stderr)]
    assert sum(1 for c in calls["fast"] if c[0] == "getpid") == 51
    assert calls["fast"] == calls["exit"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_crash_report_after_fast_calls(transport, build, karn):
    exe = build("crash_segv", "static")
    got = run(karn, transport, exe)
    assert got.returncode == 139, got.stderr
    assert b"SIGSEGV" in got.stderr and b"at rip" in got.stderr


def test_gdb_with_fast_transport(build):
    """gdb parks threads inside syscalls: under --gdb every call exits, as without fast."""
    exe = build("debug_gdb", "static")
    s = debug(exe, ["break main", "continue", "bt", "continue"],
              karn_opts=("--syscall-transport", "fast"))
    assert "Breakpoint 1, main" in s.gdb, s.gdb + s.err
    assert s.rc == 0, s.err


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_go_program(transport, karn, native, same):
    from helpers import go_build
    from test_go import GO_PROGRAMS

    exe = go_build(GO_PROGRAMS / "goroutines.go", "go-goroutines", {"GOFLAGS": "-mod=mod"})
    expected = native(exe)
    same(expected, run(karn, transport, "--cpus", "2", exe), f"go goroutines ({transport})")


PYTHON_SCRIPT = (
    "import os, threading\n"
    "t = threading.Thread(target=print, args=(os.getpid() > 0,))\n"
    "t.start(); t.join(); print(sum(range(10**5)))\n"
)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_python_guest(transport, karn, native, same):
    """Debian's python3 with its stdlib from the host root (as tests/test_python_guest.py)."""
    expected = native("/usr/bin/python3", "-c", PYTHON_SCRIPT)
    got = run(karn, transport, "--root", "/", "/usr/bin/python3", "-c", PYTHON_SCRIPT,
              timeout=120)
    same(expected, got, f"python3 ({transport})")


@pytest.fixture()
def karn_cli():
    """karn_cli(*args) -> stdout, against a state directory of its own."""
    state = tempfile.mkdtemp(prefix="ks-", dir="/tmp")  # short: a socket path inside
    env = {**os.environ, "KARN_STATE_DIR": state}

    def cli(*args: str) -> str:
        got = subprocess.run([sys.executable, "-m", "karn", *args], capture_output=True,
                             text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
        assert got.returncode == 0, (args, got.stderr)
        return got.stdout

    yield cli
    for meta in Path(state, "instances").glob("*/meta.json"):  # never leave a guest behind
        subprocess.run(["kill", "-9", str(json.loads(meta.read_text())["pid"])],
                       capture_output=True)
    shutil.rmtree(state, ignore_errors=True)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_inspect_counts_calls_per_transport(transport, build, karn_cli):
    """`karn inspect` says how the calls travelled; every call is counted once, whichever
    transport served it (the kernel's own count is the reference)."""
    exe = build("fastcall", "static", ("-pthread",))
    iid = karn_cli("run", "-d", "--syscall-transport", transport, str(exe), "getpid", "3000",
                   "pause").strip()
    wait_for(lambda: "wrong results 0" in karn_cli("logs", iid), "the getpid loop")
    info = wait_for(lambda: (i := json.loads(karn_cli("inspect", iid))[0])["threads"][0]
                    ["state"] == "in syscall pause" and i, "the guest to pause")
    karn_cli("kill", "-s", "KILL", iid)
    counts = info["transport"]
    total = info["stats"]["syscalls"]
    assert counts.pop("mode") == transport, counts
    if transport == "exit":
        assert counts == {"exit": total}, counts
        return
    assert counts.pop("sites_patched") >= 1, counts
    assert set(counts) == {"fast", "redone", "withdrawn", "skipped", "exit", "in_guest"}, \
        counts
    assert sum(counts.values()) == total, (counts, total)
    # the loop's calls came from a patched site, through its stub, but for those made
    # before the process was warm (WARM_EXITS exits) and the site's second
    assert counts["fast"] + counts["withdrawn"] + counts["skipped"] >= 3000 - WARM_EXITS, \
        counts


def test_window_with_an_instruction_between():
    """glibc's __lll_lock_wait: `mov $202,%eax; xor $0x80,%sil; syscall` is a window whose
    stub replays the xor; a vCPU stopped in the stub resumes at the instruction in place
    that the stub's next one replays; without the mov's immediate == nr, or after a REX
    byte, it is no window."""
    from karn.platform.fastcall.patcher import Site, find_window

    code = bytes.fromhex("90b8ca00000040 80f680 0f05".replace(" ", ""))
    assert find_window(code, 202) == (-9, 11, bytes.fromhex("4080f680"))
    assert find_window(code, 203) is None
    assert find_window(bytes.fromhex("41b8ca0000004080f6800f05"), 202) is None
    site = Site(0x1000, 11, 202, b"", 0x2000, bytes.fromhex("4080f680"))
    assert [site.resume_at(o) for o in (0, 5, 9, 12, 16)] == [0x1000, 0x1005] + [0x1009] * 3
    assert find_window(bytes.fromhex("9090909090b8270000000f05"), 39) == (-5, 7, b"")


def test_window_with_a_lea_between():
    """A 64-bit lea between the mov and the syscall: replayed as it is, or, RIP-relative, as
    a movabs of the address it computes; a lea into rax, with a SIB byte or 32-bit is no
    window; a vCPU stopped after the (longer) movabs resumes at the syscall in place."""
    from karn.platform.fastcall.patcher import Site, find_window, replayed

    rip = bytes.fromhex("4c89f2b80e000000488d35dd781100 0f05".replace(" ", ""))
    assert find_window(rip, 14) == (-12, 14, bytes.fromhex("488d35dd781100"))
    assert replayed(bytes.fromhex("488d35dd781100"), 0x1000) == \
        bytes.fromhex("48be") + (0x1007 + 0x1178DD).to_bytes(8, "little")
    assert replayed(bytes.fromhex("4c8d05f0ffffff"), 0x1000) == \
        bytes.fromhex("49b8") + (0x1007 - 16).to_bytes(8, "little")
    base = bytes.fromhex("90b80e000000488db3f00800000f05")
    assert find_window(base, 14) == (-12, 14, bytes.fromhex("488db3f0080000"))
    assert replayed(bytes.fromhex("488db3f0080000"), 0x1000) == bytes.fromhex("488db3f0080000")
    assert find_window(bytes.fromhex("90b80e0000004c8d40080f05"), 14) == \
        (-9, 11, bytes.fromhex("4c8d4008"))
    for no in ("488d4508", "488d4424", "8d7508"):  # into rax; SIB; 32-bit
        assert find_window(bytes.fromhex("90b80e000000" + no + "0f05"), 14) is None, no
    site = Site(0x1000, 14, 14, b"", 0x2000, bytes.fromhex("488d35dd781100"))
    assert [site.resume_at(o) for o in (0, 5, 15, 22)] == [0x1000, 0x1005, 0x100C, 0x100C]
    go = Site(0x1000, 9, 39, b"", 0x2000)  # `48 c7 c0 imm32; 0f 05`: a 7-byte mov
    assert [go.resume_at(o) for o in (0, 5, 12)] == [0x1000, 0x1007, 0x1007]


@pytest.mark.parametrize("form", ["long", "short", "windowless", "moves", "register", "wait",
                                  "clone"])
def test_a_kick_in_a_site_stub_resumes_at_the_syscall(form, build):
    """Go writes every syscall window as `mov $nr,%rax; syscall` (a 7-byte mov, where
    glibc's is 5): a kick (here a 2 kHz SIGALRM) that stops a vCPU just after the per-site
    stub's replayed mov must send it back to the window's `syscall`, not 5 bytes in, into
    the old mov's `00 00` (`add %al,(%rax)`: SIGSEGV at the call's number). Seen as Go
    runtime deaths at 0xe4 (clock_gettime) and 0x1c (madvise) in full-suite runs; the probe
    failed in 8 of 8 runs before the fix. A windowless site's stub (its `syscall` became a
    jmp) sends a kicked vCPU back to that jmp, rax still the number. A window with register
    moves after its number, and a register window (the number moved to rax last), resume
    at the next move in place: lseek answers with the offset it was given. musl's __wait
    head and __clone tail (a jmp over several instructions) go back to the head, `sub
    $8,%rsi` undone, instead of into the jmp's bytes (SIGILL in 2 of 2 runs before; the
    clone form's store and call skipped). Each form's calls came through its stub."""
    got = karn_info("--syscall-transport", "fast", build("site_kick"), form, "3", timeout=60)
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout == f"{form} form: calls many, alarms some\nok\n".encode()
    m = STUB_CALLS.search(got.stderr)
    assert m and sum(int(n) for n in m.groups()) >= 1000, got.stderr


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_frame_inside_a_head_patched_meanwhile_resumes_at_the_head(transport, build, native,
                                                                     same):
    """A thread's signal frame says an instruction inside the 5 bytes a head's jmp rel32
    then takes (musl's __clone tail, patched by another thread's calls while the handler
    waits): returning there, the thread goes back to the head, `sub $8,%rsi` undone, and
    makes the store and the call (it faulted again in the jmp's bytes in 2 of 2 runs
    before)."""
    exe = build("head_frame", "static", ("-pthread",))
    expected = native(exe)
    assert expected.stdout == b"call made: yes, stored: yes, faults: 1\nok\n"
    same(expected, karn_info("--syscall-transport", transport, exe), f"head frame ({transport})")


STUB_CALLS = re.compile(rb"(\d+) calls served in shared memory, (\d+) redone on the exit "
                        rb"path, (\d+) withdrawn, (\d+) skipped")
MASKS_IN_GUEST = re.compile(rb"(\d+) rt_sigprocmask")
SYSCALL_INSTRUCTIONS = re.compile(rb"\((\d+) by a `syscall` instruction\)")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_windows_with_a_lea_between(transport, build, native, same):
    """`mov $nr,%eax; lea ...,%reg; syscall` windows (glibc's pthread_create and
    start_thread): RIP-relative (the stub loads the address with a movabs), base + disp32,
    base + disp8 into r8; each call's result and the lea's register checked by the program,
    and in fast mode all but the first rounds came through its stub (7 a round: the
    4 lea windows, glibc's 3 sigprocmask, answered in the stub; without the lea windows
    3)."""
    exe = build("fastcall_lea", "static")
    expected = native(exe, "1000")
    assert expected.returncode == 0, expected.stdout
    got = karn_info("--syscall-transport", transport, exe, "1000")
    same(expected, got, f"lea windows ({transport})")
    if transport == "fast":
        m = STUB_CALLS.search(got.stderr)
        masks = MASKS_IN_GUEST.search(got.stderr)
        assert m and masks, got.stderr
        assert sum(int(n) for n in m.groups()) + int(masks[1]) >= 6 * 999, got.stderr


def test_bad_transport_is_one_line(karn):
    got = subprocess.run([sys.executable, "-m", "karn", "run", "--syscall-transport", "warp",
                          "/bin/true"], capture_output=True)
    assert got.returncode != 0 and b"Traceback" not in got.stderr


def test_entry_bytes_are_entry_s(tmp_path):
    """stubs.ENTRY is entry.S assembled (binutils' `as`, as CI installs it)."""
    from karn.platform.fastcall import stubs

    source = Path(stubs.__file__).with_name("entry.S")
    obj, raw = tmp_path / "entry.o", tmp_path / "entry.bin"
    subprocess.run(["as", "--64", "-o", obj, source], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", obj, raw], check=True)
    assert raw.read_bytes() == stubs.ENTRY
    labels = dict(line.split()[::2][::-1] for line in subprocess.run(
        ["nm", obj], capture_output=True, text=True, check=True).stdout.splitlines()
        if " t " in line)
    used = {"saved": stubs.SAVED, "published": stubs.PUBLISHED, "slow": stubs.SLOW,
            "mask_made": stubs.MASK_MADE, "mask_mcounted": stubs.MASK_MCOUNTED,
            "mask_counted": stubs.MASK_COUNTED, "mask_end": stubs.MASK_END,
            "wake_scan": stubs.WAKE_SCAN, "wake_end": stubs.WAKE_END,
            "wake_tail": stubs.WAKE_TAIL, "woken_counted": stubs.WOKEN_COUNTED,
            "done_work": stubs.DONE_WORK, "end": len(stubs.ENTRY)}
    assert {k: int(labels[k], 16) for k in used} == used
    assert stubs.SLOW_END == stubs.DONE_WORK


READS = 3000


@pytest.mark.parametrize("variant", ["static", "dynamic", "musl-static", "musl-dynamic"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_read_sites_are_patched(transport, variant, build, native, same):
    """glibc's read() is `xor %eax,%eax; syscall` (a short site, no room for a jmp rel32);
    static musl's read() and write() go through __syscall_cp_c's one windowless site (`mov
    %rdi,%rax; ...; syscall`: the number from the caller), dynamic musl's through
    __syscall_cp_asm (no pad after it: its instruction before the syscall is replaced).
    All are patched, and their calls come through the stub like the rest (one-byte
    reads of /dev/zero and of a pipe, after a thread too: glibc's cancellable site), with
    an SA_RESTART interval timer firing meanwhile, then a read through the patched site
    blocked until a forked child writes, interrupted by the ticks and restarted (RIP at
    the syscall in place); and 4 threads meeting the unpatched site at once (a patch while
    the others run); output as native's in both transports.
    Before short sites: glibc's reads all left through the exit path (about 2 in 3 calls);
    before windowless sites, all of musl's reads and writes."""
    exe = build("fastcall_read", variant, ("-pthread",))
    for mode in ((), ("thread",), ("race",)):
        expected = native(exe, str(READS), *mode)
        race = f"race {4 * READS}\n" if mode == ("race",) else ""
        assert expected.stdout == f"{race}zero {READS}\npipe {READS}\nblocked read 1 z, " \
            "interrupted yes, child 0\n".encode(), expected.stdout
        got = karn_info("--syscall-transport", transport, exe, str(READS), *mode)
        same(expected, got, f"reads ({transport}, {variant}, {mode})")
        if transport == "fast":
            # the parent's line (the forked child has its own): 2 * READS reads and READS
            # writes, each site's first two calls exit, and the calls before the process
            # was warm (WARM_EXITS exits)
            stub = max(sum(map(int, m)) for m in STUB_CALLS.findall(got.stderr))
            assert stub >= 3 * READS - 10 - WARM_EXITS, got.stderr


def test_short_site_pads():
    """Dead padding for a short site's jmp rel8, from glibc 2.36's bytes: after `ret` up to
    a 16-byte boundary (read's first site, 10 bytes of `cs nopw`), after a 3-byte pad too
    short, past it where a branch decoded before targets its end (read_nocancel); never
    nops that code falls through into (a loop head's alignment), a pad a decoded branch
    targets, or one not ending at a boundary; an unknown instruction stops the search."""
    from karn.platform.fastcall.pads import find_pad

    read = bytes.fromhex("483d00f0ffff775bc3" "662e0f1f840000000000" "4883ec28")
    assert find_pad(read, 0x43064D, 125) == 0x430656
    nocancel = bytes.fromhex("483d00f0ffff7704c3" "0f1f00" "488b15c95c0d00f7d8648902"
                             "48c7c0ffffffffc3" "662e0f1f840000000000" "6690")
    assert find_pad(nocancel, 0xFD104, 125) == 0xFD124
    loop_head = bytes.fromhex("4885c0" "0f1f440000" "90" "ffc875fc")  # nops fall through
    assert find_pad(loop_head, 0x1007, 125) is None
    targeted = bytes.fromhex("7402" "c3" "0f1f440000" "90")  # je into the pad
    assert find_pad(targeted, 0x1006, 125) is None
    unaligned = bytes.fromhex("c3" "0f1f440000" "4889c7")
    assert find_pad(unaligned, 0x1000, 125) is None
    unknown = bytes.fromhex("0f0b" "c3" "0f1f440000" "90")  # ud2
    assert find_pad(unknown, 0x1006, 125) is None
    assert find_pad(read, 0x43064D, 8) is None  # out of reach


def test_windowless_site_pads():
    """After a windowless site's `syscall`: decoding goes on past a `ret` where a branch
    decoded before lands right after it (a known boundary), to the padding after the next
    `ret`. Go 1.19's Syscall6 (int3 up to the next function) and glibc 2.36's syscall()
    (`cs nopw` and `nopl` up to a 16-byte boundary); nothing past a `ret` that no branch
    targets unless it is padding."""
    from karn.platform.fastcall.pads import find_pad

    go = bytes.fromhex("483d01f0ffff" "7615" "48f7d8" "4889c1" "48c7c0ffffffff"
                       "48c7c300000000" "c3" "4889d3" "48c7c100000000" "c3" + "cc" * 10)
    assert find_pad(go, 0x40268E, 127) == 0x4026B6
    glibc = bytes.fromhex("483d01f0ffff" "7301" "c3" "488b0da7150d00" "f7d8" "648901"
                          "4883c8ff" "c3" "662e0f1f840000000000" "0f1f00")
    assert find_pad(glibc, 0x101829, 127) == 0x101843
    untargeted = bytes.fromhex("c3" "4889d3" "c3" + "cc" * 10)  # no branch to after the ret
    assert find_pad(untargeted, 0x1006, 127) is None


def patcher_over(at: int, code: bytes):
    """A patcher over 1 MiB of host memory holding `code` at `at` (user range from 64 KiB;
    every range rewritable, arenas at 0x80000): (the memory, the patcher)."""
    import ctypes

    from karn.platform.fastcall.patcher import Patcher

    class Code:
        def is_private_code(self, start: int, end: int) -> bool:
            return True

        def reserve_near(self, lo: int, hi: int, length: int) -> int | None:
            return 0x80000

    memory = bytearray(0x100000)
    raw = memoryview(memory)
    raw[at : at + len(code)] = code
    host = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    patcher = Patcher(raw, host, Code(), 0x10000, 0x100000, lambda: [])
    patcher.warm_exits = 0  # a process long past its start-up
    return raw, patcher


def exit_twice(patcher, site: int, nr: int) -> None:
    """A site's second exit patches it (Patcher.site_exit)."""
    for _ in range(2):
        patcher.site_exit(None, site, nr)  # type: ignore[arg-type]


def test_a_site_is_patched_at_its_second_exit_once_the_process_is_warm():
    """A site that exits once (start-up code) keeps its bytes: no stub, no arena; so does
    every site while the process has made WARM_EXITS exits or fewer (a short program);
    after that a site's second exit patches it."""
    s = 0x10500
    code = bytes.fromhex("b827000000" "0f05" "c3") + b"\xcc" * 32  # mov $39,%eax; syscall
    raw, patcher = patcher_over(s - 5, code)
    patcher.warm_exits = WARM_EXITS
    for _ in range(WARM_EXITS):
        assert not patcher.will_patch(s)
        patcher.site_exit(None, s, 39)  # type: ignore[arg-type]
    assert bytes(raw[s - 5 : s - 5 + len(code)]) == code
    assert patcher.known == {} and not patcher.arenas and patcher.count.seen == {s}
    assert patcher.will_patch(s) and not patcher.will_patch(s + 0x40)
    patcher.site_exit(None, s, 39)  # type: ignore[arg-type]
    assert patcher.known == {s: True} and raw[s - 5] == 0xE9 and not patcher.count.seen
    raw2, fresh = patcher_over(s - 5, code)  # warm: a site's first exit does not patch it
    fresh.site_exit(None, s, 39)  # type: ignore[arg-type]
    assert fresh.known == {} and bytes(raw2[s - 5 : s - 5 + len(code)]) == code


def test_a_program_a_shell_execs_starts_cold(build):
    """The exits a process made before execve do not count towards the new program's
    WARM_EXITS: a short program run by a shell (which made more than WARM_EXITS calls by
    then) patches no site, as when karn runs it itself."""
    exe = build("fastcall", "static", ("-pthread",))
    short = "getpid 6"  # one site, six calls: a second exit, but a short program
    alone = karn_info("--syscall-transport", "fast", exe, *short.split())
    # too short for the transport to be made at all (platform/warmup.py)
    assert alone.returncode == 0 and NOT_MADE.search(alone.stderr), alone.stderr
    # the shell's own calls first: WARM_EXITS reads of a file, a byte each
    script = f"i=0; while [ $i -lt {WARM_EXITS} ]; do read -n 1 x < /x/{exe.name}; " \
             f"i=$((i+1)); done; /x/{exe.name} {short}; /x/{exe.name} {short}"
    got = karn_info("--syscall-transport", "fast", "-v", f"{exe.parent}:/x:ro",
                    "/bin/busybox", "sh", "-c", script)
    assert got.returncode == 0, got.stderr
    # a forked child's program, then the shell's own (busybox execs the last command)
    assert [int(m[0]) for m in SERVED.findall(got.stderr)] == [0, 0], got.stderr


def test_a_program_a_cold_process_execs_starts_cold_too(build):
    """A process that execs before it is warm: the new program's exits count from none
    (as when karn runs it itself), so a short program run by `exec` in a short shell
    makes no transport, though the two together made more than WARM_EXITS exits."""
    exe = build("fastcall", "static", ("-pthread",))
    got = karn_info("--syscall-transport", "fast", "-v", f"{exe.parent}:/x:ro",
                    "/bin/busybox", "sh", "-c", f"exec /x/{exe.name} getpid 6")
    assert got.returncode == 0 and b"wrong results 0" in got.stdout, got.stderr
    made = NOT_MADE.search(got.stderr)
    assert made and int(made[1]) > WARM_EXITS, got.stderr


def test_windowless_site_patch_and_undo():
    """On a copy of Go's Syscall6 bytes (the number in rax from the caller): the `syscall`
    becomes `jmp rel8` to the int3 padding, which jumps to a stub that only loads rcx and
    enters (rax stays the number); a vCPU stopped anywhere in that stub resumes at the
    site; undone, the `syscall` is back and the pad jumps to it."""
    import struct

    s = 0x1068C  # the syscall, as at 0x40268c in a Go program
    raw, patcher = patcher_over(s, bytes.fromhex(
        "0f05" "483d01f0ffff" "7615" "48f7d8" "4889c1" "48c7c0ffffffff" "48c7c300000000"
        "c3" "4889d3" "48c7c100000000" "c3" + "cc" * 10))
    exit_twice(patcher, s, 1)
    site = patcher.patched[s]
    assert site.pad == 0x106B6 and site.syscall == s and patcher.known == {s: True}
    assert bytes(raw[s : s + 2]) == bytes((0xEB, 0x106B6 - (s + 2)))
    assert site.pad + 5 + struct.unpack_from("<i", raw, site.pad + 1)[0] == site.stub
    stub = bytes(raw[site.stub : site.stub + 12])
    assert stub[:3] == bytes.fromhex("488d0d")  # lea ret(%rip),%rcx: no mov, no replay
    assert site.stub + 7 + struct.unpack_from("<i", stub, 3)[0] == s + 2
    assert site.stub + 12 + struct.unpack_from("<i", stub, 8)[0] == 0x80000
    assert [site.resume_at(o) for o in (0, 7)] == [s, s]
    patcher.unpatch_all(None)  # type: ignore[arg-type]
    assert bytes(raw[s : s + 2]) == b"\x0f\x05"
    assert site.pad + 5 + struct.unpack_from("<i", raw, site.pad + 1)[0] == s


def test_window_across_a_cache_line_is_patched_at_its_syscall():
    """A window whose first two bytes straddle a cache line cannot take the jmp rel32 (its
    first 16-bit store would not be atomic): its `syscall` becomes the jmp rel8 to the
    padding instead, as a windowless site's (the window's mov has set rax by then). As
    glibc 2.36's ioctl: `mov %rsp,%rdx; mov $16,%eax; syscall`, the mov at offset 63."""
    s = 0x1013F  # the window's mov at offset 63 of a cache line
    raw, patcher = patcher_over(s - 3, bytes.fromhex(
        "4889e2" "b810000000" "0f05" "483d01f0ffff" "7301" "c3" "48f7d8" "c3"
        "662e0f1f840000000000" "0f1f00"))
    p = s + 5
    exit_twice(patcher, p, 16)
    site = patcher.patched[p]
    assert (site.start, site.length, site.nr, site.pad) == (p, 2, -1, 0x10153), site
    assert raw[s] == 0xB8 and raw[p] == 0xEB  # the mov stays; the syscall jumps


@pytest.mark.parametrize("mov", ["b810000000", "48c7c010000000"])  # glibc's; Go's form
def test_a_window_across_a_cache_line_with_no_pad_is_patched_while_alone(mov):
    """glibc 2.36's tcgetattr (every isatty: every Python open): `mov %rsp,%rdx; mov
    $16,%eax; syscall`, the mov at offset 63 of a cache line, no lea, no pad in reach
    (here a ud2 after it); also Go's 7-byte `mov $16,%rax`. While another vCPU may run
    it, it is left alone (the jmp's first two bytes would straddle the line); while none
    does, it takes the jmp rel32 as any window. Undone while others run (the guest took
    GS), its bytes stay and the stub's first instruction jumps instead to a new piece that
    makes the whole mov and goes on at the syscall in place."""
    import struct

    class Running:
        in_guest, exits = False, 0

        def kick(self) -> None:
            pass

    s = 0x1013F  # the window's mov
    mov_bytes = bytes.fromhex(mov)
    p = s + len(mov_bytes)
    code = bytes.fromhex("4889e2") + mov_bytes + bytes.fromhex("0f05" "0f0b") + b"\xcc" * 40
    raw, patcher = patcher_over(s - 3, code)
    patcher._cpus = lambda: [Running()]
    exit_twice(patcher, p, 16)
    assert patcher.known == {p: False} and bytes(raw[s : p]) == mov_bytes
    raw, patcher = patcher_over(s - 3, code)
    exit_twice(patcher, p, 16)
    site = patcher.patched[s]
    assert (site.length, site.nr, site.pad) == (len(mov_bytes) + 2, 16, 0) and raw[s] == 0xE9
    assert s + 5 + struct.unpack_from("<i", raw, s + 1)[0] == site.stub
    patcher._cpus = lambda: [Running(), Running()]  # the caller's and another
    patcher.unpatch_all(None)  # type: ignore[arg-type]
    assert raw[s] == 0xE9 and raw[site.stub] == 0xE9  # S kept; the stub jumps on
    back = site.stub + 5 + struct.unpack_from("<i", raw, site.stub + 1)[0]
    assert s + 5 + struct.unpack_from("<i", raw, s + 1)[0] == back  # and so does S
    assert_makes_the_call(raw, back, mov_bytes, p)


def assert_makes_the_call(raw, piece: int, mov: bytes, p: int) -> None:
    """The code at `piece` makes the window's mov and jumps to its syscall at p."""
    import struct

    n = len(mov)
    assert bytes(raw[piece : piece + n]) == mov and raw[piece + n] == 0xE9
    assert piece + n + 5 + struct.unpack_from("<i", raw, piece + n + 1)[0] == p


def test_a_window_across_a_cache_line_is_undone_untorn_with_its_arena_full():
    """The piece that undoes a window across a cache line while other vCPUs run (the
    guest took GS) is written where its patch kept room: with the arena filled by other
    sites since, the undo still leaves S's first bytes alone (two stores there could be
    seen half-done by another vCPU) and the call is made."""
    import struct

    from karn.platform.fastcall.patcher import ARENA_SIZE

    class Running:
        in_guest, exits = False, 0

    s = 0x1013F  # the window's mov, at offset 63 of a cache line, no pad (a ud2 after)
    code = bytes.fromhex("4889e2" "b810000000" "0f05" "0f0b") + b"\xcc" * 40
    others = bytes.fromhex("b827000000" "0f05" "c3")  # getpid sites, one per 16 bytes
    raw, patcher = patcher_over(s - 3, code)
    exit_twice(patcher, s + 5, 16)
    site = patcher.patched[s]
    at = 0x20000
    while not patcher.arenas[0].full():
        raw[at : at + len(others)] = others
        exit_twice(patcher, at + 5, 39)
        at += 16
    assert len(patcher.arenas) == 1 and at - 0x20000 > ARENA_SIZE // 64  # it filled up
    patcher._cpus = lambda: [Running(), Running()]  # the caller's and another
    patcher.unpatch_all(None)  # type: ignore[arg-type]
    assert raw[s] == 0xE9 and raw[s + 5 : s + 7] == b"\x0f\x05"
    piece = s + 5 + struct.unpack_from("<i", raw, s + 1)[0]
    assert_makes_the_call(raw, piece, bytes.fromhex("b810000000"), s + 5)
    assert site.stub + 5 + struct.unpack_from("<i", raw, site.stub + 1)[0] == piece


def test_a_window_across_a_cache_line_undone_still_works_when_its_arena_goes():
    """After the undo above, the guest may unmap karn's arena (a munmap or MAP_FIXED
    over it): the window's jmp then goes to a piece in another arena, not into the
    unmapped one. So does a window across a cache line still patched whose arena goes
    while other vCPUs run (its first bytes cannot be put back untorn)."""
    import struct

    from karn.platform.fastcall.patcher import ARENA_SIZE

    class Running:
        in_guest, exits = False, 0

    s = 0x1013F
    code = bytes.fromhex("4889e2" "b810000000" "0f05" "0f0b") + b"\xcc" * 40
    mov = bytes.fromhex("b810000000")
    for undone_first in (True, False):
        raw, patcher = patcher_over(s - 3, code)
        places = iter((0x80000, 0xA0000, 0xC0000))  # the arenas, one after another
        patcher._code.reserve_near = lambda lo, hi, length, places=places: next(places)
        exit_twice(patcher, s + 5, 16)
        patcher._cpus = lambda: [Running(), Running()]  # the caller's and another
        if undone_first:
            patcher.unpatch_all(None)  # type: ignore[arg-type]
        patcher.forget(0x80000, 0x80000 + ARENA_SIZE)
        piece = s + 5 + struct.unpack_from("<i", raw, s + 1)[0]
        assert raw[s] == 0xE9 and 0xA0000 <= piece < 0xA0000 + ARENA_SIZE, hex(piece)
        assert_makes_the_call(raw, piece, mov, s + 5)
        patcher.forget(0xA0000, 0xA0000 + ARENA_SIZE)  # and again
        piece = s + 5 + struct.unpack_from("<i", raw, s + 1)[0]
        assert 0xC0000 <= piece < 0xC0000 + ARENA_SIZE, hex(piece)
        assert_makes_the_call(raw, piece, mov, s + 5)


@pytest.mark.parametrize("vcpus", [1, 2])
def test_a_window_across_a_cache_line_whose_arena_is_mapped_over_is_undone_outside(vcpus):
    """Top-down placement puts an arena in the hole the guest freed last; when the guest
    maps that range again (MAP_FIXED), the arena goes and the window across a cache line
    patched through it is undone. With one vCPU (the caller's, in the monitor) its bytes
    simply go back. With others running, its jmp goes to a piece in a new arena, which
    must not be placed in the range being mapped over (it was: in a free hole of it, then
    mapped over by the guest's data, and S jumped into it)."""
    import struct

    from karn.kernel.mm import PROT_READ, PROT_WRITE

    class Running:
        in_guest, exits = False, 0

    mib = 1 << 20
    cpus: list[Running] = []
    # the window's mov at offset 63 of a line; no pad (a ud2 after)
    memory, mm, patcher, s = books_with_patcher(cpus, 0x13F)
    window = bytes.fromhex("b810000000" "0f05")
    hole = mm.map(mm.find_free(mib), mib, PROT_READ | PROT_WRITE)
    mm.unmap(hole, mib)
    exit_twice(patcher, s + 5, 16)  # patched alone; its arena lands in the hole
    assert hole <= patcher.arenas[0].start < hole + mib
    cpus.extend(Running() for _ in range(vcpus))
    mm.map(hole, mib, PROT_READ | PROT_WRITE)
    if vcpus == 1:
        assert bytes(memory.raw[s : s + 7]) == window
        return
    piece = s + 5 + struct.unpack_from("<i", memory.raw, s + 1)[0]
    assert not hole <= piece < hole + mib, hex(piece)
    assert mm.find_vma(piece).name == "[karn]"
    assert_makes_the_call(memory.raw, piece, window[:5], s + 5)


def books_with_patcher(cpus: list, at: int = 0x100):
    """A real AddressSpace over 256 MiB of host memory with a Patcher as its code watcher,
    and executable code mapped with a window (`mov $16,%eax; syscall`) at code + `at`
    (0x100: not across a cache line), low in the space: (memory, mm, patcher, the
    window's mov)."""
    from karn.kernel.mm import PROT_EXEC, PROT_READ, AddressSpace, Region
    from karn.platform.fastcall.patcher import Patcher
    from karn.platform.memory import HostGuestMemory

    mib = 1 << 20
    memory = HostGuestMemory(256 * mib, 0x10000, 256 * mib)
    mm = AddressSpace(memory, Region(0x10000, 256 * mib, 256 * mib, 256 * mib))
    patcher = Patcher(memory.raw, memory.host_address, mm, 0x10000, 256 * mib, lambda: cpus)
    patcher.warm_exits = 0
    mm.code_watcher = patcher
    code = mm.map(0x1000000, 0x10000, PROT_READ | PROT_EXEC)  # low: the tests map above
    s = code + at
    memory.raw[s - 3 : s + 9] = bytes.fromhex("4889e2" "b810000000" "0f05" "0f0b")
    return memory, mm, patcher, s


def test_a_vcpu_kicked_as_its_arena_goes_is_still_settled_by_it():
    """The guest maps over the hole karn's arena sits in while another vCPU runs: the
    site's bytes go back with a kick of that vCPU, whose settle looks up the arena it
    stopped in (Patcher.arena_of) to take it out of a stub. The arena must still be
    listed then (it was removed first, and a vCPU in its stub ran on into zeros)."""
    from karn.kernel.mm import PROT_READ, PROT_WRITE

    cpus: list = []
    memory, mm, patcher, s = books_with_patcher(cpus)
    mib = 1 << 20
    hole = mm.map(mm.find_free(mib), mib, PROT_READ | PROT_WRITE)
    mm.unmap(hole, mib)
    exit_twice(patcher, s + 5, 16)
    site = patcher.patched[s]
    assert hole <= patcher.arenas[0].start < hole + mib
    found = []

    class Running:  # another vCPU, in guest mode (in the stub) when kicked
        in_guest, exits = True, 0

        def kick(self) -> None:  # transport.settle's first step on its thread
            found.append(patcher.arena_of(site.stub) is not None)
            self.exits += 1

    cpus.extend([Running(), Running()])
    mm.map(hole, mib, PROT_READ | PROT_WRITE)
    assert found and all(found), found
    assert bytes(memory.raw[s : s + 5]) == bytes.fromhex("b810000000")
    assert patcher.arena_of(site.stub) is None and not patcher.arenas


def test_no_arena_is_placed_in_a_free_range_being_mapped_over():
    """MAP_FIXED onto a range with nothing mapped: another thread's patch, between the
    call's look at the range and its change of the books, must not get an arena there
    (top-down placement picks the top of the free space: this very range), which the
    mapping would then replace under the patcher."""
    import struct
    import sys
    import threading

    from karn.kernel.mm import PROT_READ, PROT_WRITE

    memory, mm, patcher, s = books_with_patcher([])
    mib = 1 << 20
    top = 256 * mib - mib  # free, at the top: where reserve_near looks first
    patched = threading.Event()

    def patch_meanwhile(frame, event, arg):  # as the map's look at the range returns
        if event == "return" and frame.f_code.co_name == "overlaps" \
                and not patched.is_set():
            patched.set()
            other = threading.Thread(target=exit_twice, args=(patcher, s + 5, 16))
            other.start()
            other.join()
        return patch_meanwhile if frame.f_code.co_name == "overlaps" else None

    sys.settrace(patch_meanwhile)
    try:
        mm.map(top, mib, PROT_READ | PROT_WRITE)
    finally:
        sys.settrace(None)
    assert patched.is_set() and s in patcher.patched
    stub = s + 5 + struct.unpack_from("<i", memory.raw, s + 1)[0]
    assert not top <= stub < top + mib, hex(stub)
    assert mm.find_vma(stub).name == "[karn]"


def test_a_heap_grows_while_another_thread_unmaps():
    """An unmap marks its range for karn's arenas to keep off (AddressSpace._going) while
    another thread's brk books its heap's growth: the booking looked through those
    ranges, and a mark added meanwhile changed the dict under that look (RuntimeError out
    of brk). Here the look is paused halfway, as a thread switch may."""
    import sys
    import threading

    from karn.kernel.mm import AddressSpace, Region
    from karn.platform.memory import HostGuestMemory

    mib = 1 << 20
    mm = AddressSpace(HostGuestMemory(256 * mib, 0x10000, 256 * mib),
                      Region(0x10000, 256 * mib, 256 * mib, 256 * mib))
    turn, added = threading.Event(), threading.Event()

    class Watcher:
        def forget(self, start: int, end: int) -> None:
            added.set()

    mm.code_watcher = Watcher()  # type: ignore[assignment]
    mm.set_brk_start(0x100000)
    mm._going[-1] = (0x9000000, 0x9001000)  # a third thread's unmap under way
    results: list = []

    def pause_in_marks(frame, event, arg):  # in a search through the one mark
        if event == "call" and frame.f_code.co_name == "<genexpr>" \
                and frame.f_back.f_code.co_name == "_meeting" \
                and len(frame.f_back.f_locals["ranges"]) == 1 and not turn.is_set():
            turn.set()
            added.wait(1)  # the other thread's turn
        return None

    def grow() -> None:
        sys.settrace(pause_in_marks)
        try:
            results.append(mm.set_brk(0x101000))
        except Exception as err:  # noqa: BLE001 - what the test looks for
            results.append(err)
        finally:
            sys.settrace(None)
            turn.set()

    def unmap() -> None:
        turn.wait(5)
        mm._forget_code(0x8000000, 0x8001000)  # an unmap's first step

    threads = [threading.Thread(target=grow), threading.Thread(target=unmap)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [0x101000], results


def test_musl_syscall_cp_is_patched_at_its_last_instruction():
    """Dynamic musl's __syscall_cp_asm (its bytes, from Debian's musl 1.2): no pad after
    it, so its `mov %r11,8(%rsp)` before the syscall becomes `jmp rel32` to a stub that
    replays it and enters with rax as set (no mov of a number); a vCPU stopped in the stub
    resumes at that mov before the stub replayed it, at the syscall after; undone, the
    mov is back."""
    import struct

    from karn.platform.fastcall.patcher import MUSL_CP

    body = bytes.fromhex("8b0785c075244989fb4889f04889d74889ce4c89c24d89ca4c8b442408"
                         "4c8b4c24104c895c24080f05" "c3" "e92213ffff" "4831ed4889e7")
    s = 0x107C0
    raw, patcher = patcher_over(s, body)
    p = s + body.index(MUSL_CP) + len(MUSL_CP) - 2
    exit_twice(patcher, p, 0)
    site = patcher.patched[p - 5]
    assert (site.start, site.length, site.nr, site.pad) == (p - 5, 7, -1, 0)
    assert raw[p - 5] == 0xE9 and bytes(raw[p : p + 2]) == b"\x0f\x05"
    assert p + 5 - 5 + struct.unpack_from("<i", raw, p - 4)[0] == site.stub
    stub = bytes(raw[site.stub : site.stub + 17])
    assert stub[:8] == bytes.fromhex("4c895c2408488d0d")  # the mov, then lea ret(%rip),%rcx
    assert site.stub + 12 + struct.unpack_from("<i", stub, 8)[0] == p + 2
    assert [site.resume_at(o) for o in (0, 5, 12)] == [p - 5, p, p]
    patcher.unpatch_all(None)  # type: ignore[arg-type]
    assert bytes(raw[p - 5 : p + 2]) == bytes.fromhex("4c895c24080f05")


@pytest.mark.parametrize("libc, body, head", [
    # glibc 2.36's start_thread: mov $60,%edx; xchg %ax,%ax; then the loop
    ("glibc", "ba3c000000" "6690" "31ff" "89d0" "0f05" "ebf8" "4889df", 4),
    # musl 1.2's pthread_exit: mov $60,%edx; xor %edi,%edi; nopl; then the loop
    ("musl", "ba3c000000" "31ff" "0f1f440000" "4889d0" "0f05" "ebf9" "4c89c0", 3)])
def test_a_thread_exit_loop_is_patched_at_its_head(libc, body, head):
    """A libc's `for (;;) exit(0)` at a thread's end (the number in rdx: no window; no pad
    in reach) takes the jmp rel32 at the loop's head, over the instructions before the
    syscall and the syscall's first bytes; its stub replays them and enters with rcx the
    return address (the loop's jmp back). A vCPU stopped in the stub, or sent back to make
    the call again (restart_at the syscall), goes to the head, never into the jmp; only
    exit's site is matched; undone, the bytes are back."""
    import struct

    code = bytes.fromhex(body)
    s = 0x10400 + 0x30
    raw, patcher = patcher_over(s, code)
    p = s + code.index(b"\x0f\x05")
    exit_twice(patcher, p, 39)  # another call at such a site: not this kind of patch
    assert p - head not in patcher.patched
    raw, patcher = patcher_over(s, code)
    exit_twice(patcher, p, 60)
    site = patcher.patched[p - head]
    assert (site.start, site.length, site.nr, site.pad) == (p - head, head + 2, -1, 0)
    assert site.covers_syscall and site.original == code[p - head - s : p - head - s + 5]
    assert raw[p - head] == 0xE9 and bytes(raw[p + 2 : p + 4]) == code[p + 2 - s : p + 4 - s]
    assert p - head + 5 + struct.unpack_from("<i", raw, p - head + 1)[0] == site.stub
    stub = bytes(raw[site.stub : site.stub + head + 12])
    assert stub[:head] == code[p - head - s : p - s]  # replayed, then lea ret(%rip),%rcx
    assert stub[head : head + 3] == bytes.fromhex("488d0d")
    assert site.stub + head + 7 + struct.unpack_from("<i", stub, head + 3)[0] == p + 2
    assert {site.resume_at(o) for o in (0, 2, head, head + 7)} == {p - head}
    assert patcher.restart_at(p) == p - head and patcher.restart_at(p + 0x40) == p + 0x40
    patcher.unpatch_all(None)  # type: ignore[arg-type]
    assert bytes(raw[s : s + len(code)]) == code and patcher.restart_at(p) == p


@pytest.mark.parametrize("variant", ["musl-static", "musl-dynamic"])
def test_musl_maps_come_through_the_stub(variant, build, native, same):
    """musl's mmap and munmap (register moves between the number and the `syscall`) are
    patched windows: 300 maps and unmaps leave fewer real `syscall`s than maps (each was
    two before); the pages read as native's."""
    maps = 300
    exe = build("fastcall_maps", variant)
    expected = native(exe, str(maps))
    got = karn_info(exe, str(maps))
    same(expected, got, f"maps ({variant})")
    assert int(SYSCALL_INSTRUCTIONS.search(got.stderr).group(1)) < maps, got.stderr


def test_isatty_comes_through_the_stub(build, native, same):
    """glibc's tcgetattr (isatty; every Python open() asks it) is a window whose mov
    straddles a cache line in Debian's libc.so.6, with no pad: patched while the process
    runs no other thread, 300 calls leave fewer real `syscall`s than calls (each was one
    before); the answers are native's."""
    calls = 300
    exe = build("fastcall_isatty", "dynamic")
    expected = native(exe, str(calls))
    got = karn_info(exe, str(calls))
    same(expected, got, "isatty")
    assert int(SYSCALL_INSTRUCTIONS.search(got.stderr).group(1)) < calls, got.stderr


def test_musl_thread_starts_and_ends_come_through_the_stub(build, native, same):
    """musl's thread life: mmap and munmap of its stack (register moves after the number),
    the futex wakes (the number in r8), __clone, __wait, the exit loop; 200 threads
    created and joined one at a time leave fewer real `syscall`s than threads; before,
    about 6 a thread; the output is native's."""
    threads = 200
    exe = build("thr_join", "musl-static", ("-pthread",))
    expected = native(exe, str(threads), "--serial-only")
    got = karn_info("--cpus", "2", exe, str(threads), "--serial-only")
    same(expected, got, "thread join (musl)")
    real = int(SYSCALL_INSTRUCTIONS.search(got.stderr).group(1))
    assert real < threads, got.stderr


def test_thread_ends_make_no_syscall_instruction(build, native, same):
    """Each thread's end (exit from glibc's exit loop, which never returns) comes through
    the stub once the loop's head is patched, instead of a real `syscall` per thread: 200
    threads created and joined one at a time leave fewer real `syscall`s than threads
    (the info line's count: the start-up's calls and each site's first exits). Before,
    every thread's exit was one; the output is native's. Dynamic: Debian's libc.so.6, whose
    thread start makes no other real call (a static build's may have a window whose mov
    straddles a cache line, patched at its lea: tested on its bytes below)."""
    threads = 200
    exe = build("thr_join", "dynamic", ("-pthread",))
    expected = native(exe, str(threads), "--serial-only")
    got = karn_info("--cpus", "2", exe, str(threads), "--serial-only")
    same(expected, got, "thread join")
    assert int(SYSCALL_INSTRUCTIONS.search(got.stderr).group(1)) < threads, got.stderr


OTHER_EXITS = re.compile(rb"(\d+) other exits \((\d+) by a `syscall` instruction\)")


def test_signal_returns_come_through_the_stub(build):
    """A signal handler returns through its restorer's `mov $15,%rax; syscall`, whose
    context the call replaces: its site is patched before the call is served, as a thread
    end's is, and later returns come through the stub instead of a real `syscall` each
    (~14 µs more here). 2 s of a 2 kHz timer: the exits of the signals' returns stay, but
    few are made by a real `syscall` (before, as many as the signals)."""
    got = karn_info("--syscall-transport", "fast", build("site_kick"), "long", "2", timeout=60)
    assert got.returncode == 0 and got.stdout.endswith(b"alarms some\nok\n"), got.stdout
    exits, real = map(int, OTHER_EXITS.search(got.stderr).groups())
    assert exits >= 500 and real < exits // 10, got.stderr


def test_a_window_with_register_moves_between():
    """musl's munmap sets its arguments up after the number: `mov $11,%eax; mov %rbx,%rdi;
    mov %rbp,%rsi; syscall`. The mov takes the jmp rel32; the stub replays the moves as
    they are; a vCPU stopped between two replayed moves resumes at the next one in place.
    A move to rax or rsp, or one touching memory, is no window (the syscall's own patch,
    which needs a pad, is tried instead)."""
    import struct

    from karn.platform.fastcall.patcher import find_window, register_moves

    body = bytes.fromhex("b80b000000" "4889df" "4889ee" "0f05")
    assert find_window(b"\xe8" + body, 11) == (-11, 13, bytes.fromhex("4889df4889ee"))
    assert find_window(b"\xe8" + body, 9) is None  # another number
    moves = ("4889df", "31ff", "4c89c2", "be80000000", "48c7c6ffffffff", "4863d2", "41ba08000000")
    code = bytes.fromhex("".join(moves))
    assert register_moves(code, 0, len(code))
    for other in ("4889d8",  # mov %rbx,%rax
                  "4889c4",  # mov %rax,%rsp
                  "48890e",  # mov %rcx,(%rsi)
                  "488b7c2408",  # mov 8(%rsp),%rdi
                  "31c0",  # xor %eax,%eax
                  "b801000000",  # mov $1,%eax
                  "4883e6f0"):  # and $-16,%rsi: not a move this knows
        one = bytes.fromhex(other)
        assert not register_moves(one, 0, len(one)), other
    assert not register_moves(code, 0, len(code) - 1)  # must end on an instruction
    s = 0x10500
    raw, patcher = patcher_over(s - 1, b"\xe8" + body + b"\xc3")
    p = s + 11
    exit_twice(patcher, p, 11)
    site = patcher.patched[s]
    assert (site.length, site.nr, site.between) == (13, 11, bytes.fromhex("4889df4889ee"))
    assert raw[s] == 0xE9 and bytes(raw[s + 5 : p + 2]) == body[5:]
    stub = bytes(raw[site.stub : site.stub + 28])
    assert stub[:11] == bytes.fromhex("b80b000000" "4889df" "4889ee")
    assert site.stub + 18 + struct.unpack_from("<i", stub, 14)[0] == p + 2
    assert [site.resume_at(o) for o in (0, 5, 8, 11, 18)] == [s, s + 5, s + 8, p, p]


def test_a_register_window_is_replayed_from_its_mov():
    """musl's futex wake: `mov $202,%r8d; mov $1,%edx; mov $0x81,%esi; mov %rbx,%rdi;
    mov %r8,%rax; syscall` (the number in r8, moved to rax last). The mov of the number
    takes the jmp rel32 and the stub replays the whole sequence as it is; stopped after
    any replayed instruction a vCPU resumes at the next one in place. A move that writes
    r8 in between, or a number other than rax's, is no such window."""
    import struct

    from karn.platform.fastcall.patcher import find_register_window

    body = bytes.fromhex("41b8ca000000" "ba01000000" "be81000000" "4889df" "4c89c0" "0f05")
    assert find_register_window(b"\xf0" + body, 202) == -22
    assert find_register_window(b"\xf0" + body, 9) is None
    assert find_register_window(b"\xf0" + body.replace(bytes.fromhex("4889df"),
                                                       bytes.fromhex("4989d8")), 202) is None
    plain = bytes.fromhex("bfca000000" "be81000000" "4889f8" "0f05")  # edi, mov %rdi,%rax
    assert find_register_window(b"\x90" + plain, 202) == -13
    s = 0x10500
    raw, patcher = patcher_over(s - 1, b"\xf0" + body + b"\xc3")
    p = s + 22
    exit_twice(patcher, p, 202)
    site = patcher.patched[s]
    assert (site.start, site.length, site.nr, site.pad) == (s, 24, -1, 0)
    assert raw[s] == 0xE9 and bytes(raw[s + 5 : p + 2]) == body[5:]
    stub = bytes(raw[site.stub : site.stub + 34])
    assert stub[:22] == body[:22] and stub[22:25] == bytes.fromhex("488d0d")
    assert site.stub + 29 + struct.unpack_from("<i", stub, 25)[0] == p + 2
    assert [site.resume_at(o) for o in (0, 6, 11, 16, 19, 22, 29)] == \
        [s, s + 6, s + 11, s + 16, s + 19, p, p]


def test_a_window_across_a_cache_line_gives_its_lea_the_jmp():
    """glibc's pthread_create, static at -O1: `mov $14,%eax; lea sigall_set(%rip),%rsi;
    syscall` with the mov at offset 63 of a cache line (its first 16-bit store would not be
    atomic) and no pad in reach: the lea takes the jmp rel32 and the stub replays it as a
    movabs of its address (rax set by the mov in place); stopped in the stub, a vCPU goes
    back to the lea, or on to the syscall once the movabs ran."""
    import struct

    s = 0x1013F  # the mov
    lea = bytes.fromhex("488d35a5450700")
    raw, patcher = patcher_over(s, bytes.fromhex("b80e000000") + lea + bytes.fromhex(
        "0f05" "498b442428" "4885c0" "0f8465020000"))
    p = s + 12
    exit_twice(patcher, p, 14)
    site = patcher.patched[s + 5]
    assert (site.start, site.length, site.nr, site.pad) == (s + 5, 9, -1, 0), site
    assert raw[s] == 0xB8 and raw[s + 5] == 0xE9 and bytes(raw[p : p + 2]) == b"\x0f\x05"
    stub = bytes(raw[site.stub : site.stub + 22])
    target = s + 12 + struct.unpack_from("<i", lea, 3)[0]
    assert stub[:10] == b"\x48\xbe" + struct.pack("<Q", target)  # movabs $target,%rsi
    assert site.stub + 17 + struct.unpack_from("<i", stub, 13)[0] == p + 2
    assert [site.resume_at(o) for o in (0, 10)] == [s + 5, p]


def test_musl_clone_is_patched_at_its_last_two_instructions():
    """musl's __clone (its bytes, from a static musl 1.2 program): rax set by `xor
    %eax,%eax; mov $56,%al` and no pad after, so its last two instructions, `sub $8,%rsi;
    mov %rcx,(%rsi)`, take the jmp rel32 and the stub replays them; stopped between them a
    vCPU resumes at the store in place; undone, the bytes are back."""
    import struct

    from karn.platform.fastcall.patcher import MUSL_CLONE

    body = bytes.fromhex("31c0b038") + MUSL_CLONE + bytes.fromhex("85c0750f31ed5f41ffd1")
    s = 0x107C1
    raw, patcher = patcher_over(s, body)
    p = s + len(body) - 10 - 2
    exit_twice(patcher, p, 56)
    site = patcher.patched[p - 7]
    assert (site.start, site.length, site.nr, site.pad) == (p - 7, 9, -1, 0)
    assert raw[p - 7] == 0xE9 and bytes(raw[p - 2 : p + 2]) == bytes.fromhex("890e0f05")
    stub = bytes(raw[site.stub : site.stub + 19])
    assert stub[:10] == bytes.fromhex("4883ee08" "48890e" "488d0d")
    assert site.stub + 14 + struct.unpack_from("<i", stub, 10)[0] == p + 2
    assert [site.resume_at(o) for o in (0, 4, 7, 14)] == [p - 7, p - 3, p, p]
    patcher.unpatch_all(None)  # type: ignore[arg-type]
    assert bytes(raw[s : s + len(body)]) == body


def test_musl_wait_is_patched_at_its_loop_head():
    """musl's __wait (its internal locks' futex wait; bytes from a static musl 1.2 program):
    `xor %r10d,%r10d; mov %rbp,%rax; mov %rbx,%rsi; syscall` heads a loop entered only
    there; the three take the jmp rel32 and are replayed, and a vCPU stopped between two
    of them resumes at the next one in place."""
    from karn.platform.fastcall.patcher import MUSL_WAIT

    body = bytes.fromhex("48635b") + MUSL_WAIT + bytes.fromhex("4d85c07404")
    s = 0x10420
    raw, patcher = patcher_over(s - 3, body)
    p = s + 9
    exit_twice(patcher, p, 202)
    site = patcher.patched[s]
    assert (site.start, site.length, site.nr, site.pad) == (s, 11, -1, 0)
    assert raw[s] == 0xE9 and bytes(raw[s + 5 : p + 2]) == MUSL_WAIT[5:11]
    assert bytes(raw[site.stub : site.stub + 9]) == MUSL_WAIT[:9]
    assert [site.resume_at(o) for o in (0, 3, 6, 9, 16)] == [s, s + 3, s + 6, p, p]
    other = bytes(MUSL_WAIT[:-1]) + b"\xe0"  # a loop back elsewhere: not this body
    raw, patcher = patcher_over(s - 3, bytes.fromhex("48635b") + other)
    exit_twice(patcher, p, 202)
    assert s not in patcher.patched


def test_short_site_stub_resumes():
    """A vCPU stopped in a short site's stub resumes at the xor (its jmp rel8) before the
    stub replayed it, at the syscall after; the stub is `xor; lea ret(%rip),%rcx; jmp`."""
    from karn.platform.fastcall.patcher import Site
    from karn.platform.fastcall.stubs import short_stub

    site = Site(0x1000, 4, 0, bytes.fromhex("31c0"), 0x9000, b"", 0x1010)
    assert [site.resume_at(o) for o in (0, 2, 9)] == [0x1000, 0x1002, 0x1002]
    assert site.syscall == 0x1002
    stub = short_stub(0x9000, bytes.fromhex("31c0"), 0x1004, 0x8000)
    assert stub == bytes.fromhex("31c0488d0d") + (0x1004 - 0x9009).to_bytes(4, "little",
        signed=True) + b"\xe9" + (0x8000 - 0x900E).to_bytes(4, "little", signed=True)


def test_short_site_patch_and_undo():
    """On a copy of glibc's __libc_read bytes: the xor becomes `jmp rel8` to the pad, the
    pad `jmp rel32` to a stub that replays the xor and returns after the syscall in place;
    undone (the guest took GS), the xor is back and the pad jumps to it (a thread on its
    way, or a signal frame's RIP at the pad, makes the real call); a site is tried once."""
    import struct

    from karn.platform.fastcall.stubs import ENTRY

    s = 0x10049  # as at 0x430649 in a static glibc program
    raw, patcher = patcher_over(s, bytes.fromhex(
        "31c00f05" "483d00f0ffff775bc3" "662e0f1f840000000000" "4883ec28"))
    exit_twice(patcher, s + 2, 0)
    site = patcher.patched[s]
    assert site.pad == 0x10056 and patcher.known == {s + 2: True}
    assert bytes(raw[s : s + 4]) == bytes((0xEB, 0x10056 - (s + 2))) + b"\x0f\x05"
    assert raw[site.pad] == 0xE9
    assert site.pad + 5 + struct.unpack_from("<i", raw, site.pad + 1)[0] == site.stub
    stub = bytes(raw[site.stub : site.stub + 14])
    assert stub[:5] == bytes.fromhex("31c0488d0d")
    assert site.stub + 9 + struct.unpack_from("<i", stub, 5)[0] == s + 4  # rcx: after syscall
    assert site.stub + 14 + struct.unpack_from("<i", stub, 10)[0] == 0x80000
    assert bytes(raw[0x80000 : 0x80000 + len(ENTRY)]) == ENTRY
    patcher.unpatch_all(None)  # type: ignore[arg-type]
    assert bytes(raw[s : s + 4]) == bytes.fromhex("31c00f05")
    assert raw[site.pad] == 0xE9 and \
        site.pad + 5 + struct.unpack_from("<i", raw, site.pad + 1)[0] == s
    patcher.enabled = True
    exit_twice(patcher, s + 2, 0)
    assert not patcher.patched  # known: not tried again


def test_a_blocking_send_begun_by_the_server_sends_each_byte_once(build, native, same):
    """Blocking stream sends larger than the socket's buffer, to a slow reader, from a
    thread whose cheap calls keep the server awake: a send the server begins sends part
    of its data and would then wait, so its redo on the exit path must send only the
    rest. Before: the whole send again, 25-30% more bytes arrived than were sent, most of
    them out of place. Repeated until calls were redone on the exit path (the info line),
    as the server needs a host core."""
    exe = build("send_blocking", "static", ("-pthread",))
    expected = native(exe)
    assert b"misplaced 0" in expected.stdout, expected.stdout
    for _ in range(4):
        got = karn_info("--syscall-transport", "fast", exe, timeout=120)
        same(expected, got, "blocking sends, fast transport")
        m = STUB_CALLS.search(got.stderr)
        if m and int(m[2]) > 0:
            return
    pytest.fail(f"no call was redone on the exit path in 4 runs: {got.stderr[-300:]!r}")


def test_a_host_core_to_spare_needs_a_low_load_and_few_preemptions():
    """The test behind the long spins of a guest's threads (platform/hostload.py): not
    until a first interval was measured; then the load average under its limit and karn's
    threads preempted fewer times a second than the limit since the last look."""
    import struct as host_struct

    from karn.platform import hostload

    spare = hostload.SpareCore(per_core=0.75, preemptions=1000)
    load, preempted = 0.2, 0

    def sysinfo(buffer: object) -> int:
        host_struct.pack_into("<Q", buffer, 8, int(load * (1 << 16)))  # type: ignore[arg-type]
        return 0

    clock = [1000.0]
    spare.sysinfo = sysinfo
    spare.clock = lambda: clock[0]
    spare.count_preempted = lambda: preempted

    def look(after: float) -> bool:
        clock[0] += after
        return spare()

    assert look(0) is False  # the first look: nothing measured yet
    preempted += 10  # 100 a second
    assert look(0.1) is True
    assert look(0.05) is True  # within LOAD_EVERY: the last answer
    preempted += 150  # 1,500 a second: another process wants the cores
    assert look(0.1) is False
    preempted += 5
    assert look(0.1) is True
    load = spare.limit + 0.5
    assert look(0.1) is False


TICKS_PER_US = 1000  # transport_in_host_memory's TSC: 1 GHz, a tick a nanosecond


def transport_in_host_memory():  # noqa: ANN201
    """(a FastTransport over 64 KiB of host memory, slots at 0x1000, the getpid call
    fast; that memory): for what the transport writes in its slots, with no VM."""
    import ctypes

    from karn.platform.fastcall.server import load_helper
    from karn.platform.fastcall.transport import FastTransport

    class Code:
        def is_private_code(self, start: int, end: int) -> bool:
            return False

        def reserve_near(self, lo: int, hi: int, length: int) -> int | None:
            return None

    memory = bytearray(0x10000)
    raw = memoryview(memory)
    host = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    fast = FastTransport(load_helper(), raw, host, 0x1000, Code(), 0x8000, 0x10000, [39],
                         TICKS_PER_US * 1000, 0)
    return fast, raw


def test_a_shared_wait_spins_long_only_with_a_core_to_spare(monkeypatch):
    """SLOT_SPIN_SHARED, how long a shared futex wait (pthread_join's) spins in its stub:
    SHARED_SPIN_US while the host has a core to spare, else a quarter of SPIN_US, and none
    while in-guest futex calls are off; a thread launched but not bound yet counts among
    the slots' running threads (SLOT_NBOUND), so that its creator's join may spin; no
    wait spins while the process has more threads than --cpus slots (allow_spins)."""
    import struct

    from karn.abi.fastcall import SLOT_NBOUND, SLOT_SIZE, SLOT_SPIN, SLOT_SPIN_SHARED
    from karn.platform.fastcall import transport

    fast, raw = transport_in_host_memory()
    spare = [True]
    monkeypatch.setattr(transport, "spare_core", lambda: spare[0])

    def spins(slot: int) -> tuple[int, int]:
        addr = 0x1000 + slot * SLOT_SIZE
        return (struct.unpack_from("<Q", raw, addr + SLOT_SPIN)[0],
                struct.unpack_from("<Q", raw, addr + SLOT_SPIN_SHARED)[0])

    fast.slot_address(0)
    assert spins(0) == (0, 0)  # in-guest futex calls off: no spinning
    fast.futex_attached(lambda: False)
    assert spins(0) == (transport.SPIN_US * 1000, transport.SHARED_SPIN_US * 1000)
    spare[0] = False
    fast.slot_address(1)  # a new slot: written for the load now
    assert spins(1) == (transport.SPIN_US * 1000, transport.SPIN_US * 1000 // 4)
    fast.allow_spins(False)  # more threads than --cpus slots: a partner cannot run
    assert spins(0) == spins(1) == (0, 0)
    fast.allow_spins(True)
    assert spins(1) == (transport.SPIN_US * 1000, transport.SPIN_US * 1000 // 4)
    fast.starting()
    assert struct.unpack_from("<I", raw, 0x1000 + SLOT_NBOUND)[0] == 1
    fast.starting(-1)
    assert struct.unpack_from("<I", raw, 0x1000 + SLOT_NBOUND)[0] == 0


def test_an_answer_renews_its_slots_lease():
    """The server renews the lease of the slot it answers, before the answer: a call longer
    than the lease (an open, a socket send) let it run out while the server served, and
    the caller's next call, made ~1 µs after the answer, went past a server about to poll
    again (opens served fast lost to the exit path; nginx 30% slower)."""
    import struct

    from karn.abi.fastcall import REDO, SLOT_ALIVE, SLOT_NR, SLOT_STATE, TAKEN
    from karn.platform.fastcall import server
    from karn.platform.fastcall.server import load_helper

    helper = load_helper()
    fast, raw = transport_in_host_memory()
    fast.slot_address(0)
    struct.pack_into("<Q", raw, 0x1000 + SLOT_ALIVE, 0)  # a server busy serving: run out
    struct.pack_into("<Q", raw, 0x1000 + SLOT_NR, 39)
    struct.pack_into("<I", raw, 0x1000 + SLOT_STATE, TAKEN)
    lease = TICKS_PER_US * server.LEASE_US
    before = helper.tsc()
    fast._serve(0)  # no thread bound to the slot: answered REDO (the exit path serves it)
    after = helper.tsc()
    assert struct.unpack_from("<I", raw, 0x1000 + SLOT_STATE)[0] == REDO
    assert before + lease <= struct.unpack_from("<Q", raw, 0x1000 + SLOT_ALIVE)[0] \
        <= after + lease


def test_the_idle_poller_stops_lending_its_core_to_a_busy_loop():
    """The poller idle for YIELD_US yields its core (_fastpoll.c lend_core); a yield that
    kept it off longer than YIELD_LONG_US met a busy loop, and yields pause. Here the
    poller shares one host CPU with a busy loop: its first yield hands the loop a whole
    slice, and the pause is set (without it, a getpid loop beside two busy loops took
    58 µs a call against 10). A request published then is still taken."""
    import ctypes
    import struct
    import threading

    from karn.abi.fastcall import REQ, SLOT_ALIVE, SLOT_SIZE, SLOT_STATE, TAKEN
    from karn.platform.fastcall.server import AWAKE, load_helper

    helper = load_helper()
    assert helper is not None, "the C helper _fastpoll is not built"
    cpu = min(os.sched_getaffinity(0))
    loop = subprocess.Popen([sys.executable, "-c", "import os\n"
                             f"os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"])
    slots = bytearray(SLOT_SIZE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(slots))
    control = (ctypes.c_uint32 * 6)(AWAKE, 1)
    long_ticks, pause_ticks = 50_000, 1 << 40  # ~20 µs; a pause that outlasts the test
    taken: list[int] = []

    def poller() -> None:
        os.sched_setaffinity(0, {cpu})
        taken.append(helper.poll(base, SLOT_SIZE, ctypes.addressof(control), 0, 1 << 50,
                                 1 << 50, SLOT_ALIVE, 0, 1 << 20, 1000, long_ticks,
                                 pause_ticks))

    def pause() -> tuple[int, int]:  # yields_from, yield_pause
        return struct.unpack_from("<QQ", bytes(control), 8)

    try:
        wait_for(lambda: open(f"/proc/{loop.pid}/stat").read().split()[13] != "0",
                 what="the busy loop running")
        thread = threading.Thread(target=poller, daemon=True)
        thread.start()
        try:
            wait_for(lambda: pause()[1] != 0, what="a long yield pausing yields")
            assert pause()[1] == pause_ticks and pause()[0] > helper.tsc()
        finally:
            struct.pack_into("<I", slots, SLOT_STATE, REQ)  # the poller returns
            thread.join(timeout=60)
        assert taken == [0] and struct.unpack_from("<I", slots, SLOT_STATE)[0] == TAKEN
    finally:
        loop.kill()
        loop.wait()
