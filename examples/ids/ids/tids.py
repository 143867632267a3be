"""The TIDS partition: checks every bus transaction and IP packet against the trained
model and reports to the DAC over one port: an alert for each finding (at most
MAX_ALERTS per frame, one per detector and target) and, once a frame is judged, its
verdict. Alerts are also printed, one JSON line each, for the detection report.

    python3 -m ids.tids MODEL.json [--bus PORT] [--ip PORT] [--alerts PORT]
"""

from __future__ import annotations

import argparse
import json
import select
import sys

from ids import mil1553 as m
from ids.busdetect import THRESHOLD, BusDetector, Finding, targets
from ids.ipdetect import IpDetector
from ids.ipnet import Packet
from ids.ports import Busy, Port

MAX_ALERTS = 20  # per frame, one per target: a flood gets its worst findings reported
WHOLE_RT = {"response-time", "silence"}  # findings that say the terminal itself is not itself


def bus_message(row: list) -> m.Message:
    t, bus, kind, words, gap1, gap2, timeout = row
    return m.Message(t, bus, kind, words, gap1, gap2, bool(timeout))


def bus_alert(x: m.Message, f: Finding, n: int) -> dict:
    block = targets(x)
    if f.detector in WHOLE_RT:
        block = [[rt, None] for rt in (x.sources or [x.command.rt])]
    return {"type": "alert", "s": "bus", "n": n, "time": x.time, "score": f.score,
            "detector": f.detector, "reason": f.reason, "key": x.key, "block": block}


def ip_alert(p: Packet, f: Finding, n: int) -> dict:
    return {"type": "alert", "s": "ip", "n": n, "time": p.time, "score": f.score,
            "detector": f.detector, "reason": f.reason, "key": f"{p.src}>{p.dst}:{p.dport}",
            "block": [p.src]}


class Tids:
    def __init__(self, model: dict, alerts: Port) -> None:
        self.bus = BusDetector(model["bus"])
        self.ip = IpDetector(model["ip"])
        self.alerts = alerts
        self.pending: dict[str, dict[str, dict]] = {"bus": {}, "ip": {}}  # this frame's

    def handle(self, doc: dict) -> bool:
        """Judge one chunk; False at a stream's end."""
        stream = doc["s"]
        if doc.get("end"):
            self.alerts.send({"type": "end", "s": stream})
            return False
        n = doc["n"]
        found = self.pending[stream]
        for row in doc["m"]:
            if stream == "bus":
                x = bus_message(row)
                findings = self.bus.check(x)
                make = bus_alert
            else:
                x = Packet(*row)
                findings = self.ip.check(x)
                make = ip_alert  # type: ignore[assignment]
            for f in findings:
                if f.score < THRESHOLD:
                    continue
                alert = make(x, f, n)  # type: ignore[arg-type]
                key = json.dumps(alert["block"])
                if key not in found and len(found) < MAX_ALERTS:
                    found[key] = alert
        if doc["last"]:
            for alert in found.values():
                self.alerts.send(alert)
                print(json.dumps(alert, separators=(",", ":")), flush=True)
            self.alerts.send({"type": "verdict", "s": stream, "n": n, "alerts": len(found)})
            found.clear()
        return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tids")
    ap.add_argument("model")
    ap.add_argument("--bus", default="bus")
    ap.add_argument("--ip", default="ip")
    ap.add_argument("--alerts", default="alerts")
    args = ap.parse_args(argv)
    with open(args.model) as f:
        model = json.load(f)
    tids = Tids(model, Port(args.alerts, "out"))
    inputs = [Port(args.bus, "in"), Port(args.ip, "in")]
    print("tids: model loaded, watching bus and ip", flush=True)
    busy = Busy()
    while inputs:
        ready, _, _ = select.select(inputs, [], [])
        with busy:
            for port in ready:
                doc = port.receive()
                if doc is None:
                    continue
                busy.count(doc["s"], len(doc.get("m", ())))
                ok = tids.handle(doc)
                busy.sent_at(doc.get("at"))  # judged (and its alerts sent)
                if not ok:
                    inputs.remove(port)
    print(f"tids: both streams ended: judged {busy}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
