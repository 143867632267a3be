"""Seeded attacks on a recorded 1553 bus: each episode changes or adds transactions in a
time window and labels every message it touched with its attack name.

spoofing         a rogue RT answers in place of a real one: biased data, its own response time
injection        fake BC->RT messages with crafted data slipped between scheduled ones
dos              a flood of transmit commands to a terminal, back to back
broadcast_storm  broadcast messages as fast as the bus carries them
mode_abuse       "transmitter shutdown" sent to a terminal, which then stops answering
replay           a terminal's earlier replies (captured seconds before) answered again
timing_drift     one periodic message slides later every frame
rogue_bc         a second bus controller issuing its own commands on bus B
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ids import mil1553 as m
from ids.bus import INTERMESSAGE_GAP, MINOR_FRAME, RESPONSE_TIME, TERMINALS, duration

ATTACKS = ("spoofing", "injection", "dos", "broadcast_storm", "mode_abuse", "replay",
           "timing_drift", "rogue_bc")
REPLY_KEYS = [(1, 1), (1, 2), (2, 1), (5, 7), (6, 1)]  # (RT, subaddress) of RT->BC replies


def _replies(msgs: list[m.Message], t0: float, t1: float, rt: int, sa: int) -> list[m.Message]:
    return [x for x in msgs if t0 <= x.time < t1 and x.kind == m.RT_BC and not x.timeout
            and x.command.rt == rt and x.command.subaddress == sa]


def _gaps(msgs: list[m.Message], t0: float, t1: float) -> list[float]:
    """Start times of idle stretches on the bus long enough for a short message."""
    spans = sorted((x.time, x.time + duration(x)) for x in msgs if t0 <= x.time < t1)
    return [end + INTERMESSAGE_GAP for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False)
            if nxt - end > 400e-6]


def spoofing(msgs: list[m.Message], rng: random.Random, t0: float, t1: float) -> list[m.Message]:
    rt, sa = rng.choice(REPLY_KEYS)
    bias = rng.choice((-1, 1)) * rng.randint(1500, 4000)
    rogue_gap = rng.randint(75, 110)
    for x in _replies(msgs, t0, t1, rt, sa):
        body = x.words[2:]
        x.words[2:] = [body[0]] + [(w + bias) & 0xFFFF for w in body[1:]]
        x.gap1 = rogue_gap + rng.randint(-2, 2)
        x.label = "spoofing"
    return msgs


def injection(msgs: list[m.Message], rng: random.Random, t0: float, t1: float
              ) -> list[m.Message]:
    rt, sa, n = rng.choice([(3, 1, 10), (4, 6, 2), (3, 4, 6)])
    slots = _gaps(msgs, t0, t1)
    for t in rng.sample(slots, min(len(slots), rng.randint(6, 20))):
        data = [rng.randint(0, 0xFFFF) for _ in range(n)]
        x = m.build(t, "A", m.BC_RT, rt, sa, data, label="injection")
        x.gap1 = RESPONSE_TIME[rt] + rng.randint(-2, 2)
        msgs.append(x)
    return msgs


def dos(msgs: list[m.Message], rng: random.Random, t0: float, t1: float) -> list[m.Message]:
    rt = rng.choice(list(TERMINALS))
    t = t0
    while t < t1:
        x = m.build(t, "A", m.RT_BC, rt, rng.randint(1, 30), [], label="dos")
        x.words = x.words[:1]
        x.timeout, x.gap1 = True, 0
        msgs.append(x)
        t += duration(x) + 14e-6 + rng.random() * 400e-6
    return msgs


def broadcast_storm(msgs: list[m.Message], rng: random.Random, t0: float, t1: float
                    ) -> list[m.Message]:
    t = t0
    while t < t1:
        sa = rng.choice((20, 21, 22))
        x = m.build(t, "A", m.BROADCAST_RX, m.BROADCAST, sa,
                    [rng.randint(0, 0xFFFF) for _ in range(rng.randint(1, 8))],
                    label="broadcast_storm")
        x.gap1 = 0
        msgs.append(x)
        t += duration(x) + INTERMESSAGE_GAP + rng.random() * 200e-6
    return msgs


def mode_abuse(msgs: list[m.Message], rng: random.Random, t0: float, t1: float
               ) -> list[m.Message]:
    rt = rng.choice([1, 2, 5, 6])
    code = rng.choice((m.MODE_TRANSMITTER_SHUTDOWN, m.MODE_SELECTED_TRANSMITTER_SHUTDOWN,
                       m.MODE_RESET_RT))
    slots = _gaps(msgs, t0, t0 + 0.1)
    start = slots[0] if slots else t0
    data = [0] if code == m.MODE_SELECTED_TRANSMITTER_SHUTDOWN else []
    cmd = m.build(start, "A", m.MODE, rt, 31, data, mode_code=code, label="mode_abuse")
    cmd.gap1 = RESPONSE_TIME[rt]
    msgs.append(cmd)
    for x in msgs:  # the terminal is silent until the window ends
        if start < x.time < t1 and rt in (x.command.rt, *x.sources) and x.bus == "A" \
                and x.kind != m.BROADCAST_MODE:
            keep = 2 if x.kind == m.RT_RT else 1
            x.words = x.words[:keep] + (x.data if x.kind == m.BC_RT else [])
            x.timeout, x.gap1, x.gap2 = True, 0, 0
            x.label = "mode_abuse"
    return msgs


def replay(msgs: list[m.Message], rng: random.Random, t0: float, t1: float) -> list[m.Message]:
    rt, sa = rng.choice(REPLY_KEYS)
    captured = _replies(msgs, max(0.0, t0 - 4.0), t0 - 1.0, rt, sa)
    for x, old in zip(_replies(msgs, t0, t1, rt, sa), captured, strict=False):
        x.words[1:] = list(old.words[1:])
        x.label = "replay"
    return msgs


def timing_drift(msgs: list[m.Message], rng: random.Random, t0: float, t1: float
                 ) -> list[m.Message]:
    """The target slides later each time; what follows it in its minor frame moves too."""
    rt, sa = rng.choice(REPLY_KEYS)
    step = rng.uniform(15e-6, 40e-6)
    shift, frame = 0.0, -1
    msgs.sort(key=lambda x: x.time)
    for x in msgs:
        if not t0 <= x.time < t1:
            continue
        f = int(x.time / MINOR_FRAME)
        if f != frame:
            frame, shift = f, 0.0
        if x.kind == m.RT_BC and x.command.rt == rt and x.command.subaddress == sa:
            shift = (int((x.time - t0) / MINOR_FRAME) + 1) * step
        if shift:
            x.time += shift
            x.label = "timing_drift"
    return msgs


def rogue_bc(msgs: list[m.Message], rng: random.Random, t0: float, t1: float
             ) -> list[m.Message]:
    t = t0 + rng.random() * MINOR_FRAME
    while t < t1:
        rt, sa, n, kind = rng.choice([(4, 6, 2, m.BC_RT), (5, 7, 16, m.RT_BC),
                                      (3, 1, 10, m.BC_RT), (1, 1, 6, m.RT_BC)])
        data = [rng.randint(0, 0xFFFF) for _ in range(n)]
        x = m.build(t, "B", kind, rt, sa, data, label="rogue_bc")
        x.gap1 = RESPONSE_TIME[rt] + rng.randint(-2, 2)
        msgs.append(x)
        t += rng.uniform(0.02, 0.12)
    return msgs


INJECTORS: dict[str, Callable[[list[m.Message], random.Random, float, float],
                              list[m.Message]]] = {
    name: globals()[name] for name in ATTACKS}


def inject(msgs: list[m.Message], attack: str, seed: int, episodes: int,
           *, warmup: float = 5.0, length: float = 1.5, quiet: float = 4.0
           ) -> tuple[list[m.Message], list[tuple[float, float]]]:
    """Add `episodes` episodes of one attack, spread over the recording after `warmup`
    seconds with `quiet` seconds between them; returns the messages in time order and the
    episodes' (start, end) windows."""
    rng = random.Random(seed)
    end = msgs[-1].time if msgs else 0.0
    span = (end - warmup) / max(episodes, 1)
    if span < length + quiet:
        raise ValueError(f"recording too short for {episodes} episodes of {attack}")
    windows = []
    for i in range(episodes):
        start = warmup + i * span + rng.uniform(0, span - length - quiet)
        windows.append((start, start + length))
        msgs = INJECTORS[attack](msgs, rng, start, start + length)
    msgs.sort(key=lambda x: x.time)
    return msgs, windows
