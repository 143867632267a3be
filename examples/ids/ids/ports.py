"""The partitions' side of karn ports (docs/systems.md): /dev/ports/NAME, one write() one
message, one read() one message. Messages here are compact JSON documents."""

from __future__ import annotations

import json
import os
import time

PORTS = os.environ.get("IDS_PORTS", "/dev/ports")
MAX_SIZE = 65536


class Port:
    def __init__(self, name: str, direction: str) -> None:
        self.name = name
        flags = os.O_WRONLY if direction == "out" else os.O_RDONLY | os.O_NONBLOCK
        self.fd = os.open(os.path.join(PORTS, name), flags)

    def send(self, doc: dict) -> int:
        return self.write(encode(doc))

    def write(self, data: bytes) -> int:
        """Bytes the write took (one write is one message: all of them, or an error)."""
        return os.write(self.fd, data)

    def receive(self) -> dict | None:
        """The next message, or None when none is waiting."""
        try:
            data = os.read(self.fd, MAX_SIZE)
        except BlockingIOError:
            return None
        return json.loads(data)

    def fileno(self) -> int:
        return self.fd


def encode(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def chunks(items: list, size: int) -> list[list]:
    """items in pieces of at most size (at least one piece, maybe empty)."""
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


class Busy:
    """A stage's work: messages per stream, and the time spent on them (inside `with`,
    not waiting for input), from which its capacity in messages/s follows."""

    def __init__(self) -> None:
        self.messages: dict[str, int] = {}
        self.seconds = 0.0
        self.first = self.last = 0.0
        self.lags: list[float] = []  # since the tap sent each frame (the host's clock)

    def count(self, stream: str, messages: int) -> None:
        self.messages[stream] = self.messages.get(stream, 0) + messages

    def sent_at(self, at: int | None) -> None:
        """at: the tap's monotonic clock in microseconds (an integer: every frame's stamp
        has the same length, so the tap's byte count does not depend on when it ran)."""
        if at is not None:
            self.lags.append(time.monotonic() - at / 1e6)

    def __enter__(self) -> None:
        self.began = time.monotonic()
        self.first = self.first or self.began

    def __exit__(self, *exc: object) -> None:
        self.last = time.monotonic()
        self.seconds += self.last - self.began

    def __str__(self) -> str:
        counts = ", ".join(f"{s} {n}" for s, n in sorted(self.messages.items()))
        total = sum(self.messages.values())
        return (f"{counts} messages; busy {self.seconds:.3f} s "
                f"({total / max(self.seconds, 1e-9):,.0f} messages/s), "
                f"first to last {self.last - self.first:.3f} s, ending at {self.last:.3f}; "
                f"since the tap: {self._lag()}")

    def _lag(self) -> str:
        if not self.lags:
            return "-"
        lags = sorted(self.lags)
        return (f"p50 {lags[len(lags) // 2] * 1e3:.1f} ms, p99 "
                f"{lags[len(lags) * 99 // 100] * 1e3:.1f} ms, max {lags[-1] * 1e3:.1f} ms")
