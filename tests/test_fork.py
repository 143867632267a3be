"""Processes: fork, vfork, wait, signals between processes, shells (issue 15).

Each guest process is its own monitor process with its own VM (kernel/fork.py); the
first monitor keeps the process table. Results are compared with native runs; the host
must keep no process of a unikernel once it has ended, however it ended.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import BUSYBOX
from helpers import go_build, wait_for

from karn.kernel.hosttmp import remove_tree

SCRIPT = """\
greet() { echo "hello $1"; }
i=0
while [ $i -lt 3 ]; do greet "n$i"; i=$((i+1)); done
for f in x y; do echo "$f" | tr a-z A-Z; done
total=0
for n in $(seq 1 5); do total=$((total + n)); done
echo "total $total"
false || echo "false failed"
(exit 4); echo "subshell $?"
"""


@pytest.mark.parametrize("variant", ["static", "dynamic"])
def test_fork_wait_as_native(build, karn, native, same, variant):
    """Exit codes, a crashing child's WTERMSIG, kill, pipes both ways, WNOHANG, a zombie
    seen with WNOWAIT and reaped, SIGCHLD's siginfo (sigwaitinfo and a handler),
    waitpid(-1), process groups and kill(-pgid), setsid, vfork, posix_spawn."""
    probe = build("fork_wait", variant)
    expected = native(probe)
    got = karn(probe)
    same(expected, got, "fork_wait")
    # the crashing child gets a full report: which process, the fault, the backtrace
    assert re.search(rb"karn: process \d+ \(\S+\) crashed: SIGSEGV", got.stderr), got.stderr
    assert b"fault address: 0x0 (write)" in got.stderr and b"backtrace:" in got.stderr


def test_sh_exit_status(karn, native, same):
    cmd = ("sh", "-c", "exit 7")
    got = karn(BUSYBOX, *cmd)
    assert got.returncode == 7
    same(native(BUSYBOX, *cmd), got, "sh -c 'exit 7'")


@pytest.mark.parametrize("command", [
    "echo a b c | tr ' ' '\\n' | sort -r | head -2",
    "x=$(echo inner | tr a-z A-Z); echo \"got $x\"; echo \"nested $(echo $(echo deep))\"",
    "sleep 0.2 & sleep 0.1 & wait; echo waited $?; (exit 3) & wait $!; echo bg $?",
    "echo to-stderr 1>&2 | cat; echo out > /dev/null; echo kept",
])
def test_sh_pipelines_and_jobs(karn, native, same, command):
    same(native(BUSYBOX, "sh", "-c", command), karn(BUSYBOX, "sh", "-c", command), command)


def test_sh_script_with_loop_and_function(karn, native, same, tmp_path):
    script = tmp_path / "script.sh"
    script.write_text(SCRIPT)
    expected = native(BUSYBOX, "sh", str(script))
    got = karn("-v", f"{tmp_path}:/data:ro", BUSYBOX, "sh", "/data/script.sh")
    same(expected, got, "script")


def _descendants(root: int) -> set[int]:
    """Host processes under `root` (its children, theirs, ...), from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    """Running, sleeping or stopped: anything but gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _start_shell(command: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "karn", "run", BUSYBOX, "sh", "-c", command],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    return proc


def test_no_process_left_after_a_normal_end():
    """The shell (pid 1) ends with children still running: they end with it, as in a pid
    namespace whose init has exited."""
    proc = _start_shell("sleep 30 & sleep 30 & echo started; read x")
    monitors = wait_for(lambda: (found := _descendants(proc.pid)) and len(found) >= 2 and found,
                        "the children's monitors")
    proc.communicate(b"go\n", timeout=60)
    wait_for(lambda: not any(_alive(pid) for pid in monitors), "every monitor gone")


def test_no_process_left_when_the_first_monitor_is_killed():
    proc = _start_shell("sleep 60 & sleep 60 & echo started; wait")
    monitors = wait_for(lambda: (found := _descendants(proc.pid)) and len(found) >= 2 and found,
                        "the children's monitors")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    wait_for(lambda: not any(_alive(pid) for pid in monitors), "every monitor gone")


PYTHON_PROCESSES = """
import os, subprocess
r = subprocess.run(["/bin/busybox", "sh", "-c", "echo out; echo err >&2; exit 3"],
                   capture_output=True)
print(r.returncode, r.stdout, r.stderr)
r = subprocess.run(["/bin/busybox", "tr", "a-z", "A-Z"], input=b"piped through\\n",
                   capture_output=True)
