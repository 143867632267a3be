"""A hostile guest issuing random syscalls must never crash, hang or leak the monitor.

tests/programs/fuzz_syscalls.c issues seeded random syscalls with random arguments (what
it leaves out, and why, is at the top of that file). Several runs with different seeds
go at once (they spend part of their time blocked until the guest's watchdog signal), each
telling the test when it is at a quiet point ("READY" after a warm-up, "DONE" at the end,
nothing open but its control fds), where the test samples the monitor's RSS and host fds.

Knobs for longer runs (the defaults give 1,000,000 calls in the normal suite):
    KARN_FUZZ_CALLS=10000000 KARN_FUZZ_RUNS=4 KARN_FUZZ_SEED=7 \
        python3 -m pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TOTAL_CALLS = int(os.environ.get("KARN_FUZZ_CALLS", "1000000"))
RUNS = int(os.environ.get("KARN_FUZZ_RUNS", "4"))
FIRST_SEED = int(os.environ.get("KARN_FUZZ_SEED", "1"))
WARMUP = 20000  # calls before the first sample: lazily created monitor state exists by then
SECONDS_PER_CALL = 0.002  # a ceiling: measured 0.5 ms per call, 4 runs at once on 2 busy CPUs
FD_SLACK = 4  # host fds the monitor may hold beyond the first sample (lazy, not per call)
RSS_SLACK = 16 << 20  # the monitor's own RSS (guest memory excluded): allocator noise
DONE = re.compile(rb"DONE seed=(\d+) calls=(\d+) ok=(\d+) enosys=(\d+) efault=(\d+) "
                  rb"einval=(\d+) skipped=(\d+) weird=(\d+) signals=(\d+)")


@dataclass
class Sample:
    rss: int  # the monitor's own: its RSS minus the guest memory mapping's
    guest: int  # resident guest memory (touched by the guest; not the monitor's to leak)
    fds: list[str]


def sample(pid: int) -> Sample:
    rss, mappings, size = 0, [], 0
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            if line.startswith("Size:"):
                size = int(line.split()[1]) * 1024
            elif line.startswith("Rss:"):
                mappings.append((size, int(line.split()[1]) * 1024))
    rss = sum(r for _, r in mappings)
    guest = max(mappings)[1]  # the largest mapping: guest memory (the address-space span)
    fd_dir = f"/proc/{pid}/fd"
    fds = []
    for fd in os.listdir(fd_dir):
        try:
            fds.append(os.readlink(f"{fd_dir}/{fd}"))
        except OSError:  # closed meanwhile
            pass
    return Sample(rss - guest, guest, sorted(fds))


@dataclass
class FuzzRun:
    seed: int
    calls: int
    before: Sample | None = None
    after: Sample | None = None
    done: re.Match[bytes] | None = None
    stdout: bytes = b""
    stderr: bytearray = field(default_factory=bytearray)
    returncode: int | None = None
    problem: str = ""
    seconds: float = 0.0

    def run(self, exe: Path, deadline: float) -> None:
        cmd = [sys.executable, "-m", "karn", "run", str(exe), str(self.seed), str(self.calls),
               str(WARMUP), "sync"]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        drain = threading.Thread(target=self._drain, args=(proc.stderr,), daemon=True)
        drain.start()
        try:
            if self._expect(proc, b"READY", deadline):
                self.before = sample(proc.pid)
                proc.stdin.write(b"g")  # one byte: the guest reads one
                proc.stdin.flush()
                if self._expect(proc, b"DONE", deadline):
                    self.after = sample(proc.pid)
                    self.done = DONE.search(self.stdout)
                    proc.stdin.write(b"e")
                    proc.stdin.flush()
            self.returncode = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.problem = self.problem or "the guest did not exit after DONE"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            drain.join(timeout=5)
            self.seconds = time.monotonic() - start

    def _drain(self, pipe) -> None:  # noqa: ANN001 - a binary file
        for chunk in iter(lambda: pipe.read1(65536), b""):
            self.stderr += chunk

    def _expect(self, proc: subprocess.Popen[bytes], word: bytes, deadline: float) -> bool:
        """Read stdout until a line starting with word; False (problem set) otherwise."""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while not any(line.startswith(word) for line in self.stdout.splitlines()):
                left = deadline - time.monotonic()
                if left <= 0:
                    self.problem = f"no {word.decode()} before the deadline: hung?"
                    return False
                if not sel.select(timeout=min(left, 5.0)):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    self.problem = f"the guest ended before {word.decode()}"
                    return False
                self.stdout += chunk
        return True

    def report(self) -> str:
        err = self.stderr.decode(errors="replace").splitlines()
        notable = [line for line in err if "unimplemented syscall" not in line]
        return (f"seed {self.seed}: {self.problem or 'ran'}; exit {self.returncode}; "
                f"stdout {self.stdout[-500:]!r}\n--- stderr (notable, tail)\n"
                + "\n".join(notable[-40:]))


@pytest.mark.slow
def test_random_syscalls_never_crash_hang_or_leak_the_monitor(build):
    exe = build("fuzz_syscalls", "static")
    per_run = -(-TOTAL_CALLS // RUNS)
    runs = [FuzzRun(FIRST_SEED + i, per_run) for i in range(RUNS)]
    deadline = time.monotonic() + 60 + SECONDS_PER_CALL * (per_run + WARMUP)
    threads = [threading.Thread(target=r.run, args=(exe, deadline)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    total = 0
    for r in runs:
        assert not r.problem and r.done is not None, r.report()
        assert r.returncode == 0, r.report()
        seed, calls, ok, enosys, efault, einval, skipped, weird, _ = map(int, r.done.groups())
        assert seed == r.seed and calls == r.calls, r.report()  # issued, skipped ones aside
        # It really exercised the monitor: successes and each kind of refusal.
        assert ok > calls // 50 and efault > calls // 50 and einval > calls // 50, r.report()
        assert weird == 0, f"results that are neither >= 0 nor -errno\n{r.report()}"
        log = r.stderr.decode(errors="replace")
        assert "internal error" not in log and "Traceback" not in log, r.report()
        assert r.before is not None and r.after is not None
        grown = [fd for fd in r.after.fds if fd not in r.before.fds]
        assert len(r.after.fds) <= len(r.before.fds) + FD_SLACK, (
            f"host fds leaked: {len(r.before.fds)} -> {len(r.after.fds)}, new: {grown[:20]}")
        assert r.after.rss <= r.before.rss + RSS_SLACK, (
            f"monitor RSS grew {r.before.rss >> 20} -> {r.after.rss >> 20} MiB")
        total += calls
        mib = 1 << 20
        print(f"seed {r.seed}: {calls} calls in {r.seconds:.1f} s ({calls / r.seconds:.0f}/s, "
              f"{RUNS} at once); monitor RSS {r.before.rss // mib} -> {r.after.rss // mib} MiB "
              f"(guest {r.before.guest // mib} -> {r.after.guest // mib} MiB); host fds "
              f"{len(r.before.fds)} -> {len(r.after.fds)}")
    assert total >= TOTAL_CALLS
