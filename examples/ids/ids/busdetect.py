"""The TIDS's 1553 detector: a model of normal bus traffic learned from a recording, and
an online check of each transaction against it.

Learned per message type (the commands' RT, T/R, subaddress or mode code): the word
counts; each data word's range and largest change between consecutive messages; the
responding terminal's response time (GAP1); the offset from the minor frame's
"synchronize" mode code; the inter-arrival time (mean and spread, for a CUSUM); the
most messages of the type in any 100 ms; the Markov chain of which type follows
which; and which terminals ever used bus B (a BC uses B only to retry a message that
failed on A).
"""

from __future__ import annotations

import statistics
from collections import defaultdict, deque
from dataclasses import dataclass

from ids import mil1553 as m
from ids.bus import duration

SYNC_KEY = "31Tm1"
RATE_WINDOW = 0.100  # seconds: the span whose message counts are compared
CUSUM_K, CUSUM_H = 0.5, 8.0  # drift allowance and decision threshold, in spreads
THRESHOLD = 0.5  # a message with a score at or above this raises an alert


def _delta(new: int, old: int) -> int:
    """Signed change of a 16-bit word (a counter that wraps changes by +1)."""
    d = (new - old) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


@dataclass
class Finding:
    score: float
    detector: str
    reason: str


def train(msgs: list[m.Message]) -> dict:
    keys: dict[str, dict] = {}
    transitions: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    last: dict[str, m.Message] = {}
    intervals: dict[str, list[float]] = defaultdict(list)
    prev_key, sync_time, prev_end = None, None, None
    window: deque[tuple[float, str]] = deque()  # the last RATE_WINDOW's messages
    in_window: dict[str, int] = defaultdict(int)  # ... counted per type
    rate_max: dict[str, int] = defaultdict(int)
    timeouts_in_row: dict[int, int] = defaultdict(int)
    max_timeouts_in_row = 1
    for x in msgs:
        k = x.key
        info = keys.setdefault(k, {"counts": [], "data": [], "gap1": [None, None],
                                   "offset": [None, None], "idle": [None, None]})
        if prev_end is not None:
            idle = x.time - prev_end
            lo, hi = info["idle"]
            info["idle"] = [idle if lo is None else min(lo, idle),
                            idle if hi is None else max(hi, idle)]
        prev_end = x.time + duration(x)
        retry = x.bus == "B"
        if x.key == SYNC_KEY:
            sync_time = x.time
        if not x.timeout:
            n = len(x.data)
            if n not in info["counts"]:
                info["counts"].append(n)
            if x.gap1:
                lo, hi = info["gap1"]
                info["gap1"] = [x.gap1 if lo is None else min(lo, x.gap1),
                                x.gap1 if hi is None else max(hi, x.gap1)]
            prev = last.get(k)
            while len(info["data"]) < n:
                info["data"].append([65535, 0, 0])  # min, max, largest |change|
            for i, w in enumerate(x.data):
                slot = info["data"][i]
                slot[0], slot[1] = min(slot[0], w), max(slot[1], w)
                if prev is not None and i < len(prev.data):
                    slot[2] = max(slot[2], abs(_delta(w, prev.data[i])))
            last[k] = x
        for rt in {x.command.rt, *x.sources} - {m.BROADCAST}:
            timeouts_in_row[rt] = timeouts_in_row[rt] + 1 if x.timeout else 0
            max_timeouts_in_row = max(max_timeouts_in_row, timeouts_in_row[rt])
        if not retry:
            if sync_time is not None:
                off = x.time - sync_time
                lo, hi = info["offset"]
                info["offset"] = [off if lo is None else min(lo, off),
                                  off if hi is None else max(hi, off)]
            if prev_key is not None:
                transitions[prev_key][k] += 1
            prev_key = k
            if "t" in info:
                intervals[k].append(x.time - info["t"])
            info["t"] = x.time
        window.append((x.time, k))
        in_window[k] += 1
        while window[0][0] < x.time - RATE_WINDOW:
            in_window[window.popleft()[1]] -= 1
        rate_max[k] = max(rate_max[k], in_window[k])
    for k, info in keys.items():
        info.pop("t", None)
        iv = intervals.get(k, [])
        info["interval"] = [statistics.fmean(iv), statistics.pstdev(iv)] if len(iv) > 2 \
            else None
        info["rate_max"] = rate_max[k]
    return {"keys": keys, "transitions": {a: dict(b) for a, b in transitions.items()},
            "max_timeouts_in_row": max_timeouts_in_row}