print(r.stdout)
try:
    subprocess.run(["/bin/busybox", "sleep", "5"], timeout=0.5)
except subprocess.TimeoutExpired:
    print("timed out")
pid = os.fork()
if pid == 0:
    os._exit(12)
got, status = os.waitpid(pid, 0)
print(got == pid, os.waitstatus_to_exitcode(status))
"""


def test_python_subprocess_and_fork(karn, native, same):
    """Debian's python3: subprocess.run with pipes, a timeout that kills the child,
    os.fork and os.waitpid."""
    expected = native("/usr/bin/python3", "-c", PYTHON_PROCESSES)
    got = karn("--root", "/", "/usr/bin/python3", "-c", PYTHON_PROCESSES, timeout=180)
    same(expected, got, "python3 subprocess")


GCC_PROGRAM = {
    "prog.c": """#include <math.h>
#include <stdio.h>
#include "util.h"
int main(int argc, char **argv) {
    printf("%s: sqrt(2)=%.6f fib(20)=%ld args=%d\\n", GREETING, sqrt(2.0), fib(20), argc);
    return (int)(fib(10) % 7);
}
""",
    "util.h": """#define GREETING "compiled with gcc"
long fib(int n);
""",
    "util.c": """#include "util.h"
long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
""",
}
GCC_COMMAND = "gcc -O2 -Wall -o {out} prog.c util.c -lm && {out}"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs the host's gcc")
def test_gcc_compiles_and_links_in_the_guest(karn, native, same, tmp_path):
    """Debian's gcc in the guest, the toolchain from a read-only /usr volume (gcc, cc1,
    as, collect2/ld and the headers, crt files and libraries under it): gcc forks and
    execs each pass, the program it links into /tmp runs there as natively, and the
    executable is byte for byte the one native gcc makes (copied out by coreutils cp to
    `/out/`, whose O_PATH open of a volume directory failed with EINVAL)."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for name, text in GCC_PROGRAM.items():
        (src / name).write_text(text)
    expected = native("sh", "-c", GCC_COMMAND.format(out=out / "native"), cwd=src)
    assert expected.returncode == 6 and b"fib(20)=6765" in expected.stdout, expected
    guest = GCC_COMMAND.format(out="/tmp/prog") + "; status=$?; cp /tmp/prog /out/; exit $status"
    got = karn("-v", "/usr:/usr:ro", "-v", f"{src}:/src:ro", "-v", f"{out}:/out", "-w", "/src",
               "sh", "-c", guest, timeout=300)
    same(expected, got, "gcc in the guest")
    assert (out / "prog").read_bytes() == (out / "native").read_bytes()


def test_named_unix_sockets_between_processes(build, karn, native, same):
    """AF_UNIX names in /tmp reach across processes: bound before the first fork (the
    guest's /tmp then moves to a host directory), after it, and by a sibling forked
    after the connecting process (which never saw the bind); abstract names bound by a
    child reach its parent and are free again once the child ended; autobinds in two
    processes do not collide."""
    probe = build("unix_across_fork")
    same(native(probe), karn(probe), "named AF_UNIX sockets across processes")


def test_zombie_shows_in_proc_until_reaped(build, karn, native, same):
    """An ended child not yet waited for: /proc/PID/stat says Z with its name and parent
    (from the process table: its monitor is gone), busybox ps lists it as Z; once reaped
    its /proc directory is gone."""
    probe = build("zombie_proc")
    same(native(probe, BUSYBOX), karn("--root", "/", probe, BUSYBOX), "zombie in /proc")


def test_fork_bomb_is_contained(build, karn):
    """Every process forks until fork fails: --pids-limit stops them all with EAGAIN, and
    pid 1 reaps them (orphans are reparented to it)."""
    got = karn("--pids-limit", "8", build("fork_bomb"), timeout=300)
    assert got.returncode == 0, got.stderr
    assert got.stdout == (b"pid 1 stopped by EAGAIN: 1, every process ended normally: 1, "
                          b"reaped some: 1\n")


def test_trace_shows_every_process(karn):
    """--trace: each process's calls, on lines carrying its pid (a thread's tid)."""
    got = karn("--trace", BUSYBOX, "sh", "-c", "echo hi | cat")
    assert got.returncode == 0 and got.stdout == b"hi\n", got.stderr
    lines = got.stderr.decode().splitlines()
    forks = [line for line in lines if line.startswith("[1] ") and " clone(" in line]
    children = sorted({int(line.split(" = ")[-1].split()[0]) for line in forks})
    assert len(children) == 2, lines
    for pid in children:
        assert any(line.startswith(f"[{pid}] ") and "exit_group(0)" in line
                   for line in lines), (pid, lines)


