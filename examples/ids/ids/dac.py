"""The DAC partition: dynamic access control in line between the taps and the protected
consumer.

Each frame of traffic is held until the TIDS's verdict on it arrives; the alerts that
come before the verdict quarantine what they name (a 1553 RT, or one RT/subaddress; an
IP source) first, so the very message that raised an alert is already blocked. Then the
frame's messages that no quarantine covers pass on. A quarantine is released after
QUIET seconds (recording time) without another alert about it. Fails closed: a frame
whose verdict has not come HOLD seconds after it arrived (after the TIDS first spoke) is
dropped whole, and while no verdict has come for STALE seconds the DAC says it is closed.
Every decision is one log line: quarantine, release, blocked messages, dropped frames,
closing and reopening.

    python3 -m ids.dac [--quiet S] [--hold S] [--stale S]
"""

from __future__ import annotations

import argparse
import select
import sys
import time

from ids.ports import Busy, Port, chunks

CHUNK = 150


def log(text: str) -> None:
    print(f"dac: {text}", flush=True)


class Policy:
    """Quarantines: bus entries (rt, sa or None for the whole RT), ip entries (source);
    each with the recording time of its latest alert."""

    def __init__(self, quiet: float) -> None:
        self.quiet = quiet
        self.bus: dict[tuple[int, int | None], float] = {}
        self.ip: dict[str, float] = {}

    def alert(self, doc: dict) -> None:
        table = self.bus if doc["s"] == "bus" else self.ip
        for item in doc["block"]:
            key = (item[0], item[1]) if doc["s"] == "bus" else item
            if key not in table:
                log(f"quarantine {doc['s']} {self._name(key)} at t={doc['time']:.6f}: "
                    f"{doc['detector']} (score {doc['score']}): {doc['reason']}")
            table[key] = max(table.get(key, 0.0), doc["time"])  # type: ignore[index]

    @staticmethod
    def _name(key: object) -> str:
        if isinstance(key, tuple):
            rt, sa = key
            return f"RT {rt}" + ("" if sa is None else f" subaddress {sa}")
        return f"source {key}"

    def release(self, stream: str, now: float) -> None:
        table = self.bus if stream == "bus" else self.ip
        for key, last in list(table.items()):
            if now - last > self.quiet:
                del table[key]
                log(f"release {stream} {self._name(key)} at t={now:.6f}: no alert for "
                    f"{self.quiet:g} s")

    def allows(self, stream: str, row: list) -> str | None:
        """None if row may pass, else the quarantine that stops it."""
        if stream == "ip":
            return f"source {row[1]}" if row[1] in self.ip else None
        words, kind = row[3], row[2]
        cmds = [words[0]] + ([words[1]] if kind == "rt-rt" else [])
        for w in cmds:
            rt, sa = (w >> 11) & 31, (w >> 5) & 31
            for key in ((rt, None), (rt, sa)):
                if key in self.bus:
                    return self._name(key)
        return None


