"""The demonstration data: a model trained on normal traffic, and recordings with one
episode of each attack type at known times, written as the system reads them.

    python3 -m ids.scenario DIR [--bus-seconds S] [--ip-seconds S] [--seed N]

DIR gets model.json (the TIDS's model), bus.ch10 (Chapter 10), bus.csv (the same with
labels), ip.pcap and ip.csv (the packets' labels), episodes.json (each attack's window).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
from datetime import datetime

from ids import attacks1553, bus, busdetect, ch10, csvlog, ipdetect, ipnet
from ids.evaluate import TRAIN_SEED


def model() -> dict:
    return {"bus": busdetect.train(bus.BusController(TRAIN_SEED).run(300)),
            "ip": ipdetect.train(ipnet.generate(600, TRAIN_SEED)[0])}


def bus_recording(seconds: float, seed: int, attacks: tuple[str, ...]
                  ) -> tuple[list, list[dict]]:
    """Normal traffic with one 1.5 s episode of each attack, evenly spread after 3 s."""
    msgs = bus.BusController(seed).run(seconds)
    rng = random.Random(seed)
    span = (seconds - 3.0) / len(attacks)
    episodes = []
    for i, attack in enumerate(attacks):
        start = 3.0 + i * span + rng.uniform(0, max(0.0, span - 2.5))
        msgs = attacks1553.INJECTORS[attack](msgs, rng, start, start + 1.5)
        episodes.append({"stream": "bus", "attack": attack, "start": start, "end": start + 1.5})
    msgs.sort(key=lambda x: x.time)
    return msgs, episodes


def ip_recording(seconds: float, seed: int, attacks: tuple[str, ...]
                 ) -> tuple[list, list[dict]]:
    gen = ipnet.Generator(seed)
    gen.normal(seconds)
    span = (seconds - 3.0) / len(attacks)
    episodes = []
    for i, attack in enumerate(attacks):
        start = 3.0 + i * span
        end = getattr(gen, attack)(start)
        episodes.append({"stream": "ip", "attack": attack, "start": start, "end": end})
    return gen.packets(), episodes


def write(directory: str, bus_seconds: float, ip_seconds: float, seed: int,
          bus_attacks: tuple[str, ...] = attacks1553.ATTACKS,
          ip_attacks: tuple[str, ...] = ("port_scan", "syn_flood", "new_talker",
                                         "exfiltration")) -> list[dict]:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "model.json"), "w") as f:
        json.dump(model(), f)
    msgs, episodes = bus_recording(bus_seconds, seed, bus_attacks)
    with open(os.path.join(directory, "bus.ch10"), "wb") as f:
        ch10.write(f, msgs, datetime(2026, 12, 2, 12, 0, 0))
    with open(os.path.join(directory, "bus.csv"), "w", newline="") as f:
        csvlog.write(f, msgs)
    packets, ip_episodes = ip_recording(ip_seconds, seed, ip_attacks)
    t0 = packets[0].time
    with open(os.path.join(directory, "ip.pcap"), "wb") as f:
        ipnet.write_pcap(f, packets)
    with open(os.path.join(directory, "ip.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time", "src", "dst", "dport", "label"])
        for p in packets:  # times as the pcap reader gives them: from the first packet
            w.writerow([f"{p.time - t0:.6f}", p.src, p.dst, p.dport, p.label])
    for e in ip_episodes:
        e["start"], e["end"] = e["start"] - t0, e["end"] - t0
    episodes += ip_episodes
    with open(os.path.join(directory, "episodes.json"), "w") as f:
        json.dump(episodes, f, indent=1)
    return episodes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scenario")
    ap.add_argument("directory")
    ap.add_argument("--bus-seconds", type=float, default=40)
    ap.add_argument("--ip-seconds", type=float, default=40)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    for e in write(args.directory, args.bus_seconds, args.ip_seconds, args.seed):
        print(f"{e['stream']:3} {e['attack']:16} {e['start']:7.3f}-{e['end']:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
