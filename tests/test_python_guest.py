"""Debian's dynamically linked /usr/bin/python3 and its standard library under karn.

Run as `karn run --root / /usr/bin/python3 -c SCRIPT` (the host root, read-only) and
compared with the same interpreter running the same script natively. (Running it from an
image comes with the images work.)
"""

from __future__ import annotations

import os
import subprocess
import textwrap

import pytest

PYTHON = "/usr/bin/python3"

SCRIPTS: dict[str, str] = {
    "json": """
        import json
        doc = {"name": "karn", "list": [1, 2.5, None, True], "nested": {"é": "ü" * 3}}
        text = json.dumps(doc, sort_keys=True, indent=1)
        print(text)
        print(json.loads(text) == doc, json.dumps(json.loads('[1e400, -0.0]')))
    """,
    "hashlib": """
        import hashlib, zlib, base64
        data = bytes(range(256)) * 1000
        for name in ("md5", "sha1", "sha256", "sha512", "blake2b", "sha3_256"):
            print(name, hashlib.new(name, data).hexdigest())
        print("crc32", zlib.crc32(data), len(zlib.compress(data, 9)))
        print(base64.b64encode(hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", 1000)).decode())
    """,
    "re": """
        import re
        text = "alpha=1, beta=22; gamma = 333 delta=x"
        print(re.findall(r"(\\w+)\\s*=\\s*(\\d+)", text))
        print(re.sub(r"\\d+", lambda m: str(int(m.group()) * 2), text))
        print(bool(re.fullmatch(r"[a-z]+(?:-[a-z]+)*", "well-formed-name")))
        print(re.split(r"[,;]\\s*", text))
    """,
    "sqlite3": """
        import sqlite3
        db = sqlite3.connect(":memory:")
        db.execute("create table t (id integer primary key, name text, score real)")
        db.executemany("insert into t (name, score) values (?, ?)",
                       [(f"n{i}", i * 1.5) for i in range(1000)])
        print(db.execute("select count(*), sum(score), max(name) from t").fetchone())
        print(db.execute("select name from t where id % 250 = 0 order by id").fetchall())
        print(sqlite3.sqlite_version_info >= (3, 0, 0))
    """,
    "threading": """
        import threading
        counter = 0
        lock = threading.Lock()
        results = [None] * 8
        barrier = threading.Barrier(8)
        def work(i):
            global counter
            barrier.wait()
            total = 0
            for j in range(4000):
                total += j * i
                with lock:
                    counter += 1
            results[i] = total
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(counter, results, threading.active_count())
        cond = threading.Condition()
        box = []
        def producer():
            for i in range(100):
                with cond:
                    box.append(i)
                    cond.notify()
        t = threading.Thread(target=producer)
        t.start()
        got = 0
        while got < 100:
            with cond:
                cond.wait_for(lambda: box)
                got += len(box)
                box.clear()
        t.join()
        print("condition", got)
    """,
    "queue": """
        import queue, threading
        q = queue.Queue(maxsize=10)
        out = queue.SimpleQueue()
        def consumer():
            while (item := q.get()) is not None:
                out.put(item * item)
                q.task_done()
            q.task_done()
        workers = [threading.Thread(target=consumer) for _ in range(4)]
        for w in workers:
            w.start()
        for i in range(500):
            q.put(i)
        for _ in workers:
            q.put(None)
        q.join()
        for w in workers:
            w.join()
        values = sorted(out.get() for _ in range(out.qsize()))
        print(len(values), sum(values))
        try:
            queue.Queue().get(timeout=0.05)
        except queue.Empty:
            print("empty after timeout")
    """,
    "threadpool": """
        from multiprocessing.pool import ThreadPool
        import hashlib
        def digest(i):
            return hashlib.sha256(str(i).encode() * 1000).hexdigest()[:8]
        with ThreadPool(4) as pool:
            print(pool.map(digest, range(40)))
            print(sorted(pool.imap_unordered(lambda x: x * x, range(20))))
            r = pool.apply_async(sum, ([1, 2, 3],))
            print(r.get(timeout=10))
    """,
    "signals": """
        import signal, os, threading, time
        got = []
        signal.signal(signal.SIGUSR1, lambda s, f: got.append(signal.Signals(s).name))
        signal.signal(signal.SIGTERM, lambda s, f: got.append("term"))
        signal.raise_signal(signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
        print(got)
        print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            print("KeyboardInterrupt")
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
        signal.signal(signal.SIGUSR2, lambda s, f: got.append("usr2"))
        os.kill(os.getpid(), signal.SIGUSR2)
        print("pending", signal.SIGUSR2 in signal.sigpending(), got)
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        print(got)
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1)).start()
        time.sleep(1)  # interrupted by the handler, then resumed (PEP 475)
        print(got)
    """,
    "sleep": """
        import time
        t0 = time.monotonic()
        time.sleep(0.2)
        dt = time.monotonic() - t0
        print("slept at least 0.2 s:", dt >= 0.2, "and not 10x more:", dt < 2)
        drift = abs(time.time() - time.clock_gettime(time.CLOCK_REALTIME))
        print(time.gmtime(0).tm_year, drift < 5)
        print(time.perf_counter() > 0, time.process_time() >= 0, time.thread_time() >= 0)
    """,
    "traceback": """
        def inner(x):
            return {"a": 1}[x]
        def outer():
            return inner("missing")
        print("before", flush=True)
        outer()
    """,
}


def run_both(karn, native, script: str):
    code = textwrap.dedent(script)
    expected = native(PYTHON, "-c", code)
    got = karn("--root", "/", PYTHON, "-c", code, timeout=90)
    return expected, got


@pytest.fixture(scope="module", autouse=True)
def debian_python() -> None:
    if not os.access(PYTHON, os.X_OK):
        pytest.fail(f"{PYTHON} missing (apt-get install python3)", pytrace=False)
    check = subprocess.run([PYTHON, "-c", "import sqlite3"], capture_output=True)
    if check.returncode:
        pytest.fail(f"{PYTHON} cannot import sqlite3: {check.stderr.decode()}", pytrace=False)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n == "threading" else n
    for n in SCRIPTS if n != "traceback"
])
def test_python_stdlib(name, karn, native, same):
    expected, got = run_both(karn, native, SCRIPTS[name])
    assert expected.returncode == 0, expected.stderr.decode()
    same(expected, got, f"python3 {name}")


def test_python_uncaught_exception_traceback(karn, native, same):
    expected, got = run_both(karn, native, SCRIPTS["traceback"])
    assert expected.returncode == 1
    same(expected, got, "uncaught exception")
    want = expected.stderr.decode()
    err = got.stderr.decode(errors="replace")
    assert want.startswith("Traceback (most recent call last):"), want
    assert err == want, f"traceback differs:\nnative:\n{want}\nkarn:\n{err}"