class Dac:
    def __init__(self, out: Port, quiet: float, hold: float, stale: float) -> None:
        self.out = out
        self.policy = Policy(quiet)
        self.hold, self.stale = hold, stale
        self.frames: dict[tuple[str, int], dict] = {}  # held: rows, complete, arrival
        self.verdicts: set[tuple[str, int]] = set()
        self.first_word: float | None = None  # when the TIDS first spoke
        self.last_word = time.monotonic()
        self.closed = True  # until the TIDS's first verdict
        self.ended: set[str] = set()
        self.passed = self.blocked = self.dropped = 0
        self.busy = Busy()  # its work, and how long after the tap a frame passed on

    def traffic(self, doc: dict) -> None:
        if doc.get("end"):
            self.ended.add(doc["s"])
            return
        key = (doc["s"], doc["n"])
        frame = self.frames.setdefault(key, {"rows": [], "complete": False,
                                             "arrived": time.monotonic(), "at": doc.get("at")})
        frame["rows"] += doc["m"]
        frame["complete"] = doc["last"]

    def tids(self, doc: dict) -> None:
        now = time.monotonic()
        self.first_word = self.first_word or now
        self.last_word = now
        if self.closed:
            self.closed = False
            log("verdicts resumed: open (quarantines kept: "
                f"{len(self.policy.bus)} bus, {len(self.policy.ip)} ip)")
        if doc["type"] == "alert":
            self.policy.alert(doc)
        elif doc["type"] == "verdict":
            key = (doc["s"], doc["n"])
            frame = self.frames.get(key)
            if frame is not None and frame["complete"]:  # judged: on its way at once, so
                del self.frames[key]  # a later frame's alert cannot block this one
                self._forward(key, frame)
            else:
                self.verdicts.add(key)

    def step(self) -> None:
        """Forward every frame that has its verdict; drop those whose wait is over."""
        now = time.monotonic()
        if not self.closed and now - self.last_word > self.stale:
            self.closed = True
            log(f"no verdict from the TIDS for {self.stale:g} s: closed, holding traffic")
        for key in sorted(self.frames, key=lambda k: k[1]):
            frame = self.frames[key]
            if not frame["complete"]:
                if now - frame["arrived"] <= self.hold:
                    continue
                # a piece lost on the way (a diode drops what a receiver falling behind
                # has not read): it never becomes whole, and is blocked like one unjudged
                self.dropped += len(frame["rows"])
                log(f"drop {key[0]} frame {key[1]}: incomplete after {self.hold:g} s, "
                    f"{len(frame['rows'])} messages blocked (fail closed)")
            elif key in self.verdicts:
                self.verdicts.discard(key)
                self._forward(key, frame)
            elif self.first_word is not None and \
                    now - max(frame["arrived"], self.first_word) > self.hold:
                self.dropped += len(frame["rows"])
                log(f"drop {key[0]} frame {key[1]}: no verdict within {self.hold:g} s, "
                    f"{len(frame['rows'])} messages blocked (fail closed)")
            else:
                continue
            del self.frames[key]

    def _forward(self, key: tuple[str, int], frame: dict) -> None:
        stream, n = key
        rows = frame["rows"]
        self.busy.sent_at(frame["at"])
        if rows:
            self.policy.release(stream, rows[0][0])
        allowed, stopped = [], {}
        for row in rows:
            why = self.policy.allows(stream, row)
            if why is None:
                allowed.append(row)
            else:
                stopped[why] = stopped.get(why, 0) + 1
        for why, count in stopped.items():
            log(f"block {stream} frame {n} t={rows[0][0]:.6f}: {count} messages "
                f"({why} quarantined)")
        self.passed += len(allowed)
        self.blocked += len(rows) - len(allowed)
        if allowed:
            for piece in chunks(allowed, CHUNK):
                self.out.send({"s": stream, "n": n, "m": piece})

    def done(self) -> bool:
        return self.ended == {"bus", "ip"} and not self.frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dac")
    ap.add_argument("--quiet", type=float, default=5.0, help="release after S s without alert")
    ap.add_argument("--hold", type=float, default=10.0, help="wait at most S s for a verdict")
    ap.add_argument("--stale", type=float, default=1.0, help="closed after S s of silence")
    args = ap.parse_args(argv)
    dac = Dac(Port("out", "out"), args.quiet, args.hold, args.stale)
    traffic = [Port("bus", "in"), Port("ip", "in")]
    alerts = Port("alerts", "in")
    log("started: closed until the TIDS's first verdict")
    busy = dac.busy
    while not dac.done():
        ready, _, _ = select.select([*traffic, alerts], [], [], 0.1)
        with busy:
            for port in ready:
                while (doc := port.receive()) is not None:
                    if port is alerts:
                        dac.tids(doc)
                    else:
                        busy.count(doc["s"], len(doc.get("m", ())))
                        dac.traffic(doc)
            dac.step()
    dac.out.send({"end": True})
    log(f"streams ended: passed {dac.passed}, blocked {dac.blocked}, dropped {dac.dropped}; "
        f"filtered {busy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
