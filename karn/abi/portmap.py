"""Mapped ports (docs/design/channels.md, "Mapped ports"): what a guest that maps its
ports' rings (karn/guest/karn_port.h) and the monitor agree on.

A port's fd maps two things: the ring at offset 0 (`ring_size` bytes: the sender's side
writable, the receiver's read-only) and the reader page at `reader_offset` (the
receiver's writable; an ordinary queuing channel's sender sees it read-only; a diode's
sender never). Layouts are kernel/fs/ring.py's; the numbers below are the guest's view.
"""

import struct

# ioctl requests on a /dev/ports/NAME fd (Linux _IOR/_IO encoding, type 'k').
PORT_INFO = (2 << 30) | (64 << 16) | (ord("k") << 8) | 1  # struct karn_port_info
PORT_NOTIFY = (ord("k") << 8) | 2  # sender: wake the receiver up
PORT_ARM = (ord("k") << 8) | 3  # receiver: readiness follows the ring; returns messages waiting
PORT_FREED = (ord("k") << 8) | 4  # receiver: space was freed for a sender held back

# struct karn_port_info: version, flags, slots, slot_size, stride, ring_size,
# reader_offset, limit, notify_ns.
INFO = struct.Struct("<IIQQQQQQQ")
INFO_VERSION = 1
FLAG_SOURCE = 1  # this end sends
FLAG_QUEUING = 2  # a queuing port (else sampling)
FLAG_BACKPRESSURE = 4  # an ordinary queuing channel: the receiver holds the sender back

# The ring: published count at 0, notify interval at 8, slots from 64 (each: seq + 1 or 0
# while written, CLOCK_MONOTONIC ns, length, 4 bytes of padding, payload at 24).
# The reader page: position, received, dropped, rejected (u64 each).
