"""Memory shared between processes (issue 15): MAP_SHARED memory stays shared after fork
(platform/memory.py), futexes on it work across processes (kernel/futex.py), and
Python's multiprocessing runs as natively. Each process is its own monitor and VM, so
all of this crosses host processes. Compared with native runs."""

from __future__ import annotations

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
