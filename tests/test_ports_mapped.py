"""Mapped ports (docs/design/channels.md, "Mapped ports"): a guest maps its port's ring
(karn/guest/karn_port.h) and moves messages without a system call each. Real partitions
(KVM monitors running tests/programs/sys_ports.c, compiled with the header): messages
arrive in order whichever ends map, a full queue holds a mapped sender back, a diode's
receiver can only read and a diode's sender never sees the receiver's page, and a sender
that fills its own ring with garbage crashes no monitor. The receiver's last wait before it
blocks is tested on the monitor's code directly.
"""

from __future__ import annotations

import json
import re
import select
import time
from pathlib import Path

import pytest
from conftest import Builder
from helpers import PORT_PAIR, SystemUp, channel, channel_ends, wait_for
from helpers import system_logs as logs
from helpers import system_status as status

from karn.kernel.fs import ports, ring

NAME = "sender.out->receiver.in"


@pytest.fixture(scope="module")
def tool(build: Builder) -> Path:
    return build("sys_ports")


def write_system(path: Path, name: str, tool: Path, sender: list[str], receiver: list[str],
                 diode: bool, mapped_sender: bool = True) -> Path:
    more = "mapped_sender = true" if mapped_sender else ""
    path.write_text(PORT_PAIR.format(name=name, tool=tool, diode=str(diode).lower(), more=more,
                                     sender=json.dumps(sender), receiver=json.dumps(receiver)))
    return path


@pytest.mark.parametrize("sender_maps,receiver_maps,diode", [
    (True, True, False), (True, False, False), (False, True, False), (True, True, True)])
def test_messages_arrive_in_order_whichever_ends_map(
        tmp_path: Path, state_env: dict[str, str], tool: Path, sender_maps: bool,
        receiver_maps: bool, diode: bool) -> None:
    messages = [f"reading {i} {'x' * i}" for i in range(6)]
    name = f"mapped{int(sender_maps)}{int(receiver_maps)}{int(diode)}"
    path = write_system(tmp_path / "s.toml", name, tool,
                        ["mapped"] * sender_maps + ["sensor", "out", *messages],
                        ["mapped"] * receiver_maps + ["logger", "in", str(len(messages))],
                        diode)
    with SystemUp(state_env, path, name):
        wait_for(lambda: "logger done" in logs(state_env, name, "receiver"), what="the logger")
        counters = channel(status(state_env, name), NAME)
        lines = logs(state_env, name, "receiver").splitlines()
    assert lines == [*messages, "logger done"]
    assert (counters["sent"], counters["received"], counters["dropped"],
            counters["queued"]) == (len(messages), len(messages), 0, 0)


def test_full_queue_holds_a_mapped_sender_back(tmp_path: Path, state_env: dict[str, str],
                                               tool: Path) -> None:
    """200 messages into a queue of 8: the mapped sender waits in write() when the
    receiver is a whole ring behind, and the receiver frees it as it reads."""
    messages = [f"m{i}" for i in range(200)]
    path = write_system(tmp_path / "q.toml", "mappedfull", tool,
                        ["mapped", "sensor", "out", *messages],
                        ["mapped", "logger", "in", str(len(messages))], diode=False)
    with SystemUp(state_env, path, "mappedfull"):
        wait_for(lambda: "logger done" in logs(state_env, "mappedfull", "receiver"),
                 what="the logger")
        counters = channel(status(state_env, "mappedfull"), NAME)
        lines = logs(state_env, "mappedfull", "receiver").splitlines()
    assert lines == [*messages, "logger done"]
    assert (counters["sent"], counters["received"], counters["dropped"]) == (200, 200, 0)


def test_diode_receiver_maps_read_only_and_sender_never_sees_its_page(
        tmp_path: Path, state_env: dict[str, str], tool: Path) -> None:
    """The receiver cannot map the ring writable; writing over its read-only view changes
    nothing the monitors read (read() still gets every message, the counts stay exact).
    A diode's sender can map the ring writable but not the receiver's page."""
    path = write_system(tmp_path / "r.toml", "mappedro", tool, ["sensor", "out", "a", "b", "c"],
                        ["mapprobe", "in", "3"], diode=True)
    with SystemUp(state_env, path, "mappedro"):
        wait_for(lambda: "got c" in logs(state_env, "mappedro", "receiver"), what="the probe")
        counters = channel(status(state_env, "mappedro"), NAME)
        receiver = logs(state_env, "mappedro", "receiver").splitlines()
    assert receiver[1:] == ["ring writable: Permission denied", "reader page: ok",
                            "private: Invalid argument", "elsewhere: Invalid argument",
                            "scribbled", "got a", "got b", "got c"]
    assert (counters["sent"], counters["received"], counters["dropped"]) == (3, 3, 0)

    path = write_system(tmp_path / "s.toml", "mappedsrc", tool, ["mapprobe", "out", "0"],
                        ["idle"], diode=True)
    with SystemUp(state_env, path, "mappedsrc"):
        sender = wait_for(lambda: (text := logs(state_env, "mappedsrc", "sender")).count(
            "\n") >= 5 and text.splitlines(), what="the probe")
    assert sender[0].endswith("source 1")
    assert sender[1:] == ["ring writable: ok", "reader page: Permission denied",
                          "private: Invalid argument", "elsewhere: Invalid argument"]


def test_diode_sender_maps_its_ring_only_where_the_system_allows(
        tmp_path: Path, state_env: dict[str, str], tool: Path) -> None:
    """Sharing the pages the receiver reads would let a diode's sender time the
    receiver's reads through the cache: without `mapped_sender = true` it keeps write()."""
    path = write_system(tmp_path / "n.toml", "mappedno", tool,
                        ["mapprobe", "out", "0"], ["idle"], diode=True, mapped_sender=False)
    with SystemUp(state_env, path, "mappedno"):
        sender = wait_for(lambda: logs(state_env, "mappedno", "sender"), what="the probe")
    assert sender == "map: Permission denied\n"


