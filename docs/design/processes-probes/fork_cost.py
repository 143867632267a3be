"""Probe for issue 15: what a host fork of a Python monitor costs, by resident size and
with threads alive; a pipe between two forked processes (latency, throughput).

Run:  PYTHONPATH=$PWD python3 docs/design/processes-probes/fork_cost.py
"""

from __future__ import annotations

import mmap
import os
import statistics
import threading
import time

import karn.kernel.threads  # noqa: F401 - a monitor's import footprint
import karn.platform.vcpu  # noqa: F401

MADV_HUGEPAGE = 14


def fork_wait_ms(n: int = 15) -> float:
    """Median of fork + child _exit + waitpid, in the parent."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def fork_only_ms(n: int = 15) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        times.append(time.perf_counter() - t)
        os.waitpid(pid, 0)
    return statistics.median(times) * 1e3


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * mmap.PAGESIZE / (1 << 20)


def touched(mib: int, thp: bool) -> mmap.mmap:
    m = mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000)
    if thp:
        m.madvise(MADV_HUGEPAGE)
    for off in range(0, mib << 20, 4096):
        m[off] = 1
    return m


def pipe_pingpong(rounds: int = 2000) -> tuple[float, float]:
    """Round trip of 1 byte between two forked processes; MiB/s of 64 KiB writes."""
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        for _ in range(rounds):
            os.write(b_w, os.read(a_r, 1))
        total = 0
        while total < 256 << 20:
            n = len(os.read(a_r, 1 << 16))
            total += n
        os._exit(0)
    t = time.perf_counter()
    for _ in range(rounds):
        os.write(a_w, b"x")
        os.read(b_r, 1)
    rtt = (time.perf_counter() - t) / rounds * 1e6
    chunk = b"y" * (1 << 16)
    t = time.perf_counter()
    sent = 0
    while sent < 256 << 20:
        sent += os.write(a_w, chunk)
    os.waitpid(pid, 0)
    mibs = 256 / (time.perf_counter() - t)
    for fd in (a_r, a_w, b_r, b_w):
        os.close(fd)
    return rtt, mibs


def main() -> None:
    print(f"python+karn imports: rss {rss_mib():.0f} MiB, fork+exit+wait "
          f"{fork_wait_ms():.2f} ms, fork alone {fork_only_ms():.2f} ms")
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    print(f"  + 8 idle threads: fork alone {fork_only_ms():.2f} ms")
    stop.set()
    for thp in (False, True):
        m = touched(200, thp)
        print(f"  + 200 MiB touched (THP {thp}): rss {rss_mib():.0f} MiB, fork alone "
              f"{fork_only_ms(7):.2f} ms")
        m.close()
    rtt, mibs = pipe_pingpong()
    print(f"pipe between forked processes: round trip {rtt:.1f} us, {mibs:.0f} MiB/s")


if __name__ == "__main__":
    main()
