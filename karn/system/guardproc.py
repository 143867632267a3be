"""A guarded channel's guard process: reads the sender's ring, checks each message, and
writes what passes (its canonical form) into the receiver's ring (docs/design/channels.md).

It is a process of its own, between two rings: the sender can only write the first ring
and the receiver can only read the second, which only this process writes, so neither
can go around the guard; messages are judged as they arrive, whatever the receiver does;
and a parser bug that a hostile message finds is confined to this process, which holds
nothing but the two rings. The supervisor starts it with the two ends as `karn run
--port` JSON (kernel/fs/ports.py) and restarts it if it ends.

    python3 -m karn.system.guardproc FROM_SENDER_JSON TO_RECEIVER_JSON
"""

from __future__ import annotations

import ctypes
import select
import signal
import sys

from karn.kernel.fs.ports import DestPort, PortSpec, SourcePort
from karn.system.guards import Guard, GuardCheck

PR_SET_PDEATHSIG = 1
BATCH = 64  # messages judged before they are passed on together


def wait(fd: int, events: int) -> None:
    poller = select.poll()
    poller.register(fd, events)
    poller.poll()


def serve(into: DestPort, out: SourcePort) -> None:
    sampling = into.spec.kind == "sampling"
    while True:
        room = out.room()
        if not room:  # back-pressure: leave it in the first ring
            if out.full():
                wait(out.ready, select.POLLOUT)
            continue
        if sampling:
            batch = [into.latest] if into.refresh_sampling() and into.latest is not None \
                else []
        else:  # what has come, up to what fits: one wake-up and one commit for them all
            batch = into.take_queued(min(room, BATCH), commit=False)
        if not batch:
            into.commit_taken()  # slots skipped as overwritten, if any
            if not into.wait_for_data():  # a short spin first, as a receiving monitor
                wait(into.epoll.fileno(), select.POLLIN)
            continue
        out.send_many(batch)  # this process is the ring's only writer: room() holds
        into.commit_taken()  # only now: one that dies before re-sends them (at least once)


def main(argv: list[str]) -> int:
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if len(argv) != 2:
        print("usage: python3 -m karn.system.guardproc FROM_JSON TO_JSON", file=sys.stderr)
        return 2
    try:
        into_spec, out_spec = PortSpec.parse(argv[0], guarded=True), PortSpec.parse(argv[1])
        if into_spec.guard is None:
            raise ValueError("the reading end has no guard")
        check = GuardCheck(Guard.from_json(into_spec.guard)).check
    except (ValueError, TypeError, KeyError) as err:
        print(f"karn: guard process: {err}", file=sys.stderr)
        return 2
    serve(DestPort(into_spec._replace(check=check)), SourcePort(out_spec))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
