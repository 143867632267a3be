"""Channels as the supervisor runs them: messages from a source port's socket, through
the guard, into a destination port's socket, with ARINC 653 port semantics.

* queuing: a FIFO of at most `depth` messages (those waiting here plus those delivered to
  the receiver's socket but not yet read: the receiver's port acknowledges each read).
  When full, an ordinary channel stops reading the sender (it blocks, or gets EAGAIN
  with O_NONBLOCK, once its socket buffer is full); a diode drops the new message.
* sampling: only the latest message counts; it is forwarded at once, and a receiver that
  cannot take it now gets the newest one when it can.
* diode: the sender's socket is always drained at once and nothing is ever written to it
  (its supervisor end is shut for writing), so nothing about the receiver reaches the
  sender; overflow is counted on the receiving side only.

A hostile sender can have every message rejected: the rejections are logged one line
each up to LOG_LINES per LOG_WINDOW per channel, then counted and summed up in one line
when the window ends, so the event log grows by a bounded amount whatever the rate.

Counters: sent (messages the sender wrote), rejected (by the guard), dropped (overflow,
or delivered to a receiver that died before reading them), received (read by the
receiver; for sampling, delivered), queued (waiting or unread).
"""

from __future__ import annotations

import socket
import time
from collections import deque
from collections.abc import Callable

from karn.kernel.fs.ports import HEADER
from karn.system.description import Channel
from karn.system.guards import GuardCheck, Rejected

MAX_BATCH = 256  # messages taken from one socket per readiness event (fairness)
ACK_READ = 4096
LOG_LINES = 50  # rejection lines per channel per window; the rest are summed up
MAX_REASON = 200  # characters of a rejection's reason kept (it can quote the message)
LOG_WINDOW = 1.0  # seconds


def now_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


