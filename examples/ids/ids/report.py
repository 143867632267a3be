"""The detection report of a system run: the TIDS's alerts and the DAC's decisions (from
`karn system logs`) against the recordings' labels and episodes.

    python3 -m ids.report DATA_DIR TIDS_LOG DAC_LOG CONSUMER_LOG
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from collections import Counter


def labels(directory: str) -> dict[str, dict[str, str]]:
    """stream -> message time (as the taps send it) -> label."""
    out: dict[str, dict[str, str]] = {"bus": {}, "ip": {}}
    with open(os.path.join(directory, "bus.csv")) as f:
        for row in csv.DictReader(f):
            out["bus"][f"{float(row['time']):.6f}"] = row["label"]
    with open(os.path.join(directory, "ip.csv")) as f:
        for row in csv.DictReader(f):
            out["ip"][f"{float(row['time']):.6f}"] = row["label"]
    return out


def alerts(tids_log: str) -> list[dict]:
    return [json.loads(line) for line in tids_log.splitlines() if line.startswith('{"type"')]


def report(directory: str, tids_log: str, dac_log: str, consumer_log: str) -> tuple[str, dict]:
    with open(os.path.join(directory, "episodes.json")) as f:
        episodes = json.load(f)
    truth = labels(directory)
    found = alerts(tids_log)
    lines = ["episode                 window (s)        detected  first alert   detector: reason"]
    summary: dict = {"episodes": [], "alerts": len(found)}
    false_alerts = 0
    for a in found:
        if truth[a["s"]].get(f"{a['time']:.6f}", "normal") == "normal" and not any(
                e["stream"] == a["s"] and e["start"] <= a["time"] <= e["end"] + 1.0
                for e in episodes):
            false_alerts += 1
    for e in episodes:
        hits = [a for a in found if a["s"] == e["stream"]
                and truth[a["s"]].get(f"{a['time']:.6f}") == e["attack"]]
        first = min(hits, key=lambda a: a["time"]) if hits else None
        summary["episodes"].append({"attack": e["attack"], "detected": bool(hits),
                                    "latency": first and first["time"] - e["start"]})
        lines.append(
            f"{e['stream']:3} {e['attack']:18} {e['start']:7.3f}-{e['end']:<8.3f} "
            f"{'yes' if hits else 'NO':9} "
            + (f"+{max(0.0, first['time'] - e['start']) * 1000:7.1f} ms  "
               f"{first['detector']}: {first['reason'][:70]}" if first else ""))
    detected = sum(1 for e in summary["episodes"] if e["detected"])
    decisions = Counter(m.group(1) for m in re.finditer(r"^dac: (\w+)", dac_log, re.M))
    end = re.search(r"passed (\d+), blocked (\d+), dropped (\d+)", dac_log)
    got = re.findall(r"consumer: done: received bus (\d+), ip (\d+)", consumer_log)
    summary.update(detected=detected, false_alerts=false_alerts, decisions=dict(decisions))
    lines += ["", f"episodes detected: {detected}/{len(episodes)}; alerts: {len(found)}, "
              f"of which outside every episode on normal traffic: {false_alerts}",
              "DAC decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(decisions.items()))]
    if end:
        lines.append(f"DAC: passed {end[1]}, blocked {end[2]}, dropped unjudged {end[3]}")
    if got:
        lines.append(f"protected consumer received: bus {got[-1][0]}, ip {got[-1][1]}")
    return "\n".join(lines), summary


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 4:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    texts = []
    for path in args[1:]:
        with open(path) as f:
            texts.append(f.read())
    print(report(args[0], *texts)[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