@pytest.mark.parametrize("cpus", ["1", "2"])
def test_fork_while_other_threads_are_busy(build, karn, native, same, cpus):
    """Other threads open and close fds, map and unmap memory, make pipes while one
    forks: the monitor takes the kernel's locks around its own fork, so no child hangs."""
    probe = build("fork_threads", extra_flags=("-pthread",))
    same(native(probe), karn("--cpus", cpus, probe), "fork with busy threads")


def test_go_os_exec(karn, native, same):
    """Go's os/exec (clone with CLONE_VM|CLONE_VFORK, served as vfork): output, a pipe
    to the child's stdin, an exit code."""
    exe = go_build(Path(__file__).parent / "programs" / "go" / "fork_exec.go", "fork_exec")
    same(native(exe), karn("--root", "/", exe, timeout=180), "go os/exec")


def test_orphans_go_to_init(build, karn, native, same):
    """An orphan's getppid() becomes 1, its PR_SET_PDEATHSIG signal fires, and pid 1
    reaps it; natively the program runs as pid 1 of a new pid namespace."""
    probe = build("fork_orphan")
    expected = native("unshare", "--pid", "--fork", probe)
    assert expected.stdout.startswith(b"first process is pid 1: 1\n"), expected.stderr
    same(expected, karn(probe), "orphans")


@pytest.mark.parametrize("limit", [6, 9])
def test_pids_limit_counts_threads_and_processes(build, karn, limit):
    """As a pids cgroup: the first process and its four threads are 5 tasks, so the
    limit leaves limit - 5 forks (at most the program's 8)."""
    got = karn("--pids-limit", str(limit), build("fork_pids", extra_flags=("-pthread",)))
    assert got.returncode == 0, got.stderr
    assert got.stdout == f"threads 4 forks {min(limit - 5, 8)}\n".encode()


def test_process_table_rules():
    """The table's Linux rules that the programs above do not reach."""
    from karn.abi.errno import SyscallError
    from karn.abi.signals import SIGSTOP, SIGTSTP
    from karn.kernel.proctable import (
        P_ALL,
        WCONTINUED,
        WEXITED,
        WNOHANG,
        WSTOPPED,
        ProcTable,
        exit_wstatus,
        stopped_wstatus,
    )

    table = ProcTable()
    child = table.new_process(1)
    grandchild = table.new_process(child)
    with pytest.raises(SyscallError) as err:
        table.setpgid(1, grandchild, 0)  # not the caller's child
    assert err.value.errno == errno.ESRCH
    table.execed(child, "prog")
    assert table.get(child).comm == "prog"  # a zombie's name in /proc
    with pytest.raises(SyscallError) as err:
        table.setpgid(1, child, 0)  # a child that has exec'd
    assert err.value.errno == errno.EACCES
    assert table.setsid(grandchild) == grandchild
    with pytest.raises(SyscallError) as err:
        table.setpgid(grandchild, 0, 1)  # a session leader keeps its group
    assert err.value.errno == errno.EPERM
    assert table.kill_targets(1, -grandchild) == [grandchild]
    event, orphans = table.exited(child, exit_wstatus(3))
    assert event is not None and (event.parent, event.child) == (1, child)
    assert orphans == [grandchild] and table.get(grandchild).ppid == 1
    assert table.wait(1, P_ALL, 0, WNOHANG | WEXITED) == (child, exit_wstatus(3))
    assert table.wait(1, P_ALL, 0, WNOHANG | WEXITED) is None  # the orphan runs on
    # job control: one report per change, the latest only; a stopped child that ends
    # reports its end
    event2 = table.changed(grandchild, SIGTSTP)
    assert event2 is not None and event2.wstatus == stopped_wstatus(SIGTSTP)
    assert table.changed(grandchild, SIGSTOP) is None  # already stopped
    assert table.wait(1, P_ALL, 0, WNOHANG | WEXITED) is None  # no WUNTRACED
    table.changed(grandchild, 0)
    assert table.wait(1, P_ALL, 0, WNOHANG | WSTOPPED) is None  # continued since
    assert table.wait(1, P_ALL, 0, WNOHANG | WCONTINUED) == (grandchild, 0xFFFF)
    table.changed(grandchild, SIGSTOP)
    table.exited(grandchild, exit_wstatus(0))
    assert table.wait(1, P_ALL, 0, WNOHANG | WSTOPPED | WEXITED) == (grandchild, 0)
    # an exit that orphans a group with a stopped process: SIGHUP and SIGCONT go to it
    leader = table.new_process(1)
    table.setsid(leader)
    stopped = table.new_process(leader)
    table.setpgid(leader, stopped, 0)
    assert not table.orphaned_group(stopped)  # its parent is in the session, another group
    table.changed(stopped, SIGSTOP)
    table.exited(leader, exit_wstatus(0))
    assert table.orphaned_group(stopped) and table.stranded_groups() == [stopped]
    assert table.group_members(stopped) == [stopped]


