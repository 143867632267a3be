"""Detection and false-positive rates per attack type on labeled, seeded data.

For each attack type: several recordings (their own seeds) of normal traffic with
episodes of that attack, checked by a detector trained on a separate normal recording.
An episode is detected when at least one message it produced or changed is flagged; the
false-positive rate is the share of normal messages flagged outside the episodes (and
the GRACE seconds after each) in the same recordings. Normal messages flagged during an
episode (a flood makes every message's window look crowded) are counted apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from ids import attacks1553, bus, busdetect, ipdetect, ipnet

TRAIN_SEED = 1000
GRACE = 1.0  # seconds after an episode whose normal messages are not counted as false alarms
TARGET_DETECTION, TARGET_FP = 0.95, 0.01


@dataclass
class Row:
    attack: str
    episodes: int
    detected: int
    attack_messages: int
    attack_flagged: int
    normal_messages: int
    normal_flagged: int  # outside the episodes: false positives
    collateral: int = 0  # normal messages flagged during an episode (e.g. in a flood)

    @property
    def detection_rate(self) -> float:
        return self.detected / self.episodes

    @property
    def fp_rate(self) -> float:
        return self.normal_flagged / self.normal_messages

    @property
    def meets_target(self) -> bool:
        return self.detection_rate >= TARGET_DETECTION and self.fp_rate <= TARGET_FP


def _score(attack: str, items: Sequence, flags: Sequence[bool],
           windows: list[tuple[float, float]]) -> Row:
    detected = sum(1 for t0, t1 in windows
                   if any(f and x.label == attack and t0 <= x.time <= t1 + GRACE
                          for x, f in zip(items, flags, strict=True)))
    def inside(t: float) -> bool:
        return any(t0 <= t <= t1 + GRACE for t0, t1 in windows)

    normal = [(f, inside(x.time)) for x, f in zip(items, flags, strict=True)
              if x.label == "normal"]
    hit = [f for x, f in zip(items, flags, strict=True) if x.label == attack]
    return Row(attack, len(windows), detected, len(hit), sum(hit),
               sum(1 for _, i in normal if not i), sum(1 for f, i in normal if f and not i),
               sum(1 for f, i in normal if f and i))


def bus_model(seconds: float = 300) -> dict:
    return busdetect.train(bus.BusController(TRAIN_SEED).run(seconds))


def ip_model(seconds: float = 600) -> dict:
    return ipdetect.train(ipnet.generate(seconds, TRAIN_SEED)[0])


def bus_row(model: dict, attack: str, seeds: range, seconds: float, episodes: int) -> Row:
    rows = []
    for seed in seeds:
        msgs, windows = attacks1553.inject(bus.BusController(seed).run(seconds), attack,
                                           seed, episodes)
        det = busdetect.BusDetector(model)
        flags = [_flag(det.check(x)) for x in msgs]
        rows.append(_score(attack, msgs, flags, windows))
    return _sum(attack, rows)


def _flag(findings: list) -> bool:
    return bool(findings) and findings[0].score >= busdetect.THRESHOLD


def ip_row(model: dict, attack: str, seeds: range, seconds: float, episodes: int) -> Row:
    rows = []
    for seed in seeds:
        packets, windows = ipnet.generate(seconds, seed, attack, episodes)
        det = ipdetect.IpDetector(model)
        rows.append(_score(attack, packets, [_flag(det.check(p)) for p in packets], windows))
    return _sum(attack, rows)


def _sum(attack: str, rows: list[Row]) -> Row:
    total = Row(attack, 0, 0, 0, 0, 0, 0)
    for r in rows:
        for field in ("episodes", "detected", "attack_messages", "attack_flagged",
                      "normal_messages", "normal_flagged", "collateral"):
            setattr(total, field, getattr(total, field) + getattr(r, field))
    return total


def table(rows: list[Row]) -> str:
    lines = ["| attack | episodes | detected | detection rate | attack messages flagged | "
             "false positives | FP rate | normal flagged during episodes | target met |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r.attack} | {r.episodes} | {r.detected} | {r.detection_rate:.1%} | "
                     f"{r.attack_flagged}/{r.attack_messages} | "
                     f"{r.normal_flagged}/{r.normal_messages} | {r.fp_rate:.3%} | {r.collateral} | "
                     f"{'yes' if r.meets_target else 'no'} |")
    return "\n".join(lines)


def evaluate(seeds: int = 5, bus_seconds: float = 60, ip_seconds: float = 200,
             progress: Callable[[str], None] = lambda s: None) -> list[Row]:
    rows = []
    model = bus_model()
    for attack in attacks1553.ATTACKS:
        rows.append(bus_row(model, attack, range(1, seeds + 1), bus_seconds, 4))
        progress(attack)
    model = ip_model()
    for attack in ipnet.IP_ATTACKS:
        rows.append(ip_row(model, attack, range(1, seeds + 1), ip_seconds,
                           2 if attack == "beaconing" else 4))
        progress(attack)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = evaluate(args.seeds, progress=lambda a: print(f"  {a} done", file=sys.stderr))
    if args.json:
        print(json.dumps([asdict(r) | {"detection_rate": r.detection_rate,
                                       "fp_rate": r.fp_rate} for r in rows], indent=1))
    else:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
