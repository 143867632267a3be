#!/usr/bin/env python3
"""The channel's own cost, without the guests: the ports' monitor-side code (SourcePort and
DestPort of karn/kernel/fs/ports.py, the rings of karn/kernel/fs/ring.py) in two host
processes, as the supervisor sets them up (karn/system/channels.py), through a plain
queuing channel, a diode, a queuing channel with a guard (the sender held back by the
guard: its capacity), and a diode + guard (with its guard process; what a sender faster
than the guard loses).

    python3 bench/channels.py [--count N] [--runs R] [--guests | --guests-only]
                              [--channels diode,...] [--sizes 64,...] [--offer MSG_S]
                              [--mapped] [--depth N]

Throughput: the sender writes N messages as fast as it can; the receiver (blocking on the
port's fd as a monitor does) times first to last. Latency: ping-pong over two channels,
half the median round trip. With --guests, the same channels between real partitions
(guests of tests/programs/sys_ports.c under `karn system up`, bench/system.py's
harness) side by side; --mapped makes the guests map their rings (karn/guest/
karn_port.h: no system call per message) and send N messages instead of N/4. Medians of R
runs.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # karn, installed or not

from karn.kernel.fs.ports import DestPort, SourcePort  # noqa: E402
from karn.system.channels import ChannelRun  # noqa: E402
from karn.system.description import Channel, Port  # noqa: E402
from karn.system.guards import Guard  # noqa: E402
from karn.system.partition import guard_command, spawn  # noqa: E402


def guard() -> Guard:
    g = Guard("g")
    g.max_size, g.allow, g.deny = 65536, "^\\{.*\\}$", ["drop table", "rm -rf"]
    g.schema = {"type": "object", "required": ["v"], "properties": {"v": {"type": "string"}}}
    return g


def message(size: int) -> bytes:
    return b'{"v":"' + b"x" * (size - 8) + b'"}'


class Link:
    """One channel a -> b, its guard process running if it has a guard."""

    def __init__(self, size: int, diode: bool, guarded: bool, depth: int = 64) -> None:
        src = Port("a", "out", "out", "queuing", size, depth, 0.0)
        dst = Port("b", "in", "in", "queuing", size, depth, 0.0)
        self.run = ChannelRun(Channel(src, dst, diode, guard() if guarded else None, size),
                              lambda _line: None)
        self.mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.out, _ = self.run.endpoint(src, -1)
        self.into, _ = self.run.endpoint(dst, theirs.fileno())
        self.theirs = theirs
        self.guard_proc: subprocess.Popen | None = None
        if guarded:
            g_mine, g_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            into, out, fds = self.run.guard_ends(g_theirs.fileno())
            self.guard_proc, _ = spawn(guard_command(into, out), fds, ".")
            self.keep = (g_mine, g_theirs)

    def close(self) -> None:
        if self.guard_proc is not None:
            self.guard_proc.kill()
            self.guard_proc.wait()


def ready(fd: int, events: int, timeout: float | None = None) -> bool:
    """poll, not select: the runs leave fds open and their numbers pass select's 1024."""
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(None if timeout is None else timeout * 1000))


def receive(dest: DestPort) -> bytes:
    while True:
        data = dest.next_queued()
        if data is not None:
            return data
        ready(dest.epoll.fileno(), select.POLLIN)


def send(source: SourcePort, data: bytes) -> None:
    while source.page is not None and source.full():
        ready(source.ready, select.POLLOUT)
    source.send(data)


def throughput(size: int, count: int, diode: bool, guarded: bool, offer: float = 0.0
               ) -> tuple[float, int]:
    """offer: messages/s the sender of a diode paces itself to (0: as fast as it can, and
    the receiver's rate is only what it caught of a burst)."""
    link = Link(size, diode, guarded)
    pid = os.fork()
    if pid == 0:  # the receiver
        dest = DestPort(link.into)
        got, first = 0, 0.0
        deadline = None
        while got < count:
            data = dest.next_queued()
            if data is None:
                if not ready(dest.epoll.fileno(), select.POLLIN, 1.0 if got else 60):
                    break
                continue
            got += 1
            if got == 1:
                first = time.perf_counter()
            deadline = time.perf_counter()
        os.write(w, f"{got} {(deadline or first) - first}".encode())
        os._exit(0)
    source = SourcePort(link.out)
    data = message(size)
    start = time.perf_counter()
    for i in range(count):
        if diode and offer:
            while (late := i / offer - (time.perf_counter() - start)) > 0:
                time.sleep(max(late, 0.0005))  # paced in small bursts (the ring holds
                # them), not by spinning: the sender's spin would take a core from the guard
        send(source, data) if not diode else source.send(data)
    os.waitpid(pid, 0)
    got, secs = os.read(r, 100).split()
    link.close()
    return (int(got) - 1) / float(secs) if float(secs) > 0 else 0.0, count - int(got)


