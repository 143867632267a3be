"""A MIL-STD-1553B bus: a bus controller's major/minor-frame schedule over named remote
terminals, producing the transactions a bus monitor records.

The minor frame is 20 ms (50 Hz); the major frame is 50 minor frames (1 s). Each minor
frame starts with a broadcast "synchronize" mode code, then the periodic messages due in
it, then aperiodic ones (a service request answered with "transmit vector word" and a
read, an occasional command to the stores manager). A message without a response is
retried once on bus B, as a BC does.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from ids import mil1553 as m

MINOR_FRAME = 0.020  # seconds
MINOR_FRAMES = 50  # per major frame
WORD_TIME = 20e-6  # one 20-bit word at 1 Mbit/s
INTERMESSAGE_GAP = 8e-6

TERMINALS = {1: "INS", 2: "ADC", 3: "DISPLAY", 4: "SMS", 5: "RADAR", 6: "ENGINE"}
RESPONSE_TIME = {1: 45, 2: 60, 3: 52, 4: 70, 5: 48, 6: 65}  # each RT's gap, 0.1 us units


@dataclass(frozen=True)
class Slot:
    """A periodic message of the schedule: sent in minor frames where frame % every == phase."""

    name: str
    kind: str
    rt: int
    subaddress: int
    words: int
    every: int
    phase: int = 0
    rt2: int = 0
    subaddress2: int = 0
    mode_code: int = 0


SCHEDULE = [
    Slot("sync", m.BROADCAST_MODE, m.BROADCAST, 31, 0, 1, mode_code=m.MODE_SYNCHRONIZE),
    Slot("ins-position", m.RT_BC, 1, 1, 6, 1),
    Slot("ins-attitude", m.RT_BC, 1, 2, 4, 1),
    Slot("adc-air-data", m.RT_BC, 2, 1, 8, 2),
    Slot("display-page", m.BC_RT, 3, 1, 10, 2, 1),
    Slot("ins-to-display", m.RT_RT, 3, 2, 4, 4, 1, rt2=1, subaddress2=3),
    Slot("radar-track", m.RT_BC, 5, 7, 16, 5),
    Slot("engine-data", m.RT_BC, 6, 1, 8, 5, 2),
    Slot("sms-status", m.RT_BC, 4, 5, 2, 10, 3),
    Slot("time-broadcast", m.BROADCAST_RX, m.BROADCAST, 20, 2, MINOR_FRAMES, 0),
    Slot("sync-data", m.BROADCAST_MODE, m.BROADCAST, 31, 1, MINOR_FRAMES, 0,
         mode_code=m.MODE_SYNCHRONIZE_WITH_DATA),
    *(Slot(f"status-poll-{rt}", m.MODE, rt, 31, 0, 60, 7 + 10 * (rt - 1),
           mode_code=m.MODE_TRANSMIT_STATUS) for rt in TERMINALS),
]


class Signals:
    """Data words: word 0 of an RT's reply is its message counter; the rest are sensor
    values (a slow sine plus noise around a per-word centre); the BC's own data are
    commands from a small set."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.counters: dict[tuple[int, int], int] = {}

    def data(self, source: int, subaddress: int, n: int, t: float) -> list[int]:
        if n == 0:
            return []
        if source == 0:  # the BC
            return [(0x100 * subaddress + self.rng.choice((1, 2, 3, 5, 8))) & 0xFFFF
                    for _ in range(n)]
        key = (source, subaddress)
        self.counters[key] = (self.counters.get(key, 0) + 1) & 0xFFFF
        words = [self.counters[key]]
        for i in range(1, n):
            centre = 4000 + 1500 * ((source * 7 + subaddress * 3 + i) % 20)
            amp = 300 + 40 * i
            value = centre + amp * math.sin(2 * math.pi * t / (3 + i + source)) \
                + self.rng.gauss(0, 8)
            words.append(int(value) & 0xFFFF)
        return words


