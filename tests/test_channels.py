"""Channels as shared-memory rings (docs/design/channels.md): one-way enforced by the host
kernel, the receiver's position private to it, overflow as sequence gaps, exact counters,
and a guard no sender can go around. The ring tests use real memfds and mappings; the
system tests run real partitions (KVM monitors with tests/programs/sys_ports.c) and look
at what each monitor process actually holds, in /proc.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import select
import struct
import threading
from pathlib import Path

import pytest
from conftest import Builder
from helpers import PORT_PAIR, SystemUp, channel, channel_ends, wait_for
from helpers import system_logs as logs
from helpers import system_status as status

from karn.kernel.fs import ports, ring
from karn.platform.hostload import LOAD_EVERY, SpareCore


@pytest.fixture(scope="module")
def tool(build: Builder) -> Path:
    return build("sys_ports")


def make_ring(slots: int, slot_size: int = 64) -> tuple[ring.Geometry, int, int, int]:
    geo = ring.Geometry(slots, slot_size)
    ring_fd = ring.create("test-ring", geo.size)
    reader_fd = ring.create("test-reader", ring.READER_SIZE)
    return geo, ring_fd, ring.reopen_readonly(ring_fd), reader_fd


def test_receiver_view_of_a_ring_cannot_be_written() -> None:
    geo, ring_fd, ring_ro, reader_fd = make_ring(8)
    writer = ring.RingWriter(ring_fd, geo)
    reader = ring.RingReader(ring_ro, reader_fd, geo)
    writer.write(b"hello")
    before = bytes(writer.mem)
    with pytest.raises(PermissionError):  # no writable mapping of a read-only open
        mmap.mmap(ring_ro, geo.size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    with pytest.raises(OSError) as err:
        os.pwrite(ring_ro, b"forged", ring.HEADER_SIZE)
    assert err.value.errno == errno.EBADF
    with pytest.raises(OSError):
        os.ftruncate(ring_ro, 0)
    with pytest.raises(TypeError):  # the reader's own mapping is read-only too
        reader.mem[0:8] = b"\xff" * 8
    assert bytes(writer.mem) == before  # nothing the sender reads has changed
    message = reader.take()
    assert message is not None and (message.seq, message.data) == (0, b"hello")
    for fd in (ring_fd, ring_ro, reader_fd):
        os.close(fd)


def test_overflow_shows_as_a_sequence_gap_and_counts_stay_exact() -> None:
    geo, ring_fd, ring_ro, reader_fd = make_ring(8)
    writer = ring.RingWriter(ring_fd, geo)
    reader = ring.RingReader(ring_ro, reader_fd, geo)
    supervisor = ring.ReaderPage(ring.reopen_readonly(reader_fd), writable=False)
    view = ring.map_readonly(ring_ro, geo.size)
    for i in range(20):
        writer.write(f"m{i}".encode())
    # Before the receiver looks: 8 kept, 12 overwritten, all accounted for.
    assert ring.counters(view, supervisor, geo, sampling=False) == (20, 0, 12, 0, 8)
    first = reader.take()
    assert first is not None and (first.seq, first.data) == (12, b"m12")  # the gap: 0-11
    reader.received += 1
    reader.commit()
    assert ring.counters(view, supervisor, geo, sampling=False) == (20, 1, 12, 0, 7)
    rest = []
    while (message := reader.take()) is not None:
        rest.append(message.data)
        reader.received += 1
    reader.commit()
    assert rest == [f"m{i}".encode() for i in range(13, 20)]
    assert ring.counters(view, supervisor, geo, sampling=False) == (20, 8, 12, 0, 0)


def test_sampling_reader_takes_the_newest_and_counts_the_superseded() -> None:
    geo, ring_fd, ring_ro, reader_fd = make_ring(4)
    writer = ring.RingWriter(ring_fd, geo)
    reader = ring.RingReader(ring_ro, reader_fd, geo)
    for i in range(3):
        writer.write(f"v{i}".encode())
    latest = reader.latest()
    assert latest is not None and latest.data == b"v2"
    assert reader.latest() is None  # nothing newer
    assert reader.dropped == 2


GUARD = """guard = "g"
[guards.g]
schema = { type = "object", required = ["id"], properties = { id = { type = "integer" } } }
"""



def test_receiver_spins_for_a_message_before_it_blocks(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    """DestPort.wait_for_data: a message published during the spin makes the port's fd
    readable and is read; a spin in vain makes the next SPIN_SKIP waits block at once;
    with no core to spare it does not spin."""
    if ports._wait_u64 is None:
        pytest.skip("the C helper (_fastpoll) is not built")
    sender, receiver, sockets = channel_ends(diode=True)
    readable = select.poll()
    readable.register(receiver.epoll.fileno(), select.POLLIN)

    monkeypatch.setattr(ports, "spare_core", lambda: False)  # a busy host: no spin
    monkeypatch.setattr(ports, "SPIN_NS", 30_000_000_000)  # (the test would hang)
    assert not receiver.wait_for_data() and receiver.skip == 0

    monkeypatch.setattr(ports, "spare_core", lambda: True)
    monkeypatch.setattr(ports, "SPIN_NS", 10_000)
    assert not receiver.wait_for_data() and receiver.skip == ports.SPIN_SKIP
    for left in range(ports.SPIN_SKIP, 0, -1):  # these block at once (no spin)
        assert receiver.skip == left and not receiver.wait_for_data()
    assert receiver.skip == 0 and not readable.poll(0)

    monkeypatch.setattr(ports, "SPIN_NS", 30_000_000_000)  # ends with the message
    started = threading.Event()

    def send_later() -> None:
        started.wait()
        sender.send(b"during the spin")

    thread = threading.Thread(target=send_later)
    thread.start()
    started.set()
    assert receiver.wait_for_data()
    thread.join()
    assert readable.poll(0)
    assert receiver.next_queued() == b"during the spin"
    assert not readable.poll(0)  # exactly while messages wait
    for sock in sockets:
        sock.close()


def test_spin_only_with_a_core_to_spare() -> None:
    """The host's 1-minute load average against SPARE_LOAD per core, from sysinfo(2)."""
    spare = SpareCore(ports.SPARE_LOAD)
    assert isinstance(spare(), bool)  # the real one answers
    load = 0.0

    def sysinfo(buffer: object) -> int:
        struct.pack_into("<Q", buffer, 8, int(load * (1 << 16)))  # type: ignore[arg-type]
        return 0

    spare.sysinfo = sysinfo
    for load, expected in ((0.5, True), (spare.limit + 0.5, False), (spare.limit - 0.5, True)):
        spare.when = -LOAD_EVERY  # look again now
        assert spare() is expected, load