def test_far_memory_before_and_after_a_fork(build, karn, native, same):
    """KVM's memory slots cover only what the guest maps: ranges far apart and a heap
    grown past a slot's size, made before the fork (the child's new VM covers them too)
    and after it in each process, are written and read by the guest; the child's writes
    stay its own. Natively without ASLR (a static program's heap may land anywhere in the
    low GiB)."""
    probe = build("fork_far_memory")
    same(native("setarch", "-R", probe), karn(probe), "far memory across a fork")


def test_memory_never_mapped_is_still_guest_ram(build, karn):
    """An access where no memory slot is (the guest never mapped it) is carried out on
    guest RAM by the monitor, as before slots covered only what is mapped: reads give
    zeros, writes read back (Linux would send SIGSEGV: a documented gap under PVM); the
    run must not end with an unexpected VM exit."""
    got = karn(build("never_mapped"))
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"untouched reads 0\nread back 1122334455667788 11223344556677 ab\n"


def test_memory_stays_each_threads_own_while_slots_are_added(build, karn):
    """Threads map memory while others map and check theirs, and a thread maps fresh far
    pieces (each a new memory slot, added while the other vCPUs run) and starts a thread
    on a stack in each: every word reads back what its writer wrote. A slot added between
    choosing a free range and booking it let two threads' mmaps get one range (glibc
    malloc and Go's runtime then died now and then: docs/design/processes.md 3.3)."""
    got = karn("--cpus", "4", build("slot_race"))
    assert (got.returncode, got.stdout) == (0, b"ok\n"), got.stdout + got.stderr


def test_mappings_are_booked_before_their_memory_slot():
    """Adding a slot waits in the kernel with the GIL released: the range must already be
    booked then, so no other thread's mmap is handed it (mmap, brk, karn's code). A slot
    KVM refuses leaves nothing booked."""
    from karn.abi.errno import SyscallError
    from karn.kernel.mm import PROT_READ, AddressSpace, Region
    from karn.platform.memory import SLOT_GRANULE as G
    from karn.platform.memory import HostGuestMemory

    mem = HostGuestMemory(64 * G, 0x10000, 64 * G)
    mm = AddressSpace(mem, Region(0x10000, 64 * G, 64 * G, 64 * G))
    booked: list[bool] = []  # whether the piece a slot is added for holds the mapping yet
    mem.add_slot = lambda start, end: booked.append(mm.overlaps(start, end))
    top = mm.find_free(4096)
    mm.map(top, 4096, PROT_READ)
    mm.set_brk_start(G)
    mm.set_brk(G + 4096)
    assert mm.reserve_near(20 * G, 21 * G, 4096) is not None
    assert booked == [True, True, True]

    def refuse(start: int, end: int) -> None:
        raise OSError(errno.ENOSPC, "no slot")

    mem.add_slot = refuse
    with pytest.raises(SyscallError):
        mm.map(4 * G, 4096, PROT_READ)
    assert mm.set_brk(2 * G + 4096) == G + 4096  # into the next piece
    assert mm.reserve_near(30 * G, 31 * G, 4096) is None
    assert not mm.overlaps(4 * G, 5 * G) and not mm.overlaps(G + 4096, 3 * G)
    assert not mm.overlaps(30 * G, 31 * G)
    assert mm.mapped_bytes == 2 * 4096


