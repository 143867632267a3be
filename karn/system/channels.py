"""Channels as the supervisor sets them up: a shared-memory ring per channel between the
sender's and the receiver's monitors (kernel/fs/ring.py, docs/design/channels.md). The
supervisor creates the memory and the wake-up fds once, hands each partition its ends
at every (re)start, reads the counters, and logs the guard's rejections that the
receiver's monitor reports; it never touches a message.

What each side gets:

* sender: the ring writable, the wake pipe's write end; for an ordinary queuing channel
  also the reader page read-only and the shared "space" eventfd (back-pressure). A
  diode's sender gets nothing the receiver writes.
* receiver: the ring read-only (a new read-only open of the memfd: no writable mapping
  is possible), the wake pipe's read end, its reader page writable, the space eventfd
  (ordinary queuing), a socket for rejection reports, and the guard.

The supervisor keeps every fd (both pipe ends included) for the system's life, so a
restarted partition continues where it stopped, and the end of a partition never changes
what the other side sees (the wake pipe never loses its last reader or writer).

A hostile sender can have every message rejected: the rejections are logged one line
each up to LOG_LINES per LOG_WINDOW per channel, then counted and summed up in one line
when the window ends, so the event log grows by a bounded amount whatever the rate.
Reports carry the receiver's running count of rejections, so none is logged twice and
reports lost on a full socket are still summed up from the counter.

Counters: sent (messages the sender wrote), rejected (by the guard), dropped (overwritten
through a diode before they were read; for sampling, values superseded before they were
read), received (read by the receiver), queued (written and not read yet).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from karn.kernel.fs import ring
from karn.kernel.fs.ports import REPORT, PortSpec
from karn.system.description import Channel, Port

LOG_LINES = 50  # rejection lines per channel per window; the rest are summed up
MAX_REASON = 200  # characters of a rejection's reason kept (it can quote the message)
LOG_WINDOW = 1.0  # seconds
SAMPLING_SLOTS = 4  # a sampling ring keeps a few values, so the newest is rarely rewritten
REPORTS_PER_EVENT = 256  # reports taken per readiness event (fairness)


class Hop:
    """One ring between a writer and a reader (a channel has one; a guarded channel two:
    sender -> guard process -> receiver), with every fd both ends need."""

    def __init__(self, name: str, geometry: ring.Geometry, backpressure: bool,
                 sampling: bool) -> None:
        self.geometry = geometry
        self.backpressure = backpressure
        self.sampling = sampling
        self.ring_fd = ring.create(f"ring-{name}", geometry.size)
        self.ring_ro = ring.reopen_readonly(self.ring_fd)
        self.reader_fd = ring.create(f"reader-{name}", ring.READER_SIZE)
        self.reader_ro = ring.reopen_readonly(self.reader_fd)
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.space = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) if backpressure else -1
        self.view = ring.map_readonly(self.ring_ro, geometry.size)
        self.page = ring.ReaderPage(self.reader_ro, writable=False)

    def writer(self, **port: object) -> tuple[PortSpec, list[int]]:
        reader = self.reader_ro if self.backpressure else -1  # a diode: never the reader's
        spec = PortSpec(direction="out", ring=self.ring_fd, wake=self.wake_w, reader=reader,
                        space=self.space, slots=self.geometry.slots,
                        slot_size=self.geometry.slot_size, **port)  # type: ignore[arg-type]
        return spec, [fd for fd in (self.ring_fd, self.wake_w, reader, self.space) if fd >= 0]

    def reader(self, report: int, **port: object) -> tuple[PortSpec, list[int]]:
        spec = PortSpec(direction="in", ring=self.ring_ro, wake=self.wake_r,
                        reader=self.reader_fd, space=self.space, report=report,
                        slots=self.geometry.slots, slot_size=self.geometry.slot_size,
                        **port)  # type: ignore[arg-type]
        fds = [self.ring_ro, self.wake_r, self.reader_fd, report, self.space]
        return spec, [fd for fd in fds if fd >= 0]

    def counters(self) -> ring.ChannelCounters:
        return ring.counters(self.view, self.page, self.geometry, self.sampling)

    def close(self) -> None:
        self.view.close()
        self.page.close()
        for fd in (self.ring_fd, self.ring_ro, self.reader_fd, self.reader_ro, self.wake_r,
                   self.wake_w, self.space):
            if fd >= 0:
                os.close(fd)


class ChannelRun:
    """One channel's rings, counters and rejection log."""

    def __init__(self, desc: Channel, log: Callable[[str], None]) -> None:
        self.desc = desc
        self.name = desc.name
        self.kind = desc.dest.kind
        self.sampling = self.kind == "sampling"
        backpressure = self.kind == "queuing" and not desc.diode
        slots = SAMPLING_SLOTS if self.sampling else desc.dest.depth
        safe = self.name.replace("/", "_")
        self.hops = [Hop(safe, ring.Geometry(slots, desc.source.max_size), backpressure,
                         self.sampling)]
        if desc.guard is not None:  # the guard process writes at most the channel's limit
            self.hops.append(Hop(f"{safe}-guarded", ring.Geometry(slots, desc.max_size),
                                 backpressure, self.sampling))
        self.log = log
        self.reports: socket.socket | None = None  # the rejecting reader's, while it runs
        self.accounted = 0  # rejections logged one by one or summed up
        self.last_reason = ""
        self.log_window = -LOG_WINDOW  # when the current window of rejection lines began
        self.log_lines = 0  # lines logged in it
        self.unlogged = 0  # rejections counted but not logged in it

    @property
    def guarded(self) -> bool:
        return len(self.hops) == 2

    def _port(self, port: Port) -> dict:
        return dict(name=port.name, kind=port.kind, max_size=port.max_size,
                    limit=self.desc.max_size, refresh_ms=port.refresh_ms)

    def endpoint(self, port: Port, report: int) -> tuple[PortSpec, list[int]]:
        """One partition's end and the fds its monitor inherits (`report`: the reader's
        end of its report socket)."""
        if port.direction == "out":
            return self.hops[0].writer(map_ring=self.desc.sender_maps, **self._port(port))
        return self.hops[-1].reader(report, **self._port(port))

    def guard_ends(self, report: int) -> tuple[PortSpec, PortSpec, list[int]]:
        """The guard process's reading end (with the guard) and writing end."""
        assert self.desc.guard is not None
        port = dict(kind=self.kind, max_size=self.desc.max_size, limit=self.desc.max_size,
                    refresh_ms=0.0)
        into, fds_in = self.hops[0].reader(report, name="from-sender",
                                           guard=self.desc.guard.to_json(), **port)
        out, fds_out = self.hops[1].writer(name="to-receiver", **port)
        return into, out, fds_in + fds_out

    def close(self) -> None:
        for hop in self.hops:
            hop.close()

    # -- rejections ---------------------------------------------------------------------
    def reports_readable(self) -> bool:
        """Rejection reports from the receiver; False when its end is gone."""
        sock = self.reports
        assert sock is not None
        for _ in range(REPORTS_PER_EVENT):
            try:
                data = sock.recv(REPORT.size + 4 * MAX_REASON + 8)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            if len(data) >= REPORT.size:
                ordinal, number, size = REPORT.unpack_from(data)
                self._rejected(ordinal, number, size, data[REPORT.size :].decode(
                    errors="replace"))
        return True

    def _rejected(self, ordinal: int, number: int, size: int, reason: str) -> None:
        self._new_window()
        if ordinal <= self.accounted:
            return  # summed up already
        if len(reason) > MAX_REASON:  # the receiver's monitor cuts it; a hostile one might not
            reason = reason[:MAX_REASON] + "..."
        self.last_reason = reason
        self.unlogged += ordinal - 1 - self.accounted  # reports lost on a full socket
        self.accounted = ordinal
        if self.log_lines < LOG_LINES:
            self.log_lines += 1
            self.log(f"channel {self.name}: rejected message {number} ({size} bytes): "
                     f"{reason}")
        else:
            self.unlogged += 1

    def _new_window(self) -> None:
        now = time.monotonic()
        if now - self.log_window >= LOG_WINDOW:
            self._sum_up(now - self.log_window)
            self.log_window, self.log_lines = now, 0

    def summarise(self, ended: bool = False) -> None:
        """One line for the rejections not logged one by one, once their window is over
        (or the system stops: ended). The reader's counter is the truth: rejections
        whose report never came (the socket was full) are summed up too. The counter is
        read first and the reports after: the reader sends a report before it counts,
        so every rejection in the count has its report read by then (or lost)."""
        counted = self.hops[0].counters().rejected  # the page of the judging reader,
        # which no guest of a guarded channel writes (a mapped receiver writes its own)
        if self.reports is not None:
            self.reports_readable()
        elapsed = time.monotonic() - self.log_window
        if ended or elapsed >= LOG_WINDOW:
            if counted > self.accounted:
                self.unlogged += counted - self.accounted
                self.accounted = counted
            self._sum_up(elapsed)

    def _sum_up(self, elapsed: float) -> None:
        if self.unlogged:
            self.log(f"channel {self.name}: {self.unlogged} more rejected messages in the "
                     f"last {elapsed:.1f} s, not logged one by one (the last: "
                     f"{self.last_reason})")
            self.unlogged = 0

    # -- status -------------------------------------------------------------------------
    def counters_now(self) -> ring.ChannelCounters:
        """The channel's counters from its rings: what the guard forwarded is the second
        ring's sent, so it is not counted twice."""
        first = self.hops[0].counters()
        if not self.guarded:
            return first
        second = self.hops[1].counters()  # (only the guard rejects: the guard's count)
        return ring.ChannelCounters(first.sent, second.received,
                                    first.dropped + second.dropped, first.rejected,
                                    first.queued + second.queued)

    def counters(self) -> dict:
        now = self.counters_now()
        return {
            "name": self.name, "from": self.desc.source.ref, "to": self.desc.dest.ref,
            "kind": self.kind, "diode": self.desc.diode,
            "guard": self.desc.guard.name if self.desc.guard else None,
            "sent": now.sent, "received": now.received, "dropped": now.dropped,
            "rejected": now.rejected, "queued": now.queued,
            "last_rejection": self.last_reason,
        }