class BusDetector:
    """Checks each transaction in time order; `check` returns the findings, worst first."""

    def __init__(self, model: dict) -> None:
        self.model = model
        self.prev_key: str | None = None
        self.accepted_key: str | None = None
        self.sync_time: float | None = None
        self.last: dict[str, m.Message] = {}
        self.last_time: dict[str, float] = {}
        self.cusum: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.window: deque[tuple[float, str]] = deque()
        self.counts: dict[str, int] = defaultdict(int)
        self.failed: dict[str, float] = {}  # key -> time of its last timeout on bus A
        self.timeouts_in_row: dict[int, int] = defaultdict(int)
        self.prev_end: float | None = None

    def check(self, x: m.Message) -> list[Finding]:
        out: list[Finding] = []
        k = x.key
        info = self.model["keys"].get(k)
        self.window.append((x.time, k))
        self.counts[k] += 1
        while self.window[0][0] < x.time - RATE_WINDOW:
            self.counts[self.window.popleft()[1]] -= 1
        for rt in {x.command.rt, *x.sources} - {m.BROADCAST}:
            self.timeouts_in_row[rt] = self.timeouts_in_row[rt] + 1 if x.timeout else 0
            if self.timeouts_in_row[rt] > self.model["max_timeouts_in_row"]:
                out.append(Finding(0.7, "silence", f"RT {rt} did not answer "
                                   f"{self.timeouts_in_row[rt]} times in a row"))
        if info is None:
            out.append(Finding(1.0, "unknown-type", f"message type {k} never seen in "
                               f"normal traffic ({x.kind}, bus {x.bus})"))
            return out
        retry = x.bus == "B"
        if retry:
            failed = self.failed.pop(k, None)
            if failed is None or x.time - failed > 0.001:
                out.append(Finding(0.9, "bus-b", f"{k} on bus B without a failed attempt on "
                                   "bus A just before (a second bus controller?)"))
        elif x.timeout:
            self.failed[k] = x.time
        if self.counts[k] > info["rate_max"] * 1.5 + 2:
            out.append(Finding(0.8, "rate", f"{self.counts[k]} {k} messages in "
                               f"{RATE_WINDOW * 1000:g} ms (normal at most {info['rate_max']})"))
        if not x.timeout:
            out += self._content(x, k, info)
        if not retry:
            out += self._timing(x, k, info)
        lo, hi = info["idle"]
        if self.prev_end is not None and lo is not None:
            idle = x.time - self.prev_end
            slack = (hi - lo) * 0.2 + 3e-6
            if not lo - slack <= idle <= hi + slack:
                out.append(Finding(0.8, "bus-gap", f"{k} began {idle * 1e6:.1f} us after the "
                                   f"previous message (normal {lo * 1e6:.1f}-{hi * 1e6:.1f} us)"))
        self.prev_end = x.time + duration(x)
        # The next message is judged from this one whatever this one's verdict, so one
        # wrong verdict cannot cascade; only the Markov chain also remembers the last
        # message that passed, so a message slipped in cannot hide the one after it.
        if not retry:
            if not out or max(f.score for f in out) < THRESHOLD:
                self.accepted_key = k
            self.prev_key = k
            if k == SYNC_KEY:
                self.sync_time = x.time
        if not x.timeout:
            self.last[k] = x
        return sorted(out, key=lambda f: -f.score)

    def _content(self, x: m.Message, k: str, info: dict) -> list[Finding]:
        out = []
        data = x.data
        if len(data) not in info["counts"]:
            out.append(Finding(1.0, "word-count", f"{k} with {len(data)} data words "
                               f"(normal: {info['counts']})"))
            return out
        lo, hi = info["gap1"]
        if x.gap1 and lo is not None and not lo - 3 <= x.gap1 <= hi + 3:
            out.append(Finding(0.9, "response-time", f"{k} answered after "
                               f"{x.gap1 / 10:.1f} us (normal {lo / 10:.1f}-{hi / 10:.1f} us): "
                               "another device answering for the terminal?"))
        prev = self.last.get(k)
        prev_data = prev.data if prev is not None else []
        for i, w in enumerate(data):
            wlo, whi, step = info["data"][i]
            margin = (whi - wlo) * 0.1 + 16
            if not wlo - margin <= w <= whi + margin:
                out.append(Finding(0.8, "data-range", f"{k} word {i + 1} = {w} outside "
                                   f"{wlo}..{whi}"))
                break
            if i < len(prev_data):
                d = _delta(w, prev_data[i])
                if abs(d) > step * 1.5 + 8:
                    out.append(Finding(0.8, "data-change", f"{k} word {i + 1} changed by {d} "
                                       f"(normal at most {step}): stale or forged data"))
                    break
        return out

    def _timing(self, x: m.Message, k: str, info: dict) -> list[Finding]:
        out = []
        chain = self.model["transitions"]
        if self.prev_key is not None and k not in chain.get(self.prev_key, {}) \
                and k not in chain.get(self.accepted_key or "", {}):
            out.append(Finding(0.9, "sequence", f"{k} after {self.prev_key}: a transition "
                               "the schedule never makes"))
        lo, hi = info["offset"]
        if self.sync_time is not None and lo is not None and k != SYNC_KEY:
            off = x.time - self.sync_time
            slack = (hi - lo) * 0.1 + 20e-6
            if not lo - slack <= off <= hi + slack:
                out.append(Finding(0.8, "frame-offset", f"{k} at {off * 1e6:.0f} us into the "
                                   f"minor frame (normal {lo * 1e6:.0f}-{hi * 1e6:.0f} us)"))
        last = self.last_time.get(k)
        self.last_time[k] = x.time
        if last is not None and info["interval"]:
            mean, spread = info["interval"]
            # clamped, so one late message (a retry before it) counts as little as one
            # step of a drift: only a run of them adds up
            z = max(-3.0, min(3.0, (x.time - last - mean) / max(spread, 2e-6)))
            c = self.cusum[k]
            c[0], c[1] = max(0.0, c[0] + z - CUSUM_K), max(0.0, c[1] - z - CUSUM_K)
            if max(c) > CUSUM_H:
                out.append(Finding(0.8, "cusum", f"{k} inter-arrival drifting "
                                   f"{'later' if c[0] > c[1] else 'earlier'} (CUSUM "
                                   f"{max(c):.1f} > {CUSUM_H:g}; normal period "
                                   f"{mean * 1e3:.3f} ms)"))
                c[0] = c[1] = 0.0
        return out


def targets(x: m.Message) -> list[list[int]]:
    """The [RT, subaddress] pairs of a message's commands: what the DAC can block."""
    cmds = [x.command] + ([m.Command.decode(x.words[1])] if x.kind == m.RT_RT else [])
    return [[c.rt, c.subaddress] for c in cmds]
