"""The fast transport's server thread: one per process, polling every vCPU's slot with the
GIL released (the C helper _fastpoll), serving what it takes through a callback.

Adaptive: it spins while requests come and sleeps after IDLE_NS without one; while it
sleeps, the slots say so (SLOT_AWAKE = 0) and stubs go straight to the exit path, so an
idle or blocked guest costs no host core. The exit path wakes it (wake()).
"""

from __future__ import annotations

import importlib
import struct
import threading
from collections.abc import Callable
from types import ModuleType

from karn import log
from karn.abi.fastcall import SLOT_AWAKE, SLOT_SIZE

IDLE_NS = 200_000  # spin this long without a request before sleeping


def load_helper() -> ModuleType | None:
    """The C helper, or None (built by `pip install`, optional; needs a C compiler)."""
    try:
        return importlib.import_module("karn.platform.fastcall._fastpoll")
    except ImportError:
        return None


class Server:
    def __init__(self, helper: ModuleType, raw: memoryview, slots_addr: int, host_base: int,
                 count: Callable[[], int], serve: Callable[[int], None]) -> None:
        self._poll = helper.poll
        self._raw = raw
        self._slots = slots_addr  # guest address of slot 0
        self._host_slots = host_base + slots_addr  # the same, as a host address
        self._count = count  # slots in use (vCPUs created)
        self._serve = serve
        self._wakeup = threading.Event()
        self.asleep = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._set_awake(1)
            self._thread = threading.Thread(target=self._run, name="karn-fastcall",
                                            daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """From the exit path: the guest's next calls should wait for the server. The
        slots say so before the caller re-enters the guest (the server thread may take
        longer than one exit to be scheduled)."""
        if self.asleep:
            self._set_awake(1)
            self._wakeup.set()

    def _run(self) -> None:
        start = 0
        poll, serve = self._poll, self._serve
        try:
            while True:
                count = self._count()
                taken = poll(self._host_slots, SLOT_SIZE, count, start % max(count, 1), IDLE_NS)
                if taken >= 0:
                    start = taken + 1
                    serve(taken)
                    continue
                self._sleep()
        except BaseException as err:  # a monitor bug: stubs fall back to the exit path
            self._set_awake(0)
            log.error("fast-syscall server stopped (%s: %s); every call now exits",
                      type(err).__name__, err)

    def _sleep(self) -> None:
        self._wakeup.clear()
        self.asleep = True
        self._set_awake(0)
        self._wakeup.wait()
        self.asleep = False
        self._set_awake(1)

    def _set_awake(self, value: int) -> None:
        pack, raw = struct.pack_into, self._raw
        for i in range(self._count()):
            pack("<I", raw, self._slots + i * SLOT_SIZE + SLOT_AWAKE, value)
