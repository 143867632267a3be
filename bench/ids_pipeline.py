#!/usr/bin/env python3
"""Does the TIDS/DAC reference system (examples/ids, docs/ids.md) keep up with a fully
loaded MIL-STD-1553 bus in real time? Per stage (tap -> diode + guard -> TIDS -> DAC ->
consumer), messages/s against the bus's rate.

    python3 bench/ids_pipeline.py [--seconds S] [--runs N]

The load: the demonstration schedule's transactions back to back (ids.bus.packed), so
the bus is full (1 Mbit/s, every word slot but the gaps) with the demonstration's mix
of message types and sizes; the TIDS's model is trained on the same packing of normal
traffic, so the load is normal traffic, not an attack. Measured:

1. host: each stage's code in-process on the host's Python (no karn, no guests): its
   cost alone.
2. capacity under karn: the system of examples/ids/system.toml, each partition a karn
   image, the recording replayed as fast as the tap can (--speed 0), fair schedule. Each
   partition reports the time it spent working (not waiting for input): messages per
   busy second is what the stage can take.
3. real time under karn: the same system as shipped (cyclic schedule, 100 ms major
   frame) replaying the loaded recording at recorded speed: what was dropped, and how
   long after the tap the TIDS and the DAC finished.

Medians of N runs; prints markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "ids"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(EXAMPLE))

import run  # noqa: E402  examples/ids/run.py
from ids import bus, busdetect, ch10, ipdetect, ipnet  # noqa: E402
from ids.evaluate import TRAIN_SEED  # noqa: E402

from karn.system.guards import Guard, GuardCheck  # noqa: E402

SEED = 21


class BenchError(Exception):
    """The benchmark could not run (the message says why)."""


def make_data(directory: Path, seconds: float) -> dict:
    """model.json, bus.ch10 (a fully loaded bus for `seconds`), ip.pcap (normal)."""
    directory.mkdir(parents=True, exist_ok=True)
    model = {"bus": busdetect.train(bus.packed(bus.BusController(TRAIN_SEED).run(300))),
             "ip": ipdetect.train(ipnet.generate(600, TRAIN_SEED)[0])}
    (directory / "model.json").write_text(json.dumps(model))
    normal = bus.BusController(SEED).run(seconds * 30)
    msgs = [x for x in bus.packed(normal) if x.time < seconds]
    with open(directory / "bus.ch10", "wb") as f:
        ch10.write(f, msgs, datetime(2026, 12, 2, 12, 0, 0))
    packets = ipnet.generate(seconds, SEED)[0]
    with open(directory / "ip.pcap", "wb") as f:
        ipnet.write_pcap(f, packets)
    words = sum(len(x.words) for x in msgs)
    return {"bus_messages": len(msgs), "bus_rate": len(msgs) / seconds,
            "words_rate": words / seconds, "ip_packets": len(packets),
            "normal_rate": len(normal) / (seconds * 30)}


# ---- 1. each stage's code on the host ----------------------------------------------------

def host_stages(directory: Path) -> dict[str, float]:
    """messages/s of each stage's own code, in this process."""
    sinks = directory / "ports"
    if not sinks.exists():
        sinks.mkdir()
        for name in ("alerts", "out"):
            (sinks / name).symlink_to(os.devnull)
    os.environ["IDS_PORTS"] = str(sinks)  # the stages' output ports write to /dev/null
    from ids import dac, tap, tids
    from ids.ports import Port, chunks, encode

    t0 = time.perf_counter()
    docs = []
    for n, _start, items in tap.bus_frames(str(directory / "bus.ch10")):
        pieces = chunks(items, tap.CHUNK)
        docs += [encode({"s": "bus", "n": n, "last": i == len(pieces) - 1, "m": p})
                 for i, p in enumerate(pieces)]
    tap_s = time.perf_counter() - t0
    total = sum(len(json.loads(d)["m"]) for d in docs)

    check = GuardCheck(traffic_guard())
    t0 = time.perf_counter()
    for d in docs:
        check.check(d)
    guard_s = time.perf_counter() - t0

    model = json.loads((directory / "model.json").read_text())
    judge = tids.Tids(model, Port("alerts", "out"))
    t0 = time.perf_counter()
    verdicts = []
    with contextlib.redirect_stdout(io.StringIO()):  # the alerts it prints
        for d in docs:
            doc = json.loads(d)
            judge.handle(doc)
            if doc["last"]:
                verdicts.append({"type": "verdict", "s": "bus", "n": doc["n"], "alerts": 0})
    tids_s = time.perf_counter() - t0

    access = dac.Dac(Port("out", "out"), 5.0, 600.0, 600.0)
    t0 = time.perf_counter()
    judged = iter(verdicts)
    with contextlib.redirect_stdout(io.StringIO()):  # its decisions
        for d in docs:
            doc = json.loads(d)
            access.traffic(doc)
            if doc["last"]:
                access.tids(next(judged))
        access.step()
    dac_s = time.perf_counter() - t0
    return {"tap": total / tap_s, "guard": total / guard_s, "tids": total / tids_s,
            "dac": total / dac_s}


