"""IP traffic of the platform's network: a seeded generator of normal traffic with
seeded attacks, and pcap files of it (written and read with dpkt).

A packet is summarised as what the TIDS and DAC look at: time, addresses, protocol,
ports, TCP flags, IP length, and (from the generator only) its ground-truth label.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

TCP, UDP = 6, 17
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
MISSION, DISPLAY1, DISPLAY2, RADAR, LAPTOP, NTP, DNS = (
    "10.1.0.10", "10.1.0.11", "10.1.0.12", "10.1.0.20", "10.1.0.30", "10.1.0.5", "10.1.0.6")
UPDATES = "203.0.113.50"  # an outside server the laptop talks to
IP_ATTACKS = ("port_scan", "syn_flood", "new_talker", "exfiltration", "beaconing")


@dataclass
class Packet:
    time: float
    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    flags: int  # TCP flags (0 for UDP)
    length: int  # IP total length
    label: str = "normal"

    @property
    def service(self) -> int:
        """The server's port: the one that is not ephemeral."""
        return self.dport if self.dport < 32768 else self.sport


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.out: list[Packet] = []

    def _ephemeral(self) -> int:
        return self.rng.randint(32768, 60999)

    def udp_periodic(self, src: str, dst: str, port: int, hz: float, size: int, t0: float,
                     t1: float) -> None:
        sport, t = self._ephemeral(), t0 + self.rng.random() / hz
        while t < t1:
            self.out.append(Packet(t, src, dst, UDP, sport, port, 0,
                                   size + self.rng.randint(-16, 16)))
            t += 1 / hz * (1 + self.rng.gauss(0, 0.01))

    def udp_query(self, src: str, dst: str, port: int, t: float, label: str = "normal"
                  ) -> None:
        sport = self._ephemeral()
        self.out.append(Packet(t, src, dst, UDP, sport, port, 0, 60, label))
        self.out.append(Packet(t + 0.001, dst, src, UDP, port, sport, 0, 120, label))

    def tcp_session(self, client: str, server: str, port: int, t: float, segments: int,
                    size: int, label: str = "normal", gap: float = 0.01) -> float:
        sport = self._ephemeral()
        up = (client, server, TCP, sport, port)
        down = (server, client, TCP, port, sport)
        seq = [(up, SYN, 60), (down, SYN | ACK, 60), (up, ACK, 52)]
        for i in range(segments):
            seq.append((up if i % 2 == 0 else down, PSH | ACK, size))
        seq += [(up, FIN | ACK, 52), (down, FIN | ACK, 52), (up, ACK, 52)]
        for (src, dst, proto, sp, dp), flags, length in seq:
            self.out.append(Packet(t, src, dst, proto, sp, dp, flags, length, label))
            t += gap * (0.5 + self.rng.random())
        return t

    def normal(self, seconds: float) -> None:
        rng = self.rng
        self.udp_periodic(RADAR, MISSION, 5000, 20, 512, 0, seconds)
        self.udp_periodic(MISSION, DISPLAY1, 6000, 10, 256, 0, seconds)
        self.udp_periodic(MISSION, DISPLAY2, 6000, 10, 256, 0, seconds)
        t = rng.random() * 16
        while t < seconds:
            self.udp_query(MISSION, NTP, 123, t)
            t += 16
        for client, rate in ((DISPLAY1, 0.2), (DISPLAY2, 0.2), (LAPTOP, 0.3)):
            t = rng.expovariate(rate)
            while t < seconds:
                self.udp_query(client, DNS, 53, t)
                t += rng.expovariate(rate)
        for client, server, port, rate, segs, size in (
                (LAPTOP, MISSION, 22, 0.05, (10, 40), 120), (DISPLAY1, MISSION, 443, 0.2, (2, 8),
                                                             600),
                (DISPLAY2, MISSION, 443, 0.2, (2, 8), 600),
                (LAPTOP, UPDATES, 443, 0.05, (4, 20), 1400)):
            t = rng.expovariate(rate)
            while t < seconds:
                self.tcp_session(client, server, port, t, rng.randint(*segs), size)
                t += rng.expovariate(rate)

    # ---- attacks: each adds one episode starting at t0 -----------------------------------

    def port_scan(self, t0: float) -> float:
        attacker = self.rng.choice((LAPTOP, DISPLAY2))
        target = self.rng.choice((MISSION, RADAR))
        t, sport = t0, self._ephemeral()
        for port in self.rng.sample(range(1, 10000), self.rng.randint(60, 200)):
            self.out.append(Packet(t, attacker, target, TCP, sport, port, SYN, 44, "port_scan"))
            self.out.append(Packet(t + 0.0002, target, attacker, TCP, port, sport, RST | ACK,
                                   40, "port_scan"))
            t += self.rng.uniform(0.002, 0.01)
        return t

    def syn_flood(self, t0: float) -> float:
        t = t0
        while t < t0 + 1.0:
            src = f"198.18.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"
            self.out.append(Packet(t, src, MISSION, TCP, self._ephemeral(), 443, SYN, 44,
                                   "syn_flood"))
            t += self.rng.expovariate(800)
        return t

    def new_talker(self, t0: float) -> float:
        host = f"10.1.0.{self.rng.randint(100, 200)}"
        t = t0
        for _ in range(self.rng.randint(1, 3)):
            t = self.tcp_session(host, MISSION, self.rng.choice((22, 443)), t,
                                 self.rng.randint(2, 6), 300, "new_talker") + 0.2
        return t

    def exfiltration(self, t0: float) -> float:
        return self.tcp_session(LAPTOP, UPDATES, 443, t0, self.rng.randint(1500, 3000), 1400,
                                "exfiltration", gap=0.0008)

    def beaconing(self, t0: float) -> float:
        c2 = f"192.0.2.{self.rng.randint(1, 254)}"
        period = self.rng.uniform(2, 6)
        t = t0
        for _ in range(6):
            self.tcp_session(DISPLAY2, c2, 8443, t, 2, 80, "beaconing")
            t += period * (1 + self.rng.gauss(0, 0.005))
        return t

    def packets(self) -> list[Packet]:
        return sorted(self.out, key=lambda p: p.time)