class ChannelRun:
    """One channel's state and counters. The supervisor tells it when a socket is
    readable or writable; `interest` says which events it wants on each socket now."""

    def __init__(self, desc: Channel, log: Callable[[str], None]) -> None:
        self.desc = desc
        self.name = desc.name
        self.kind = desc.dest.kind
        self.depth = desc.dest.depth
        self.limit = desc.max_size
        self.guard = GuardCheck(desc.guard) if desc.guard is not None else None
        self.log = log
        self.source: socket.socket | None = None
        self.dest: socket.socket | None = None
        self.queue: deque[bytes] = deque()  # header + payload, ready to send
        self.in_flight = 0  # in the receiver's socket, not yet acknowledged
        self.latest: bytes | None = None  # sampling: header + payload
        self.latest_pending = False  # sampling: the receiver has not been given latest
        self.sent = self.received = self.dropped = self.rejected = 0
        self.last_reason = ""
        self.log_window = -LOG_WINDOW  # when the current window of rejection lines began
        self.log_lines = 0  # lines logged in it
        self.unlogged = 0  # rejections counted but not logged in it

    # -- endpoints ----------------------------------------------------------------------
    def attach_source(self, sock: socket.socket) -> None:
        if self.desc.diode:
            sock.shutdown(socket.SHUT_WR)  # nothing can ever flow back to the sender
        self.source = sock

    def attach_dest(self, sock: socket.socket) -> None:
        self.dest = sock
        self.in_flight = 0
        if self.latest is not None:
            self.latest_pending = True  # a restarted receiver sees the current value
        self.flush()

    def detach_dest(self) -> None:
        self.dropped += self.in_flight  # delivered to a receiver that never read them
        self.in_flight = 0
        self.dest = None

    def detach_source(self) -> None:
        self.source = None

    @property
    def queued(self) -> int:
        return len(self.queue) + self.in_flight

    def _full(self) -> bool:
        return self.kind == "queuing" and self.queued >= self.depth

    def wants_source(self) -> bool:
        """Read the sender now? A diode always; otherwise while the queue has room."""
        return self.source is not None and (self.desc.diode or not self._full())

    def wants_dest_write(self) -> bool:
        return self.dest is not None and (bool(self.queue) if self.kind == "queuing"
                                          else self.latest_pending)

    # -- events -------------------------------------------------------------------------
    def source_readable(self) -> bool:
        """Take the sender's messages; False when the sender's end is gone."""
        sock = self.source
        assert sock is not None
        for _ in range(MAX_BATCH):
            if not self.wants_source():
                break
            try:
                data = sock.recv(self.limit + 1)
            except BlockingIOError:
                break
            except OSError:
                return False
            if not data:
                return False  # EOF: the partition ended (SEQPACKET has no empty messages)
            self.offer(data)
        self.flush()
        return True

    def offer(self, data: bytes) -> None:
        self.sent += 1
        try:
            forward = self._judge(data)
        except Rejected as err:
            self.rejected += 1
            reason = str(err)
            self.last_reason = reason if len(reason) <= MAX_REASON else reason[:MAX_REASON] + "..."
            self._log_rejection(f"channel {self.name}: rejected message {self.sent} "
                                f"({len(data)} bytes): {self.last_reason}")
            return
        message = HEADER.pack(now_ns()) + forward
        if self.kind == "sampling":
            self.latest = message
            self.latest_pending = True
        elif self._full():
            self.dropped += 1  # only a diode reads a sender while full
        else:
            self.queue.append(message)

    def _log_rejection(self, line: str) -> None:
        now = time.monotonic()
        if now - self.log_window >= LOG_WINDOW:
            self.summarise()
            self.log_window, self.log_lines = now, 0
        if self.log_lines < LOG_LINES:
            self.log_lines += 1
            self.log(line)
        else:
            self.unlogged += 1

    def summarise(self, ended: bool = False) -> None:
        """One line for the rejections not logged one by one, once their window is over
        (or the system stops: ended)."""
        elapsed = time.monotonic() - self.log_window
        if self.unlogged and (ended or elapsed >= LOG_WINDOW):
            self.log(f"channel {self.name}: {self.unlogged} more rejected messages in the "
                     f"last {elapsed:.1f} s, not logged one by one (the last: "
                     f"{self.last_reason})")
            self.unlogged = 0

    def _judge(self, data: bytes) -> bytes:
        """What to forward (the guard may canonicalise it); Rejected with the reason."""
        if len(data) > self.limit:
            raise Rejected(f"size over the channel's limit of {self.limit}")
        if self.guard is None:
            return data
        forward = self.guard.check(data)
        if len(forward) > self.limit:  # a canonical number can be longer than the sender's
            raise Rejected(f"canonical form ({len(forward)} bytes) over the channel's limit "
                           f"of {self.limit}")
        return forward

    def flush(self) -> None:
        """Give the receiver what it may take now."""
        sock = self.dest
        if sock is None:
            return
        try:
            if self.kind == "sampling":
                if self.latest_pending and self.latest is not None:
                    sock.send(self.latest)
                    self.latest_pending = False
                    self.received += 1
                return
            while self.queue:
                sock.send(self.queue[0])
                self.queue.popleft()
                self.in_flight += 1
        except BlockingIOError:
            pass  # the receiver's socket is full: wait for writability
        except OSError:
            pass  # the receiver is gone; its exit detaches it

    def dest_readable(self) -> bool:
        """Acknowledgements of queuing reads; False when the receiver's end is gone."""
        sock = self.dest
        assert sock is not None
        while True:
            try:
                data = sock.recv(ACK_READ)
            except BlockingIOError:
                break
            except OSError:
                return False
            if not data:
                return False
            if self.in_flight:
                self.in_flight -= 1
                self.received += 1
        self.flush()
        return True

    def counters(self) -> dict:
        return {
            "name": self.name, "from": self.desc.source.ref, "to": self.desc.dest.ref,
            "kind": self.kind, "diode": self.desc.diode,
            "guard": self.desc.guard.name if self.desc.guard else None,
            "sent": self.sent, "received": self.received, "dropped": self.dropped,
            "rejected": self.rejected, "queued": self.queued if self.kind == "queuing" else
            int(self.latest_pending), "last_rejection": self.last_reason,
        }