def traffic_guard() -> Guard:
    """The guard on the taps' channels to the TIDS, as system.toml declares it."""
    table = tomllib.loads((EXAMPLE / "system.toml").read_text())["guards"]["traffic"]
    g = Guard("traffic")
    g.schema = table["schema"]
    return g


# ---- 2. and 3. under karn ----------------------------------------------------------------

def system_file(directory: Path, speed: float, cyclic: bool) -> Path:
    path = Path(run.system_file(str(directory), speed))
    text = path.read_text()
    if not cyclic:  # each partition as fast as it can; the DAC waits for every verdict
        text = text[:text.index("[schedule]")]
        text = text.replace('"--hold", "10", "--stale", "1"', '"--hold", "600", "--stale", "600"')
    path.write_text(text)
    return path


def karn(env: dict[str, str], *args: str, timeout: float = 900) -> str:
    proc = subprocess.run([sys.executable, "-m", "karn", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode not in (0, 1):
        raise BenchError(f"karn {args[0]} {args[1]}: {proc.stderr.strip()[-300:]}")
    return proc.stdout


WORK = re.compile(r"(?:judged|filtered|sent) ([^;]*?) messages; busy ([\d.]+) s .*?"
                  r"first to last ([\d.]+) s, ending at ([\d.]+); since the tap: "
                  r"(?:p50 ([\d.]+) ms, p99 ([\d.]+) ms, max ([\d.]+) ms|-)")


def stage(log: str, what: str) -> dict[str, float]:
    m = WORK.search(log)
    if not m:
        raise BenchError(f"{what}: no work line in its log: {log.strip()[-300:]}")
    counts = dict((k, int(v)) for k, v in (x.split() for x in m[1].split(", ")))
    return {"bus": counts.get("bus", 0), "messages": sum(counts.values()),
            "busy": float(m[2]), "span": float(m[3]), "end": float(m[4]),
            "lag": [float(m[i] or 0) for i in (5, 6, 7)]}  # a tap has none


def system_run(directory: Path, env: dict[str, str], speed: float, cyclic: bool) -> dict:
    path = system_file(directory, speed, cyclic)
    began = time.monotonic()
    karn(env, "system", "up", str(path))
    wall = time.monotonic() - began
    logs = {p: karn(env, "system", "logs", "-s", "ids", p)
            for p in ("bustap", "iptap", "tids", "dac", "consumer")}
    status = json.loads(karn(env, "system", "status", "--json", "ids"))
    out = {"wall": wall, "tap": stage(logs["bustap"], "bus tap"),
           "tids": stage(logs["tids"], "tids"), "dac": stage(logs["dac"], "dac")}
    got = re.search(r"received bus (\d+), ip (\d+) in ([\d.]+) s", logs["consumer"])
    dropped = re.search(r"passed \d+, blocked (\d+), dropped (\d+)", logs["dac"])
    if not got or not dropped:
        raise BenchError(f"the run did not finish: {logs['dac'].strip()[-300:]}")
    out["consumer"] = {"bus": int(got[1]), "span": float(got[3])}
    out["dac_blocked"], out["dac_unjudged"] = int(dropped[1]), int(dropped[2])
    out["alerts"] = logs["tids"].count('{"type":"alert"')
    out["channels"] = {c["name"]: c["dropped"] for c in status["channels"]}
    return out


def median(runs: list[dict], *keys: str) -> float:
    values = []
    for r in runs:
        for k in keys:
            r = r[k]
        values.append(r)
    return statistics.median(values)


def render(args: argparse.Namespace, data: dict, host: list[dict], cap: list[dict],
           real: list[dict]) -> str:
    need = data["bus_rate"]
    lines = [
        f"A fully loaded bus at the demonstration's mix: **{need:,.0f} messages/s** "
        f"({data['words_rate']:,.0f} words/s on the wire; the schedule alone carries "
        f"{data['normal_rate']:,.0f} messages/s). {args.seconds:g} s of it: "
        f"{data['bus_messages']:,} messages, with {data['ip_packets']:,} IP packets "
        f"beside. Medians of {args.runs} runs, {os.cpu_count()} shared cores, load "
        f"average {os.getloadavg()[0]:.1f} at the end.", "",
        "| stage | host Python alone | under karn: capacity (per busy second) | "
        "headroom vs the full bus |", "| --- | ---: | ---: | ---: |"]
    for name, label in (("tap", "bus tap (Chapter 10 -> JSON frames)"),
                        ("guard", "guard process (JSON schema, per frame message)"),
                        ("tids", "TIDS (decode + all 1553 detectors)"),
                        ("dac", "DAC (hold for verdict, filter, forward)")):
        h = median(host, name)
        if name == "guard":
            lines.append(f"| {label} | {h:,.0f} msg/s | (no busy time: see drops) | "
                         f"{h / need:.1f}x on the host |")
            continue
        c = statistics.median(r[name]["messages"] / r[name]["busy"] for r in cap)
        lines.append(f"| {label} | {h:,.0f} msg/s | {c:,.0f} msg/s | {c / need:.2f}x |")
    lines += ["", "Real time (the system as shipped: cyclic schedule, 100 ms major frame: bus "
              "tap 20 ms, TIDS 40 ms, DAC 25 ms; the loaded recording at recorded speed; busy "
              "= wall time spent on messages, windows included):", "",
              "| run | bus tap: recording of 10 s sent in | judged by the TIDS | "
              "dropped on the way | DAC: dropped unjudged | frame judged after the tap: "
              "p50 / p99 / max | frame passed by the DAC after the tap: p50 / p99 / max | "
              "TIDS busy (window 40%) | DAC busy (window 25%) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for i, r in enumerate(real, 1):
        drops = sum(r["channels"].values())
        span = r["tap"]["span"]
        lines.append(f"| {i} | {span:.2f} s | {r['tids']['bus']:,} of {r['tap']['bus']:,} | "
                     f"{drops:,} | {r['dac_unjudged']:,} | "
                     + " / ".join(f"{x:,.0f}" for x in r["tids"]["lag"]) + " ms | "
                     + " / ".join(f"{x:,.0f}" for x in r["dac"]["lag"]) + " ms | "
                     f"{r['tids']['busy'] / span:.0%} | {r['dac']['busy'] / span:.0%} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10, help="loaded bus recorded")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kbi-", dir="/tmp"))
    env = dict(os.environ, KARN_STATE_DIR=str(work / "state"))
    try:
        data = make_data(work / "data", args.seconds)
        print(f"data: {data}", file=sys.stderr)
        host = [host_stages(work / "data") for _ in range(args.runs)]
        print(f"host: {host}", file=sys.stderr)
        run.build_image(env=env)
        cap = []
        for _ in range(args.runs):
            cap.append(system_run(work / "data", env, 0, cyclic=False))
            print(f"capacity: {cap[-1]}", file=sys.stderr)
        real = []
        for _ in range(args.runs):
            real.append(system_run(work / "data", env, 1, cyclic=True))
            print(f"real time: {real[-1]}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(render(args, data, host, cap, real))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as err:
        sys.stderr.write(f"bench/ids_pipeline.py: {err}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
