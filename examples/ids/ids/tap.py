"""Bus tap and IP tap: replay a recording into the system, at its recorded speed or
faster, one port message per minor frame (bus) or per 20 ms of capture (IP).

    python3 -m ids.tap bus RECORDING.ch10 [--speed X] [--out tids_bus,dac_bus]
    python3 -m ids.tap ip CAPTURE.pcap [--speed X]

Each frame goes to every output port (the TIDS's copy and the DAC's, both through
diodes), in chunks of at most CHUNK messages: {"s": stream, "n": frame, "last": bool,
"m": [...]}; after the last frame, {"s": stream, "end": true}.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator

from ids import ch10, ipnet
from ids.bus import MINOR_FRAME
from ids.ports import Busy, Port, chunks, encode

CHUNK = 150


def bus_frames(path: str) -> Iterator[tuple[int, float, list]]:
    frame, start, items = -1, 0.0, []
    with open(path, "rb") as f:
        for x in ch10.read(f):
            n = int(x.time / MINOR_FRAME)
            if n != frame and items:
                yield frame, start, items
                items = []
            if not items:
                frame, start = n, n * MINOR_FRAME
            items.append([round(x.time, 7), x.bus, x.kind, x.words, x.gap1, x.gap2,
                          int(x.timeout)])
    if items:
        yield frame, start, items


def ip_frames(path: str) -> Iterator[tuple[int, float, list]]:
    frame, start, items = -1, 0.0, []
    with open(path, "rb") as f:
        for p in ipnet.read_pcap(f):
            n = int(p.time / MINOR_FRAME)
            if n != frame and items:
                yield frame, start, items
                items = []
            if not items:
                frame, start = n, n * MINOR_FRAME
            items.append([round(p.time, 6), p.src, p.dst, p.proto, p.sport, p.dport, p.flags,
                          p.length])
    if items:
        yield frame, start, items


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tap")
    ap.add_argument("stream", choices=("bus", "ip"))
    ap.add_argument("recording")
    ap.add_argument("--speed", type=float, default=1.0, help="x recorded speed (0: at once)")
    ap.add_argument("--out", default="tids,dac", help="output ports, comma-separated")
    args = ap.parse_args(argv)
    outs = [Port(name, "out") for name in args.out.split(",")]
    frames = bus_frames if args.stream == "bus" else ip_frames
    began = time.monotonic()
    sent = 0
    writes = Writes()
    busy = Busy()  # the time not spent waiting for the recording's clock
    recording = frames(args.recording)
    while True:
        with busy:
            frame = next(recording, None)
        if frame is None:
            break
        n, start, items = frame
        if args.speed > 0:
            delay = began + start / args.speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        with busy:
            pieces = chunks(items, CHUNK)
            for i, piece in enumerate(pieces):
                data = encode({"s": args.stream, "n": n, "last": i == len(pieces) - 1,
                               "m": piece, "at": time.monotonic_ns() // 1000})  # host's clock, us
                for port in outs:
                    writes.send(port, data)
        busy.count(args.stream, len(items))
        sent += len(items)
    for port in outs:
        writes.send(port, encode({"s": args.stream, "end": True}))
    # What the tap itself observed, first without timing (the same whatever happens
    # beyond its diodes), then the timing.
    print(f"{args.stream} tap: replayed {sent} messages: {writes.count} writes, "
          f"{writes.complete} complete, {writes.bytes} bytes", flush=True)
    print(f"{args.stream} tap: took {time.monotonic() - began:.1f} s, sent {busy}; "
          f"slowest write {writes.slowest * 1e6:.0f} us", flush=True)
    return 0


class Writes:
    """Every port write's result and the longest one took."""

    def __init__(self) -> None:
        self.count = self.complete = self.bytes = 0
        self.slowest = 0.0

    def send(self, port: Port, data: bytes) -> None:
        t0 = time.monotonic()
        took = port.write(data)
        self.slowest = max(self.slowest, time.monotonic() - t0)
        self.count += 1
        self.complete += took == len(data)
        self.bytes += took


if __name__ == "__main__":
    sys.exit(main())