def held_memfds(pid: int) -> dict[str, tuple[int, str]]:
    """The karn memfds a process holds: name -> (access mode, mapping permissions)."""
    maps: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/maps") as f:
            lines = f.readlines()
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:  # a restarted partition's old pid: nothing (yet)
        return {}
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and "memfd:karn-" in fields[5]:
            maps[fields[5].split("memfd:")[1].split()[0]] = fields[1]
    out = {}
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = next(int(x.split()[1], 8) for x in f if x.startswith("flags:"))
        except OSError:
            continue
        if "memfd:karn-" in target:
            name = target.split("memfd:")[1].split()[0]
            out[name] = (flags & os.O_ACCMODE, maps.get(name, ""))
    return out


def pids(env: dict[str, str], name: str) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in status(env, name)["partitions"]}


def test_diode_ends_hold_only_their_side(tmp_path: Path, state_env: dict[str, str],
                                        tool: Path) -> None:
    """The receiver's monitor holds the ring read-only and maps it read-only; the sender's
    monitor holds nothing of the receiver's page (its read position)."""
    path = tmp_path / "diode.toml"
    path.write_text(PORT_PAIR.format(name="ringdiode", tool=tool, diode="true", more="",
                                  sender=json.dumps(["idle"]),
                                  receiver=json.dumps(["idle"])))
    with SystemUp(state_env, path, "ringdiode"):
        ids = wait_for(lambda: (p := pids(state_env, "ringdiode")) and all(p.values()) and p,
                       what="both partitions")
        ring_name = "karn-ring-sender.out->receiver.in"
        reader_name = "karn-reader-sender.out->receiver.in"
        receiver = wait_for(lambda: (h := held_memfds(ids["receiver"])).get(ring_name, (0, ""))[1]
                            and h, what="the receiver's mapping")
        sender = wait_for(lambda: (h := held_memfds(ids["sender"])).get(ring_name, (0, ""))[1]
                          and h, what="the sender's mapping")
    assert receiver[ring_name] == (os.O_RDONLY, "r--s")
    assert receiver[reader_name][0] == os.O_RDWR
    assert sender[ring_name] == (os.O_RDWR, "rw-s")
    assert reader_name not in sender  # the sender cannot read the receiver's position


def test_diode_counters_exact_with_a_stalled_receiver(
        tmp_path: Path, state_env: dict[str, str], tool: Path) -> None:
    count = 50
    path = tmp_path / "gap.toml"
    path.write_text(PORT_PAIR.format(name="ringgap", tool=tool, diode="true", more="",
                                  sender=json.dumps(["sender", "out", str(count), "0"]),
                                  receiver=json.dumps(["idle"])))
    with SystemUp(state_env, path, "ringgap"):
        wait_for(lambda: "slowest_us" in logs(state_env, "ringgap", "sender"), what="sender")
        counters = channel(status(state_env, "ringgap"), "sender.out->receiver.in")
    assert (counters["sent"], counters["received"], counters["dropped"],
            counters["queued"]) == (count, 0, count - 8, 8)


def test_guard_process_cannot_be_bypassed(tmp_path: Path, state_env: dict[str, str],
                                          tool: Path) -> None:
    """The receiver reads only the guard process's ring: what the guard rejects never
    reaches it, and its monitor holds no fd of the ring the sender writes."""
    messages = ['{"id": 1}', '{"id": "x"}', "not json", '{"id": 1, "id": 2}', '{"id": 4}']
    path = tmp_path / "guard.toml"
    path.write_text(PORT_PAIR.format(name="ringguard", tool=tool, diode="true", more=GUARD,
                                  sender=json.dumps(["sensor", "out", *messages]),
                                  # waits for a third message: alive while we look
                                  receiver=json.dumps(["logger", "in", "3"])))
    guarded = "karn-ring-sender.out->receiver.in-guarded"
    passed = ['{"id":1}', '{"id":4}']  # the canonical forms
    with SystemUp(state_env, path, "ringguard"):
        held = wait_for(lambda: (p := pids(state_env, "ringguard")["receiver"]) and
                        guarded in (h := held_memfds(p)) and h, what="the receiver's ring")
        wait_for(lambda: logs(state_env, "ringguard", "receiver").splitlines() == passed,
                 what="the receiver")
        counters = wait_for(lambda: (c := channel(status(state_env, "ringguard"),
                                                 "sender.out->receiver.in"))["rejected"] == 3
                            and c, what="the rejections")
        events = logs(state_env, "ringguard")
    assert (counters["sent"], counters["received"], counters["dropped"]) == (5, 2, 0)
    assert "rejected message 2 (11 bytes): schema: id: 'x' is not of type 'integer'" in events
    assert "rejected message 4" in events and "duplicate key" in events
    assert held[guarded][0] == os.O_RDONLY
    assert "karn-ring-sender.out->receiver.in" not in held
