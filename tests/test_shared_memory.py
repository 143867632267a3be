"""Memory shared between processes (issue 15): MAP_SHARED memory stays shared after fork
(platform/memory.py), futexes on it work across processes (kernel/futex.py), and
Python's multiprocessing runs as natively. Each process is its own monitor and VM, so
all of this crosses host processes. Compared with native runs."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

PARTS = ["atomics", "mutex", "semaphores", "shm", "interrupted", "truncated"]

# Pool, Value with a Lock (sem_open semaphores in /dev/shm, a multiprocessing heap arena
# in /dev/shm), ProcessPoolExecutor and a Queue: pipes, shared memory, futexes.
MULTIPROCESSING = """\
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor


def square(n):
    return n * n


def add_many(counter, lock, times):
    for _ in range(times):
        with lock:
            counter.value += 1


if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(2) as pool:
        print("pool map:", sum(pool.map(square, range(1000))))
        print("pool imap:", list(pool.imap(square, range(5))))
    counter = mp.Value("i", 0, lock=False)
    lock = mp.Lock()
    workers = [mp.Process(target=add_many, args=(counter, lock, 500)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print("value:", counter.value, "exit codes:", [w.exitcode for w in workers])
    shared = mp.Array("d", 4)
    child = mp.Process(target=shared.__setitem__, args=(slice(0, 4), [1.5, 2.5, 3.5, 4.5]))
    child.start()
    child.join()
    print("array:", list(shared))
    with ProcessPoolExecutor(2) as executor:
        print("executor:", sum(executor.map(square, range(200))))
    queue = mp.Queue()
    p = mp.Process(target=queue.put, args=("through a queue",))
    p.start()
    print("queue:", queue.get())
    p.join()
"""


@pytest.mark.parametrize("variant", ["static", "dynamic"])
@pytest.mark.parametrize("part", PARTS)
def test_shared_memory_as_native(build, karn, native, same, part, variant):
    """Each part makes its shared memory before the run's first fork (when /dev/shm is
    still in the monitor's memory) and uses it across several processes: atomics on
    MAP_SHARED|MAP_ANONYMOUS pages, a process-shared mutex and condition variable,
    named semaphores inherited and opened again by name in a child, a shm_open file
    mapped before the fork and again by a child; waits on shared words interrupted by a
    handled signal, timed out, and ended by SIGKILL; a shared file truncated below its
    mapping (SIGBUS past the end, EFAULT from write(2))."""
    probe = build("shared_memory", variant)
    same(native(probe, part), karn(probe, part), f"shared_memory {part}")


def test_shared_memory_with_the_fast_transport(build, karn, native, same):
    """mmap served by the fast transport's server thread shares the same way."""
    probe = build("shared_memory")
    same(native(probe, "mutex"), karn("--syscall-transport", "fast", probe, "mutex"),
         "shared_memory mutex, fast")


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_python_multiprocessing(karn, native, same, method, tmp_path):
    """Debian's python3: multiprocessing.Pool, Value and Lock, Array, a Queue, and
    concurrent.futures.ProcessPoolExecutor print what they print natively; with the
    forkserver start method too (its server is reached by an AF_UNIX name in /tmp that the
    first process binds after its first fork and closes, the server holding it)."""
    # a file, not -c: forkserver's children import the functions from __main__'s file
    script = tmp_path / "mp.py"
    script.write_text(MULTIPROCESSING.replace('set_start_method("fork")',
                                              f'set_start_method("{method}")'))
    expected = native("/usr/bin/python3", script)
    assert expected.returncode == 0 and b"queue:" in expected.stdout, expected.stderr
    got = karn("--root", "/", "-v", f"{tmp_path}:/mp:ro", "/usr/bin/python3", "/mp/mp.py",
               timeout=180)
    same(expected, got, f"python3 multiprocessing ({method})")


SENT_MAPPING = """\
import mmap, os, socket

def make_file():  # as multiprocessing's heap arena: unlinked at once, kept open, mapped
    fd = os.open("/dev/shm/arena", os.O_RDWR | os.O_CREAT, 0o600)
    os.unlink("/dev/shm/arena")
    os.ftruncate(fd, 4096)
    m = mmap.mmap(fd, 4096)
    m[0:6] = b"parent"
    return fd, m

a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
ready_r, ready_w = os.pipe()
done_r, done_w = os.pipe()
if BEFORE_FORK:
    fd, m = make_file()
pid = os.fork()  # the first fork: the tmpfs is shared from here on
if pid == 0:
    _, fds, _, _ = socket.recv_fds(b, 1, 1)
    mine = mmap.mmap(fds[0], 4096)
    print("child reads:", bytes(mine[0:6]), flush=True)
    mine[0:5] = b"child"
    os.write(ready_w, b"r")
    os.read(done_r, 1)  # alive until the parent has looked
    os._exit(0)
if not BEFORE_FORK:
    fd, m = make_file()
socket.send_fds(a, [b"x"], [fd])
os.read(ready_r, 1)
print("parent sees the child's write:", bytes(m[0:5]), flush=True)
os.write(done_w, b"d")
os.waitpid(pid, 0)
"""


@pytest.mark.parametrize("made", ["before", "after"])
def test_a_mapped_file_sent_to_another_process_is_shared(karn, native, same, tmp_path,
                                                          made):
    """An unlinked /dev/shm file, as multiprocessing's heap arena, made before or after
    the first fork and mapped MAP_SHARED by a process that received its fd over AF_UNIX
    (SCM_RIGHTS): the receiver reads the sender's data, and the sender sees the
    receiver's writes while both run. Before: made before the fork, no file arrived (no
    host fd: "received 0 items of ancdata" in multiprocessing's forkserver); made after,
    the receiver mapped a private copy, written back only at its exit (forkserver
    workers lost each other's updates)."""
    script = tmp_path / "sent.py"
    script.write_text(f"BEFORE_FORK = {made == 'before'}\n" + SENT_MAPPING)
    expected = native("/usr/bin/python3", script)
    assert expected.returncode == 0 and b"child" in expected.stdout, expected.stderr
    got = karn("--root", "/", "-v", f"{tmp_path}:/mp:ro", "/usr/bin/python3", "/mp/sent.py",
               timeout=180)
    same(expected, got, f"a mapping of a file sent with SCM_RIGHTS, made {made} the fork")


SQLITE_WAL = """\
import os, sqlite3, subprocess, sys

db = os.path.join(sys.argv[1], "wal.db")
READ = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0); "
        "print(c.execute('select sum(a) from t').fetchone()[0])")
WRITE = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=60, "
         "isolation_level=None)\\nfor i in range(40): c.execute('insert into t values (1)')")


def read():
    done = subprocess.run([sys.executable, "-c", READ, db], capture_output=True, text=True)
    return done.stdout.strip() or done.stderr.strip().splitlines()[-1]


con = sqlite3.connect(db, timeout=0, isolation_level=None)
print("journal mode:", con.execute("pragma journal_mode=wal").fetchone()[0])
con.execute("create table t(a)")
con.execute("insert into t values (1), (2)")
con.execute("begin immediate")
con.execute("insert into t values (10)")
print("another process reads during the write:", read())
con.execute("commit")
print("and after the commit:", read())
writers = [subprocess.Popen([sys.executable, "-c", WRITE, db]) for _ in range(3)]
print("three writers at once exit", [w.wait() for w in writers])
print("rows:", con.execute("select count(*) from t").fetchone()[0])
print("integrity:", con.execute("pragma integrity_check").fetchone()[0])
"""


def test_sqlite_wal_across_processes_on_a_volume(karn, native, same, tmp_path):
    """SQLite in WAL mode, its database on a volume, used by several guest processes at
    once (each its own monitor): a reader does not wait for a writer's open transaction
    and sees the committed rows, concurrent writers lose nothing, the file stays sound.
    Its WAL index is a MAP_SHARED mapping of the -shm file that every process must see
    as one. Before: each process mapped a private copy of a volume file, so a reader
    found no valid index, waited for the writer's lock ("database is locked" with no
    timeout) and writers could not see each other's commits."""
    script = tmp_path / "wal.py"
    script.write_text(SQLITE_WAL)
    for where in ("native", "karn"):
        (tmp_path / where).mkdir()
    expected = native("/usr/bin/python3", script, tmp_path / "native")
    assert expected.returncode == 0 and b"integrity: ok" in expected.stdout, expected.stderr
    got = karn("--root", "/", "-v", f"{tmp_path}:/wal", "/usr/bin/python3", "/wal/wal.py",
               "/wal/karn", timeout=180)
    same(expected, got, "sqlite3 WAL on a volume, several processes")


MAP_VOLUME_FILE = """\
import mmap, sys
with open(sys.argv[1], "r+b") as f:
    m = mmap.mmap(f.fileno(), 4096)
m[0:5] = b"guest"
print("written", flush=True)
sys.stdin.readline()
print("reads", bytes(m[0:4]).decode(), flush=True)
"""


def test_a_shared_mapping_of_a_volume_file_is_the_host_file(tmp_path):
    """A guest's MAP_SHARED mapping of a volume file is the file's own pages: the host
    reads the guest's write while the guest still runs (no msync, no exit), and the guest
    reads what the host wrote. Before: a copy, written back at munmap, msync or exit."""
    (tmp_path / "map.py").write_text(MAP_VOLUME_FILE)
    data = tmp_path / "data"
    data.write_bytes(bytes(4096))
    seen_by_host = []

    def host_reads_then_writes() -> None:
        seen_by_host.append(data.read_bytes()[:5])
        with open(data, "r+b") as f:
            f.write(b"host")

    lines, err, status = _interact(
        [sys.executable, "-m", "karn", "run", "--root", "/", "-v", f"{tmp_path}:/v",
         "/usr/bin/python3", "/v/map.py", "/v/data"], 1, host_reads_then_writes)
    assert status == 0, err.decode(errors="replace")
    assert lines[0] == b"written\n"
    assert seen_by_host == [b"guest"], "the host reads the guest's write while it runs"
    assert lines[1] == b"reads host\n", "the guest reads the host's write through its mapping"


MAP_PRIVATE_FILE = """\
import mmap, sys
with open(sys.argv[1], "rb") as f:
    m = mmap.mmap(f.fileno(), 8192, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
print("first pages", bytes(m[0:3]).decode(), bytes(m[4096:4099]).decode(), flush=True)
m[0:3] = b"own"  # this page is the process's own copy from now on
print("wrote", flush=True)
sys.stdin.readline()
print("then", bytes(m[0:3]).decode(), bytes(m[4096:4099]).decode(), flush=True)
"""


def _interact(cmd: list[str], first: int, between: Callable[[], None]
              ) -> tuple[list[bytes], bytes, int]:
    """Run cmd; after its first `first` lines call between(), then give it a line and let
    it finish: (those lines and the rest of its output, its stderr, its status)."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    watchdog = threading.Timer(120, proc.kill)  # never hang the suite
    watchdog.start()
    try:
        assert proc.stdin is not None and proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(first)]
        between()
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=60)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return [*lines, out], err, proc.returncode


def test_a_private_mapping_of_a_volume_file_is_the_file_until_written(tmp_path):
    """A guest's MAP_PRIVATE mapping of a volume file, as natively: the pages it has not
    written show what the host writes to the file later, the page it wrote stays its own,
    and the file never sees the guest's write. (karn maps the host file itself, copy on
    write, as Linux maps programs and libraries; before, the mapping was a copy made at
    mmap time.)"""
    (tmp_path / "map.py").write_text(MAP_PRIVATE_FILE)
    results = {}
    for name, prefix, script, data in (
            ("native", ["/usr/bin/python3"], tmp_path / "map.py", tmp_path / "native"),
            ("karn", [sys.executable, "-m", "karn", "run", "--root", "/", "-v",
                      f"{tmp_path}:/v", "/usr/bin/python3"], "/v/map.py", "/v/karn")):
        host_file = tmp_path / name
        host_file.write_bytes(b"one" + bytes(4093) + b"two" + bytes(4093))

        def host_writes(host_file=host_file) -> None:
            with open(host_file, "r+b") as f:
                f.write(b"NEW")
                f.seek(4096)
                f.write(b"TWO")

        lines, err, status = _interact([*prefix, str(script), str(data)], 2, host_writes)
        assert status == 0, err.decode(errors="replace")
        results[name] = (lines, host_file.read_bytes()[:3])
    assert results["native"] == ([b"first pages one two\n", b"wrote\n", b"then own TWO\n"],
                                 b"NEW")
    assert results["karn"] == results["native"]
