"""IRIG 106 Chapter 10 recordings of a 1553 bus, written and read with the standard library.

A file is a sequence of packets: a TMATS setup record (computer-generated data format 1,
channel 0), then per second a time data format 1 packet (channel 1, IRIG day format) and
per minor frame a MIL-STD-1553 format 1 packet (channel 2) holding that frame's
messages. Every packet: the 24-byte header (sync 0xEB25, channel, packet and data
lengths, version, sequence number, flags, data type, 48-bit relative time counter at
10 MHz, header checksum), a channel-specific data word, the body, filler to 4 bytes; no
secondary header and no data checksum. A 1553 message: an 8-byte intra-packet time stamp
(the counter when its first word began), the block status word (bus B: bit 13, message
error 12, RT-RT 11, format error 10, response timeout 9), the gap times word (GAP1 low
byte, GAP2 high byte, 0.1 us) and the length in bytes, then its words in bus order.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from typing import BinaryIO

from ids import mil1553 as m
from ids.bus import MINOR_FRAME

SYNC = 0xEB25
TYPE_TMATS, TYPE_TIME, TYPE_1553 = 0x01, 0x11, 0x19
CHANNEL_TMATS, CHANNEL_TIME, CHANNEL_1553 = 0, 1, 2
RTC_HZ = 10_000_000
RTC_START = 0x10_0000_0000  # where the recording's counter starts (arbitrary)
HEADER_VERSION = 0x06
TTB_FIRST_WORD = 1 << 30  # time tags mark the first bit of the first word

BLOCK_BUS_B, BLOCK_MESSAGE_ERROR, BLOCK_RT_RT, BLOCK_TIMEOUT = 1 << 13, 1 << 12, 1 << 11, 1 << 9

TMATS = """G\\PN:karn-ids;
G\\106:17;
G\\DSI\\N:1;
G\\DSI-1:BUS;
G\\DST-1:STO;
R-1\\ID:BUS;
R-1\\N:2;
R-1\\TK1-1:1;
R-1\\CHE-1:T;
R-1\\CDT-1:TIMIN;
R-1\\DSI-1:TIME;
R-1\\TK1-2:2;
R-1\\CHE-2:T;
R-1\\CDT-2:1553IN;
R-1\\DSI-2:BUS;
"""


class Ch10Error(ValueError):
    """A file that is not the Chapter 10 this module writes and reads."""


def _packet(channel: int, data_type: int, seq: int, rtc: int, body: bytes) -> bytes:
    data_len = len(body)
    filler = -data_len % 4
    header = struct.pack("<HHIIBBBB", SYNC, channel, 24 + data_len + filler, data_len,
                         HEADER_VERSION, seq & 0xFF, 0, data_type) + rtc.to_bytes(6, "little")
    checksum = sum(struct.unpack("<11H", header)) & 0xFFFF
    return header + struct.pack("<H", checksum) + body + b"\0" * filler


def _bcd_time(when: datetime) -> bytes:
    ms = when.microsecond // 1000
    day = int(when.strftime("%j"))
    w1 = (when.second // 10) << 12 | (when.second % 10) << 8 | (ms // 100) << 4 | (ms // 10 % 10)
    w2 = (when.hour // 10) << 12 | (when.hour % 10) << 8 | (when.minute // 10) << 4 \
        | (when.minute % 10)
    w3 = (day // 100) << 8 | (day // 10 % 10) << 4 | (day % 10)
    return struct.pack("<HHH", w1, w2, w3)


def _message(msg: m.Message) -> bytes:
    block = (BLOCK_BUS_B if msg.bus == "B" else 0) | (BLOCK_RT_RT if msg.kind == m.RT_RT else 0) \
        | (BLOCK_TIMEOUT | BLOCK_MESSAGE_ERROR if msg.timeout else 0)
    ipts = RTC_START + round(msg.time * RTC_HZ)
    gaps = (min(msg.gap2, 255) << 8) | min(msg.gap1, 255)
    return struct.pack("<QHHH", ipts, block, gaps, 2 * len(msg.words)) + struct.pack(
        f"<{len(msg.words)}H", *msg.words)


def write(out: BinaryIO, msgs: Iterable[m.Message], start: datetime) -> int:
    """Write a recording of msgs (in time order) that began at `start`; returns packets."""
    seq = {CHANNEL_TMATS: 0, CHANNEL_TIME: 0, CHANNEL_1553: 0}
    count = 0

    def emit(channel: int, data_type: int, rtc: int, body: bytes) -> None:
        nonlocal count
        out.write(_packet(channel, data_type, seq[channel], rtc, body))
        seq[channel] += 1
        count += 1

    emit(CHANNEL_TMATS, TYPE_TMATS, RTC_START, struct.pack("<I", 12) + TMATS.encode())
    next_second = 0
    frame: list[m.Message] = []
    frame_no = 0

    def flush() -> None:
        if frame:
            body = b"".join(_message(x) for x in frame)
            emit(CHANNEL_1553, TYPE_1553, RTC_START + round(frame[0].time * RTC_HZ),
                 struct.pack("<I", TTB_FIRST_WORD | len(frame)) + body)
            frame.clear()

    for msg in msgs:
        while msg.time >= next_second:
            flush()
            # time data format 1: internal source, IRIG-B format, day-of-year date
            emit(CHANNEL_TIME, TYPE_TIME, RTC_START + round(next_second * RTC_HZ),
                 struct.pack("<I", 0) + _bcd_time(start + timedelta(seconds=next_second)))
            next_second += 1
        if int(msg.time / MINOR_FRAME) != frame_no:
            flush()
            frame_no = int(msg.time / MINOR_FRAME)
        frame.append(msg)
    flush()
    return count


def _kind(words: list[int], rt_rt: bool) -> str:
    cmd = m.Command.decode(words[0])
    if rt_rt:
        return m.RT_RT
    if cmd.rt == m.BROADCAST:
        return m.BROADCAST_MODE if cmd.is_mode else m.BROADCAST_RX
    if cmd.is_mode:
        return m.MODE
    return m.RT_BC if cmd.transmit else m.BC_RT


def read(src: BinaryIO) -> Iterator[m.Message]:
    """The 1553 messages of a recording, in order, timed from its first packet."""
    rtc0: int | None = None
    while header := src.read(24):
        if len(header) < 24:
            raise Ch10Error("truncated packet header")
        sync, _channel, plen, dlen, _ver, _seq, _flags, dtype = struct.unpack(
            "<HHIIBBBB", header[:16])
        if sync != SYNC:
            raise Ch10Error(f"bad sync pattern {sync:#06x}")
        if sum(struct.unpack("<11H", header[:22])) & 0xFFFF != struct.unpack(
                "<H", header[22:])[0]:
            raise Ch10Error("bad header checksum")
        if plen < 24 + dlen:
            raise Ch10Error("packet length shorter than its data")
        body = src.read(plen - 24)
        if len(body) < plen - 24:
            raise Ch10Error("truncated packet")
        rtc = int.from_bytes(header[16:22], "little")
        if rtc0 is None:
            rtc0 = rtc
        if dtype != TYPE_1553:
            continue
        (csdw,) = struct.unpack_from("<I", body)
        pos = 4
        for _ in range(csdw & 0xFFFFFF):
            ipts, block, gaps, length = struct.unpack_from("<QHHH", body, pos)
            pos += 14
            if length % 2 or pos + length > dlen or length == 0:
                raise Ch10Error("1553 message overruns its packet")
            words = list(struct.unpack_from(f"<{length // 2}H", body, pos))
            pos += length
            yield m.Message(
                time=((ipts & 0xFFFF_FFFF_FFFF) - rtc0) / RTC_HZ,
                bus="B" if block & BLOCK_BUS_B else "A",
                kind=_kind(words, bool(block & BLOCK_RT_RT)), words=words,
                gap1=gaps & 0xFF, gap2=gaps >> 8, timeout=bool(block & BLOCK_TIMEOUT))