def test_a_free_range_is_handed_to_one_thread_until_it_maps():
    """sys_mmap finds a free range, then maps it: a thread switch in between must not let
    another thread be handed the same range (hint or not), nor the mapping once booked."""
    import threading

    from karn.kernel.mm import PROT_READ, AddressSpace, Region
    from karn.platform.memory import HostGuestMemory

    mib = 1 << 20
    mm = AddressSpace(HostGuestMemory(256 * mib, 0x10000, 256 * mib),
                      Region(0x10000, 256 * mib, 256 * mib, 256 * mib))
    found: list[int] = []

    def other(hint: int) -> None:
        found.append(mm.find_free(mib, hint))

    mine = mm.find_free(mib)
    thread = threading.Thread(target=other, args=(mine,))
    thread.start()
    thread.join()
    assert found[0] + mib <= mine  # below this thread's claim, not at its hint
    mm.map(mine, mib, PROT_READ)  # booked: this thread's claim goes
    assert mm.find_free(mib, mine) + mib <= found[0]


CHECKS, TOGGLES = 2000, 1000  # checks of one page, mprotects of another and back


@pytest.mark.parametrize("question", ["accessible_prefix", "is_mapped", "find_vma"])
def test_a_buffer_check_never_sees_the_books_halfway_through_a_change(question):
    """Every guest buffer is checked against the books (accessible_prefix) on whichever
    thread serves the call, while another thread may be changing them: an mprotect of a
    mapping's first page takes the whole mapping out of the books before it puts the
    pieces back, and a check of another page of it in between said EFAULT, or raised
    IndexError from the monitor (the two lists a step apart). Thread switches forced every
    microsecond make the halfway state likely (IndexError in 3 of 3 runs before the books
    got their lock). So do the questions of mremap, msync, madvise (is_mapped, find_vma):
    ENOMEM or EFAULT for a mapping another thread's mprotect was splitting."""
    import sys
    import threading

    from karn.kernel.mm import PROT_READ, PROT_WRITE, AddressSpace, Region
    from karn.platform.memory import HostGuestMemory

    mib, page = 1 << 20, 4096
    mm = AddressSpace(HostGuestMemory(256 * mib, 0x10000, 256 * mib),
                      Region(0x10000, 256 * mib, 256 * mib, 256 * mib))
    area = mm.map(mm.find_free(16 * page), 16 * page, PROT_READ | PROT_WRITE)
    stop = threading.Event()
    failed = checks = 0
    toggles = [0]
    ask = {"accessible_prefix": lambda a, b: mm.accessible_prefix(a, b) == b - a,
           "is_mapped": mm.is_mapped,
           "find_vma": lambda a, b: mm.find_vma(a) is not None}[question]

    def toggle() -> None:
        while not stop.is_set():
            mm.protect(area, page, PROT_READ)
            mm.protect(area, page, PROT_READ | PROT_WRITE)
            toggles[0] += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        thread = threading.Thread(target=toggle)
        thread.start()
        # both sides go on until each has done its share, however the host schedules
        # them (a fixed count of toggles once ended before a single check under load)
        while checks < CHECKS or toggles[0] < TOGGLES:
            checks += 1
            if not ask(area + 8 * page, area + 9 * page):
                failed += 1
        stop.set()
        thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert checks >= CHECKS and toggles[0] >= TOGGLES and failed == 0, \
        (checks, toggles, failed)


def test_memory_slots_cover_what_is_mapped():
    """cover() adds slots only for what no slot covers yet, granule-aligned and never
    overlapping; the covered ranges merge; a slot KVM refuses is ENOMEM to the mapping."""
    from karn.abi.errno import SyscallError
    from karn.platform.memory import SLOT_GRANULE as G
    from karn.platform.memory import HostGuestMemory

    mem = HostGuestMemory(64 * G, 0x10000, 63 * G)
    slots: list[tuple[int, int]] = []
    mem.add_slot = lambda start, end: slots.append((start, end))
    mem.cover(63 * G, 64 * G)
    mem.cover(5 * G + 10, 5 * G + 20)
    mem.cover(5 * G, 6 * G)  # covered already: no slot
    mem.cover(3 * G - 4096, 7 * G + 1)  # around the last: two gaps
    assert slots == [(63 * G, 64 * G), (5 * G, 6 * G), (2 * G, 5 * G), (6 * G, 8 * G)]
    assert mem.covered == ((2 * G, 8 * G), (63 * G, 64 * G))

    def refuse(start: int, end: int) -> None:
        raise OSError(errno.ENOSPC, "no slot")

    mem.add_slot = refuse
    with pytest.raises(SyscallError) as err:
        mem.cover(20 * G, 20 * G + 1)
    assert err.value.errno == errno.ENOMEM
    assert mem.covered == ((2 * G, 8 * G), (63 * G, 64 * G))