def latency(size: int, diode: bool, guarded: bool, count: int) -> float:
    there, back = Link(size, diode, guarded), Link(size, diode, False)
    pid = os.fork()
    if pid == 0:  # the echo
        into, out = DestPort(there.into), SourcePort(back.out)
        for _ in range(count):
            send(out, receive(into))
        os._exit(0)
    into, out = DestPort(back.into), SourcePort(there.out)
    data, rtts = message(size), []
    for _ in range(count):
        t0 = time.perf_counter()
        send(out, data)
        receive(into)
        rtts.append(time.perf_counter() - t0)
    os.waitpid(pid, 0)
    there.close()
    back.close()
    return statistics.median(rtts) / 2 * 1e6


r, w = os.pipe()


CHANNELS = (("queuing", False, False), ("diode", True, False), ("queuing + guard", False, True),
            ("diode + guard", True, True))
SIZES = (64, 1024, 61440)


def monitors(size: int, diode: bool, guarded: bool, count: int, offer: float = 0.0
             ) -> tuple[float, int, float]:
    """(messages/s, dropped, one-way µs) between two host processes."""
    rate, dropped = throughput(size, count, diode, guarded, offer)
    return rate, dropped, latency(size, diode, guarded, min(count, 2000))


def guests(bench: object, size: int, diode: bool, guarded: bool, count: int,
           mapped: bool = False, offer: float = 0.0, depth: int = 64
           ) -> tuple[float, int, float]:
    """(messages/s, dropped, one-way µs) between two partitions' guests (mapped: through
    karn/guest/karn_port.h instead of write() and read())."""
    rate, _mbps, dropped = bench.throughput(  # type: ignore[attr-defined]
        size, count, diode, guarded, mapped, offer, depth)
    return rate, dropped, bench.latency(size, diode, guarded, mapped)  # type: ignore[attr-defined]


def medians(runs: list[tuple[float, int, float]]) -> tuple[float, int, float]:
    return (statistics.median(r[0] for r in runs), int(statistics.median(r[1] for r in runs)),
            statistics.median(r[2] for r in runs))


def cell(m: tuple[float, int, float]) -> str:
    rate, dropped, lat = m
    places = 1 if lat < 10 else 0  # a mapped ring's sub-µs latency
    return f"{lat:,.{places}f} µs / {rate:,.0f}" + (f" ({dropped:,} dropped)" if dropped else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=1, help="runs per figure (median)")
    parser.add_argument("--guests", action="store_true", help="also between real guests")
    parser.add_argument("--guests-only", action="store_true",
                        help="only between real guests (no monitors-only column)")
    parser.add_argument("--channels", default=",".join(label for label, *_ in CHANNELS),
                        help="comma-separated channel labels (default: all)")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="comma-separated message sizes (default: all)")
    parser.add_argument("--offer", type=float, default=0.0,
                        help="a sender paced to this many msg/s")
    parser.add_argument("--depth", type=int, default=64,
                        help="guests: the receiving port's depth for throughput (default 64)")
    parser.add_argument("--mapped", action="store_true",
                        help="guests map their rings (karn/guest/karn_port.h)")
    args = parser.parse_args()
    bench, work = None, None
    labels, sizes = args.channels.split(","), [int(n) for n in args.sizes.split(",")]
    if args.guests or args.guests_only:
        import tempfile

        from system import Bench  # bench/system.py

        work = Path(tempfile.mkdtemp(prefix="kbc-", dir="/tmp"))  # short: socket paths
        bench = Bench(work)
    head = "| channel | size |" + ("" if args.guests_only else
                                       " monitors only: one way / msg/s |")
    print(head + (" guests: one way / msg/s |" if bench else ""))
    print("| --- | ---: |" + ("" if args.guests_only else " ---: |") + (" ---: |" if bench else ""))
    try:
        for label, diode, guarded in CHANNELS:
            for size in SIZES:
                if label not in labels or size not in sizes:
                    continue
                count = args.count if size < 61440 else args.count // 10
                row = f"| {label} | {size} |"
                if not args.guests_only:
                    row += " " + cell(medians([monitors(size, diode, guarded, count,
                                                        args.offer)
                                               for _ in range(args.runs)])) + " |"
                if bench is not None:
                    row += " " + cell(medians([guests(bench, size, diode, guarded,
                                                      count if args.mapped else count // 4,
                                                      args.mapped, args.offer, args.depth)
                                               for _ in range(args.runs)])) + " |"
                print(row, flush=True)
    finally:
        if work is not None:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
