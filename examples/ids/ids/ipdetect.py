"""The TIDS's IP detector: flow and talker statistics learned from normal traffic, and an
online check of each packet.

Learned: the sources that talk; the flows (source, destination, protocol, server port);
per one-second window, the most distinct server ports a source touched, the most SYNs to
one server port and the most bytes one source sent to one destination. Unknown flows are
also watched for beaconing: connections at a steady period.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from ids.busdetect import Finding
from ids.ipnet import SYN, TCP, Packet

WINDOW = 1.0  # seconds


def _flow(p: Packet) -> str:
    return f"{p.src}>{p.dst}/{p.proto}/{p.service}"


class _Window:
    """Per-window counters, reset when a packet falls in the next window."""

    def __init__(self) -> None:
        self.index = -1
        self.ports: dict[str, set[int]] = defaultdict(set)
        self.syns: dict[str, int] = defaultdict(int)
        self.bytes: dict[str, int] = defaultdict(int)

    def add(self, p: Packet) -> tuple[int, int, int]:
        i = int(p.time // WINDOW)
        if i != self.index:
            self.__init__()  # type: ignore[misc]
            self.index = i
        self.ports[p.src].add(p.service)
        syn_key = f"{p.dst}:{p.dport}"
        if p.proto == TCP and p.flags & SYN and not p.flags & 0x10:
            self.syns[syn_key] += 1
        pair = f"{p.src}>{p.dst}"
        self.bytes[pair] += p.length
        return len(self.ports[p.src]), self.syns[syn_key], self.bytes[pair]


def train(packets: list[Packet]) -> dict:
    w = _Window()
    ports = syns = volume = 0
    flows: set[str] = set()
    for p in packets:
        flows.add(_flow(p))
        a, b, c = w.add(p)
        ports, syns, volume = max(ports, a), max(syns, b), max(volume, c)
    return {"sources": sorted({p.src for p in packets}), "flows": sorted(flows),
            "max_ports": ports, "max_syns": syns, "max_bytes": volume}


class IpDetector:
    def __init__(self, model: dict) -> None:
        self.model = model
        self.sources = set(model["sources"])
        self.flows = set(model["flows"])
        self.window = _Window()
        self.unknown_starts: dict[str, list[float]] = defaultdict(list)

    def check(self, p: Packet) -> list[Finding]:
        out = []
        ports, syns, volume = self.window.add(p)
        m = self.model
        if p.src not in self.sources:
            out.append(Finding(1.0, "new-talker", f"{p.src} never sent in normal traffic"))
        flow = _flow(p)
        if flow not in self.flows:
            out.append(Finding(0.8, "new-flow", f"flow {flow} never seen in normal traffic"))
            if p.proto == TCP and p.flags & SYN and not p.flags & 0x10:
                out += self._beacon(flow, p.time)
        if ports > m["max_ports"] * 2 + 3:
            out.append(Finding(0.9, "port-scan", f"{p.src} touched {ports} ports in "
                               f"{WINDOW:g} s (normal at most {m['max_ports']})"))
        if syns > m["max_syns"] * 2 + 5:
            out.append(Finding(0.9, "syn-flood", f"{syns} SYNs to {p.dst}:{p.dport} in "
                               f"{WINDOW:g} s (normal at most {m['max_syns']})"))
        if volume > m["max_bytes"] * 1.5:
            out.append(Finding(0.9, "volume", f"{p.src} sent {volume} bytes to {p.dst} in "
                               f"{WINDOW:g} s (normal at most {m['max_bytes']}): exfiltration?"))
        return sorted(out, key=lambda f: -f.score)

    def _beacon(self, flow: str, t: float) -> list[Finding]:
        starts = self.unknown_starts[flow]
        starts.append(t)
        del starts[:-6]
        if len(starts) < 3:
            return []
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
        mean = statistics.fmean(gaps)
        if mean > 0.5 and statistics.pstdev(gaps) < 0.05 * mean:
            return [Finding(1.0, "beaconing", f"flow {flow} connects every {mean:.2f} s "
                            f"({len(starts)} times, steady): beaconing")]
        return []