def test_fork_takes_the_lock_of_area_imports(monkeypatch):
    """No syscall area is halfway imported at a fork (the child would wait forever for its
    module's lock): an area's import holds the lock that a fork takes first."""
    import threading

    from karn.kernel import fdspare, syscalls
    from karn.kernel.forklocks import LockSite, process_locks

    class Proc:  # what process_locks reads
        signal_lock = fds = account = None
        net = None

        def __init__(self) -> None:
            self.fds = self.mm = self.account = self
            self._lock = threading.Lock()

    assert process_locks(Proc())[0] == LockSite(syscalls, "import_lock", threading.RLock)
    held = []
    monkeypatch.setattr(fdspare, "import_module",
                        lambda name: held.append(syscalls.import_lock._is_owned()))
    syscalls.area_module("sys_wait")
    assert held == [True]


def test_link_listener_tends_between_messages():
    """A forked monitor's housekeeping (limits, time page) runs on its link's listener at
    the interval it asks, while the table's replies still come, until its process ends.
    In a host child: the listener ends its process when the link closes."""
    import socket
    import threading
    import time

    from karn.kernel.link import RemoteLink, decode_message, send_message

    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            class Proc:
                done = threading.Event()

            ours, table = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            link = RemoteLink(Proc(), ours)  # type: ignore[arg-type]
            rounds: list[float] = []
            link.start(lambda: rounds.append(time.monotonic()) or 0.01)

            def answer() -> None:
                _kind, ident, _op, args = decode_message(table.recv(4096))
                send_message(table, ("reply", ident, True, args[0] + 1))

            threading.Thread(target=answer).start()
            assert link.call("echo", 41) == 42
            deadline = time.monotonic() + 30
            while len(rounds) < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(rounds) >= 5
            Proc.done.set()
            time.sleep(0.05)
            after = len(rounds)
            time.sleep(0.1)
            assert len(rounds) <= after + 1  # none once the process has ended
            status = 0
        finally:
            os._exit(status)
    deadline = time.monotonic() + 60
    while (ended := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if ended[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    assert ended[0] == pid and os.waitstatus_to_exitcode(ended[1]) == 0


def test_fork_with_the_fast_transport(build, karn, native, same):
    """Under --syscall-transport fast the child puts the parent's patched call sites back
    (it has no server for them) and makes its calls by exit."""
    probe = build("fork_wait")
    same(native(probe), karn("--syscall-transport", "fast", probe), "fork_wait, fast")


# -- /tmp is one file system for every process (kernel/fs/sharedtmp.py) --------------


def test_tmp_file_a_child_writes_is_read_by_the_next(karn, same):
    """`ls` writes /tmp/x in one process, `cat` reads it in another: the listing is what
    `ls /` alone prints."""
    alone = karn(BUSYBOX, "ls", "/")
    assert alone.returncode == 0 and alone.stdout
    same(alone, karn(BUSYBOX, "sh", "-c", "ls / > /tmp/x; cat /tmp/x"), "ls through /tmp")


@pytest.mark.parametrize("command", [
    # a background child writes, the parent reads after wait, then removes
    "(echo from-child > $T/f; seq 1 3 >> $T/f) & wait; cat $T/f; rm $T/f; ls $T",
    # a pipeline whose stages pass their data through files
    "seq 1 200 | sort -r > $T/a; head -5 < $T/a | tr 0-9 a-j > $T/b; cat $T/b; wc -l < $T/a",
    # a file opened before the first fork: one description, one offset, for both
    "exec 3> $T/o; echo one >&3; (echo two >&3); echo three >&3; cat $T/o",
    # directories, renames and links made by children, seen by the parent
    "mkdir $T/d; (echo x > $T/d/1; ln $T/d/1 $T/d/2; mv $T/d/1 $T/d/3); ls $T/d; cat $T/d/2",
])
def test_tmp_is_shared_by_all_processes(karn, native, same, tmp_path, command):
    expected = native(BUSYBOX, "sh", "-c", command, extra_env={"T": str(tmp_path)})
    got = karn("-e", "T=/tmp", BUSYBOX, "sh", "-c", command)
    same(expected, got, command)


def test_shared_tmp_leaves_nothing_on_the_host(karn, tmp_path):
    """The host directory /tmp moved to at the first fork goes with the run."""
    got = karn(BUSYBOX, "sh", "-c", "echo data > /tmp/f; (cat /tmp/f)",
               extra_env={"TMPDIR": str(tmp_path)})
    assert got.stdout == b"data\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("karn-tmpfs-")] == []


def test_shared_tmp_of_a_killed_run_is_removed_by_the_next(karn, tmp_path):
    """SIGKILL to the first monitor leaves its directory; the next run removes it, once
    no monitor of the killed run is left (they hold it locked), and keeps a live run's."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "karn", "run", BUSYBOX, "sh", "-c",
                             "(echo started > /tmp/f); cat /tmp/f; sleep 60"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith("karn-tmpfs-")]
    assert len(left) == 1
    karn(BUSYBOX, "sh", "-c", "(true)", extra_env={"TMPDIR": str(tmp_path)})
    assert (tmp_path / left[0]).exists()  # a live run's directory stays
    monitors = _descendants(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    wait_for(lambda: not any(_alive(pid) for pid in monitors), "every monitor gone")
    assert (tmp_path / left[0]).exists()
    karn(BUSYBOX, "sh", "-c", "(true)", extra_env={"TMPDIR": str(tmp_path)})
    assert not (tmp_path / left[0]).exists()


@pytest.mark.parametrize("program, guest_dir, args, flags", [
    ("calls_xattr", "/dev/shm", (), ()),
    ("calls_fifo", "/tmp", (), ("-pthread",)),
    ("calls_unixbind", "/tmp", (), ()),
    ("calls_splice", "/dev/shm", (), ()),
])
@pytest.mark.parametrize("where", ["the shell's process", "a child"])
def test_tmpfs_calls_after_the_first_fork(build, karn, native, same, program, guest_dir,
                                          args, flags, where):
    """What tests/test_calls.py checks of tmpfs, on the shared tmpfs: run by the shell
    after a fork (exec), or in a child it forks."""
    exe = build(program, "static", extra_flags=flags)
    native_dir = tempfile.mkdtemp(prefix="karn-fork-", dir="/dev/shm")
    try:
        os.chmod(native_dir, 0o755)  # programs go on as a user, who must reach their files
        expected = native(exe, native_dir, *args)
    finally:
        shutil.rmtree(native_dir, ignore_errors=True)
    assert expected.returncode == 0, expected.stdout.decode()
    run = f"/prog/{exe.name} {guest_dir} {' '.join(args)}"
    script = f"(true); exec {run}" if where == "the shell's process" else f"(true); {run}; :"
    got = karn("-v", f"{exe.parent}:/prog:ro", BUSYBOX, "sh", "-c", script)
    same(expected, got, f"{program} in {where}")


@pytest.mark.parametrize("where", ["the shell's process", "a child"])
def test_tmpfs_names_count_against_its_size_after_the_first_fork(build, karn, where):
    """tests/test_monitor_robust.py's check of --tmpfs-size, on the shared tmpfs."""
    prog = build("tmpfs_entries")
    run = f"/prog/{prog.name} /tmp 5000"
    script = f"(true); exec {run}" if where == "the shell's process" else f"(true); {run}; :"
    got = karn("--tmpfs-size", "1m", "-v", f"{prog.parent}:/prog:ro", BUSYBOX, "sh", "-c",
               script)
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"No space left on device\n" * 2
    counts = [int(line.split()[2]) for line in got.stderr.decode().splitlines()]
    assert len(counts) == 2 and counts[0] == counts[1], got.stderr
    assert 128 < counts[0] < 1024, counts


def test_tmpfs_size_is_one_budget_for_all_processes(karn):
    """Two children writing 40 KiB each into a 64 KiB tmpfs: the second runs out of
    space, and the room comes back when the first file goes."""
    write = "dd if=/dev/zero of=/tmp/{} bs=1k count=40 2>&1 | grep -o 'No space left.*'"
    script = "; ".join([
        f"({write.format('a')})", f"({write.format('b')})", "wc -c /tmp/a /tmp/b",
        "rm /tmp/a /tmp/b", f"({write.format('c')})", "wc -c /tmp/c"])
    got = karn("--tmpfs-size", "64k", BUSYBOX, "sh", "-c", script)
    lines = got.stdout.decode().splitlines()
    assert lines[0] == "No space left on device", got.stdout
    sizes = {line.split()[1]: int(line.split()[0]) for line in lines[1:]}
    assert sizes["/tmp/a"] == 40 << 10 and sizes["total"] <= 64 << 10, sizes
    assert sizes["/tmp/c"] == 40 << 10, sizes


@pytest.mark.parametrize("depth", [3, 1100])
def test_a_tmp_tree_made_before_the_first_fork(build, karn, native, same, tmp_path, depth):
    """Everything the first process made in /tmp is there for its children, with its
    links, owners and modes, and an open file's offset is shared; a tree nested deeper
    than Python's recursion limit is copied and removed at the end too."""
    prog = build("tmp_tree_fork", "static")
    native_dir = tmp_path / "native"
    native_dir.mkdir()
    expected = native(prog, native_dir, str(depth))
    host_tmp = tmp_path / "karn"
    host_tmp.mkdir()
    got = karn(prog, "/tmp", str(depth), extra_env={"TMPDIR": str(host_tmp)})
    remove_tree(str(native_dir))  # pytest's own clean-up recurses: too deep for it
    same(expected, got, f"a tree {depth} deep")
    assert [p.name for p in host_tmp.iterdir() if p.name.startswith("karn-tmpfs-")] == []


@pytest.mark.parametrize("where", ["tmpfs", "volume"])
def test_mkdir_keeps_the_guest_umask_after_a_fork(karn, native, same, where, tmp_path):
    """mkdir gives the mode the guest's umask leaves, before and after the run's first
    fork (which moves /tmp to a host directory) and on a volume: the monitor's own umask
    (022) took group write from a guest's umask 002 (CPython's test_os.MakedirTests)."""
    script = ("umask 002; mkdir d1 && true & wait; mkdir d2 && mkdir -m 777 d3 && "
              "mkdir -m 700 d4 && stat -c '%n %a' d1 d2 d3 d4")
    here = tmp_path / "native"
    here.mkdir()
    expected = native(BUSYBOX, "sh", "-c", script, cwd=here)
    if where == "volume":
        vol = tmp_path / "vol"
        vol.mkdir()
        got = karn("-v", f"{vol}:/vol", "-w", "/vol", BUSYBOX, "sh", "-c", script)
    else:
        got = karn("-w", "/tmp", BUSYBOX, "sh", "-c", script)
    same(expected, got, f"mkdir modes under umask 002 ({where})")


@pytest.mark.parametrize("where", ["tmpfs", "volume"])
def test_file_locks_between_processes(build, karn, native, same, where, tmp_path):
    """fcntl record locks (F_SETLK conflicts, F_GETLK's holder, F_SETLKW waiting and
    interrupted, release at the holder's end), OFD locks and flock hold between the
    guest's processes as on Linux (they were granted without checking: SQLite in two
    processes could both write)."""
    probe = build("file_locks")
    expected = native(probe, tmp_path)
    if where == "volume":
        got = karn("-v", f"{tmp_path}:/vol", probe, "/vol")
    else:
        got = karn(probe, "/tmp")
    same(expected, got, f"file locks between processes ({where})")


FORK_DURING_IMPORT = """
import os, signal, sys, threading
from karn.kernel.forklocks import drop_halfway_imports
sys.path.insert(0, sys.argv[1])
started, leave = threading.Event(), threading.Event()
import builtins
builtins.karn_test_events = (started, leave)
threading.Thread(target=lambda: __import__("slowmod"), daemon=True).start()
started.wait()
pid = os.fork()
if pid == 0:  # the importing thread is not here; its module lock and half module are
    signal.alarm(2 if sys.argv[2] == "keep" else 60)  # a hung child ends (SIGALRM)
    if sys.argv[2] == "drop":
        drop_halfway_imports()
    builtins.karn_test_events = (threading.Event(), threading.Event())
    builtins.karn_test_events[1].set()
    import slowmod
    os.write(1, b"child imported %d\\n" % slowmod.VALUE)
    os._exit(0)
leave.set()
status = os.waitpid(pid, 0)[1]
if os.WIFSIGNALED(status):
    print("child hung")
"""


@pytest.mark.parametrize("mode", ["drop", "keep"])
def test_a_fork_during_another_threads_import(tmp_path, mode):
    """A forked monitor imports what another thread of its parent was importing at the
    fork (kernel/forklocks.py drop_halfway_imports; a guest's fork under load hung so).
    Without the drop the child waits forever: the control case shows the test can fail."""
    (tmp_path / "slowmod.py").write_text(
        "import builtins\nstarted, leave = builtins.karn_test_events\n"
        "started.set()\nleave.wait()\nVALUE = 42\n")
    cmd = [sys.executable, "-c", FORK_DURING_IMPORT, str(tmp_path), mode]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert out == ("child imported 42\n" if mode == "drop" else "child hung\n")