class BusController:
    """Runs the schedule; `frames(n)` yields each minor frame's transactions."""

    def __init__(self, seed: int, *, timeout_rate: float = 0.001,
                 service_request_rate: float = 0.05, aperiodic_rate: float = 0.02) -> None:
        self.rng = random.Random(seed)
        self.signals = Signals(self.rng)
        self.timeout_rate = timeout_rate
        self.service_request_rate = service_request_rate
        self.aperiodic_rate = aperiodic_rate
        self.frame = 0
        self.pending_vector: int | None = None

    def _send(self, t: float, slot_kind: str, rt: int, sa: int, n: int, *, rt2: int = 0,
              sa2: int = 0, mode_code: int = 0, flags: int = 0) -> list[m.Message]:
        """One transaction, and its retry on bus B when it times out on A."""
        source = rt2 if slot_kind == m.RT_RT else (rt if slot_kind == m.RT_BC else 0)
        data = self.signals.data(source, sa2 if slot_kind == m.RT_RT else sa, n, t)
        if slot_kind == m.MODE and mode_code == m.MODE_TRANSMIT_VECTOR:
            data = [0x0A00 | sa2]
        msg = m.build(t, "A", slot_kind, rt, sa, data, rt2=rt2, subaddress2=sa2,
                      mode_code=mode_code, status_flags=flags)
        responder = rt2 if slot_kind == m.RT_RT else rt
        if responder in RESPONSE_TIME:
            msg.gap1 = RESPONSE_TIME[responder] + self.rng.randint(-2, 2)
        if slot_kind in (m.BROADCAST_RX, m.BROADCAST_MODE):
            msg.gap1 = 0
        out = [msg]
        if responder in RESPONSE_TIME and self.rng.random() < self.timeout_rate:
            msg.timeout = True
            msg.words = msg.words[:2 if slot_kind == m.RT_RT else 1] + (
                data if slot_kind in (m.BC_RT,) else [])
            msg.gap1 = 0
            retry = m.build(t + duration(msg) + 14e-6, "B", slot_kind, rt, sa, data, rt2=rt2,
                            subaddress2=sa2, mode_code=mode_code, status_flags=flags)
            retry.gap1 = RESPONSE_TIME[responder] + self.rng.randint(-2, 2)
            out.append(retry)
        return out

    def minor_frame(self) -> list[m.Message]:
        f = self.frame
        t = f * MINOR_FRAME + self.rng.gauss(0, 0.5e-6)
        out: list[m.Message] = []
        for slot in SCHEDULE:
            if f % slot.every != slot.phase:
                continue
            flags = 0
            if slot.kind == m.RT_BC and slot.rt == 5 and self.pending_vector is None \
                    and self.rng.random() < self.service_request_rate:
                flags = m.STATUS_SERVICE_REQUEST
                self.pending_vector = 5
            for msg in self._send(t, slot.kind, slot.rt, slot.subaddress, slot.words,
                                  rt2=slot.rt2, sa2=slot.subaddress2, mode_code=slot.mode_code,
                                  flags=flags):
                out.append(msg)
                t = msg.time + duration(msg) + INTERMESSAGE_GAP
        if self.pending_vector is not None:  # aperiodic: answer the service request
            for msg in (*self._send(t, m.MODE, 5, 31, 0, mode_code=m.MODE_TRANSMIT_VECTOR,
                                    sa2=10),):
                out.append(msg)
                t = msg.time + duration(msg) + INTERMESSAGE_GAP
            for msg in self._send(t, m.RT_BC, 5, 10, 8):
                out.append(msg)
                t = msg.time + duration(msg) + INTERMESSAGE_GAP
            self.pending_vector = None
        if self.rng.random() < self.aperiodic_rate:
            out.extend(self._send(t, m.BC_RT, 4, 6, 2))
        self.frame += 1
        return out

    def run(self, seconds: float) -> list[m.Message]:
        out: list[m.Message] = []
        for _ in range(int(round(seconds / MINOR_FRAME))):
            out.extend(self.minor_frame())
        return out


def duration(msg: m.Message) -> float:
    """Time the transaction holds the bus: its words and the response gaps."""
    return len(msg.words) * WORD_TIME + (msg.gap1 + msg.gap2) * 1e-7


def packed(msgs: list[m.Message]) -> list[m.Message]:
    """The same transactions back to back, each one intermessage gap after the previous
    one ends: a fully loaded bus (1 Mbit/s, every word slot used but the gaps) carrying
    the schedule's mix of messages, ~27 times as many per second as the schedule."""
    out, t = [], msgs[0].time if msgs else 0.0
    for x in msgs:
        out.append(replace(x, time=t))
        t += duration(x) + INTERMESSAGE_GAP
    return out
