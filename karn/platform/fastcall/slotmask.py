"""A thread's signal mask kept in its vCPU's fast-transport slot, so that the in-guest stub
answers rt_sigprocmask without leaving the guest (entry.S `sigmask`). While the thread
runs on that vCPU the kernel's Task.blocked reads and writes the mask here.

The stub stores a new mask, fences, then reads SLOT_PENDING; a sender of a signal posts
it in SLOT_PENDING with a full barrier, then reads the mask. One of the two sees the
other: either the sender sees the signal unblocked and kicks the thread, or the stub sees
it pending and returns through WORK_PORT, which delivers it (docs/design/fast-syscalls.md,
"Signal masks in the guest"). Every store here is made under the process's signal lock
or by the thread itself while it is out of the guest.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from karn.abi.fastcall import SLOT_MASK, SLOT_MASKON, SLOT_PENDING, UNBLOCKABLE

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
MASK64 = (1 << 64) - 1


class SlotMask:
    __slots__ = ("_raw", "_mask_at", "_pending_at", "_pending_host", "_on_at", "_publish")

    def __init__(self, raw: memoryview, slot_addr: int, host_base: int,
                 publish: Callable[[int, int], None]) -> None:
        self._raw = raw
        self._mask_at = slot_addr + SLOT_MASK
        self._pending_at = slot_addr + SLOT_PENDING
        self._pending_host = host_base + slot_addr + SLOT_PENDING
        self._on_at = slot_addr + SLOT_MASKON
        self._publish = publish  # a store with a full barrier (_fastpoll.publish64)

    def get(self) -> int:
        # the guest may have written anything here: SIGKILL and SIGSTOP are never blocked
        return _U64.unpack_from(self._raw, self._mask_at)[0] & ~UNBLOCKABLE

    def set(self, mask: int) -> None:
        _U64.pack_into(self._raw, self._mask_at, mask & MASK64)

    def post(self, bits: int) -> None:
        """Signals made pending, visible to the stub before the caller reads the mask."""
        self._publish(self._pending_host,
                      (_U64.unpack_from(self._raw, self._pending_at)[0] | bits) & MASK64)

    def set_pending(self, bits: int) -> None:
        """What is pending now (the thread's and its process's): stale bits cleared."""
        self._publish(self._pending_host, bits & MASK64)

    def enable(self, on: bool) -> None:
        _U32.pack_into(self._raw, self._on_at, int(on))