def test_garbage_in_a_senders_ring_crashes_no_monitor(
        tmp_path: Path, state_env: dict[str, str], tool: Path) -> None:
    """The published count at 2^64-1 and every slot garbage, then write()s: the sender's
    monitor wraps the count, the receiver's reads what is valid, and both stay up."""
    path = write_system(tmp_path / "h.toml", "mappedbad", tool, ["maphostile", "out"],
                        ["logger", "in", "2"], diode=False)
    with SystemUp(state_env, path, "mappedbad"):
        wait_for(lambda: "hostile done" in logs(state_env, "mappedbad", "sender"),
                 what="the hostile sender")
        text = wait_for(lambda: (t := logs(state_env, "mappedbad", "receiver")) and t,
                        what="the logger's end")
        st = status(state_env, "mappedbad")
    # Seen before or after the count wrapped, the receiver reads the two valid messages:
    # a count behind its position sets it back to what the ring holds.
    assert text.splitlines() == ["after 1", "after 2", "logger done"]
    assert "write" not in logs(state_env, "mappedbad", "sender")  # every write() worked
    counters = channel(st, NAME)
    assert counters["sent"] == 2  # wrapped: 2^64-1, then 0, 1, 2
    for part in st["partitions"]:
        assert part["restarts"] == 0, part


def test_receivers_last_wait_covers_a_mapped_senders_silence(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A mapped sender wakes the receiver at most every notify_ns: before the receiver's
    monitor blocks for good it waits until notify_ns after its last drain of wake-ups, so
    a message published without a wake-up meanwhile is seen."""
    sender, receiver, sockets = channel_ends(diode=False)
    monkeypatch.setattr(ports, "spare_core", lambda: False)  # no spin: only the last wait

    assert receiver.ring.notify_ns() == 0  # the sender's monitor publishes: no wait
    assert not receiver.wait_for_data()

    window = 0.3
    monkeypatch.setattr(ring, "NOTIFY_MAX_NS", 60_000_000_000)
    sender.writer.set_notify(int(window * 1e9))  # as when the sender's guest maps its ring
    receiver.arm()  # drains the wake-ups
    drained = time.monotonic()
    assert not receiver.wait_for_data()
    assert time.monotonic() - drained >= window * 0.99  # CLOCK_MONOTONIC both

    # A wake-up written after the drain (an earlier message's) ends the wait at once, and
    # the wait looks at the ring without draining: the fd stays readable, so a message
    # published after that look, with its own wake-up skipped, is still waited for.
    sender.writer.set_notify(60_000_000_000)
    receiver.arm()
    sender.notify()
    begun = time.monotonic()
    assert not receiver.wait_for_data()
    assert time.monotonic() - begun < 30  # not the 60 s window: the wake-up ended it
    assert select.select([receiver.epoll.fileno()], [], [], 0)[0]
    sender.writer.write(b"no wake-up")  # as the guest does between its wake-ups
    assert receiver.next_queued() == b"no wake-up"
    for sock in sockets:
        sock.close()


def test_counts_from_shared_memory_wrap_instead_of_overflowing() -> None:
    geo = ring.Geometry(4, 64)
    ring_fd = ring.create("wrap", geo.size)
    reader_fd = ring.create("wrap-reader", ring.READER_SIZE)
    writer = ring.RingWriter(ring_fd, geo)
    ring.PUBLISHED.pack_into(writer.mem, 0, ring.U64)  # a guest's garbage
    writer.write(b"x")
    assert writer.published == 0
    reader = ring.RingReader(ring.reopen_readonly(ring_fd), reader_fd, geo)
    reader.page.store(ring.U64, ring.U64, ring.U64, ring.U64)  # a guest's garbage too
    reader.reload()
    assert reader.take() is None  # nothing: the count (0) is behind the position...
    assert reader.position == 0  # ...which goes back to what the ring holds
    reader.dropped += 1
    reader.commit()  # 2^64 wraps to 0
    assert reader.page.load()[2] == 0


def test_header_and_monitor_agree_on_the_abi() -> None:
    """karn_port.h's numbers are abi/portmap.py's and ring.py's."""
    from karn.abi import portmap
    from karn.guest import INCLUDE

    text = (Path(INCLUDE) / "karn_port.h").read_text()
    defines = {name: int(value, 0) for name, value in re.findall(
        r"#define (KARN_PORT_\w+) (0x[0-9a-fA-F]+|\d+)(?:UL|u)?\s", text)}
    assert defines == {
        "KARN_PORT_INFO": portmap.PORT_INFO, "KARN_PORT_NOTIFY": portmap.PORT_NOTIFY,
        "KARN_PORT_ARM": portmap.PORT_ARM, "KARN_PORT_FREED": portmap.PORT_FREED,
        "KARN_PORT_SOURCE": portmap.FLAG_SOURCE, "KARN_PORT_QUEUING": portmap.FLAG_QUEUING,
        "KARN_PORT_BACKPRESSURE": portmap.FLAG_BACKPRESSURE,
        "KARN_PORT_HEADER": ring.HEADER_SIZE, "KARN_PORT_SLOT_HEADER": ring.SLOT_HEADER.size}
    body = re.search(r"struct karn_port_info \{(.*?)\};", text, re.S)
    assert body is not None
    formats = ""  # each declaration: its type's struct code once per name
    for kind, names in re.findall(r"uint(32|64)_t ([\w, ]+);", body[1]):
        formats += ("I" if kind == "32" else "Q") * len(names.split(","))
    assert "<" + formats == portmap.INFO.format