def generate(seconds: float, seed: int, attack: str | None = None, episodes: int = 0,
             *, warmup: float = 10.0) -> tuple[list[Packet], list[tuple[float, float]]]:
    """Normal traffic for `seconds`, plus `episodes` episodes of one attack; returns the
    packets in time order and each episode's (start, end)."""
    gen = Generator(seed)
    gen.normal(seconds)
    windows = []
    if attack:
        span = (seconds - warmup) / max(episodes, 1)
        for i in range(episodes):
            start = warmup + i * span + gen.rng.uniform(0, span * 0.2)
            end = getattr(gen, attack)(start)
            if end > warmup + (i + 1) * span:
                raise ValueError(f"recording too short for {episodes} episodes of {attack}")
            windows.append((start, end))
    return gen.packets(), windows


# ---- pcap ---------------------------------------------------------------------------------

MAC_A, MAC_B = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"


def write_pcap(out: BinaryIO, packets: Iterable[Packet], start: float = 1.79e9) -> None:
    """Ethernet/IPv4/TCP-or-UDP frames with zero payloads, timestamped start + time."""
    import dpkt

    writer = dpkt.pcap.Writer(out)
    for p in packets:
        header = 20 if p.proto == TCP else 8
        payload = b"\0" * max(0, p.length - 20 - header)
        if p.proto == TCP:
            l4: dpkt.Packet = dpkt.tcp.TCP(sport=p.sport, dport=p.dport, flags=p.flags,
                                           data=payload)
        else:
            l4 = dpkt.udp.UDP(sport=p.sport, dport=p.dport, data=payload)
            l4.ulen = len(l4)
        ip = dpkt.ip.IP(src=socket.inet_aton(p.src), dst=socket.inet_aton(p.dst), p=p.proto,
                        data=l4, ttl=64)
        ip.len = len(ip)
        writer.writepkt(bytes(dpkt.ethernet.Ethernet(src=MAC_A, dst=MAC_B, data=ip)),
                        ts=start + p.time)


def read_pcap(src: BinaryIO) -> Iterator[Packet]:
    """The IPv4 TCP and UDP packets of a pcap file, timed from its first packet."""
    import dpkt

    t0: float | None = None
    for ts, frame in dpkt.pcap.Reader(src):
        t0 = ts if t0 is None else t0
        eth = dpkt.ethernet.Ethernet(frame)
        ip = eth.data
        if not isinstance(ip, dpkt.ip.IP) or not isinstance(ip.data, dpkt.tcp.TCP | dpkt.udp.UDP):
            continue
        l4 = ip.data
        yield Packet(float(ts - t0), socket.inet_ntoa(ip.src), socket.inet_ntoa(ip.dst), ip.p,
                     l4.sport, l4.dport, l4.flags if ip.p == TCP else 0, ip.len)
