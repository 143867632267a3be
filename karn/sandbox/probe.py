"""Test hook: make the confined monitor attempt what its sandbox must refuse.

KARN_TEST_MONITOR_PROBE=ITEM[,ITEM...] (set only by tests/test_sandbox.py); each ITEM is
a host path to open read-only, `raw-socket` (AF_PACKET), `fork`, or `exec` (killed by the
filter). The attempts run after confinement, on the main thread and on a thread that
existed before confinement (as the control socket's does), and each outcome is one
stderr line: `karn: sandbox probe: THREAD: ITEM: denied (EACCES)` or `... allowed`.
"""

from __future__ import annotations

import _socket as socket
import errno
import os
import threading

VARIABLE = "KARN_TEST_MONITOR_PROBE"


class Probe:
    def __init__(self, items: list[str]) -> None:
        self.items = items
        self._go = threading.Event()
        self._thread = threading.Thread(target=self._early_thread, name="karn-probe",
                                        daemon=True)
        self._thread.start()  # before confinement: it must be confined all the same

    def fire(self) -> None:
        """After confinement: probe here, then on the early thread."""
        self._attempt_all("main thread")
        self._go.set()
        self._thread.join()

    def _early_thread(self) -> None:
        self._go.wait()
        self._attempt_all("early thread")

    def _attempt_all(self, where: str) -> None:
        for item in self.items:
            try:
                _attempt(item)
                outcome = "allowed"
            except OSError as err:
                outcome = f"denied ({errno.errorcode.get(err.errno or 0, err.errno)})"
            os.write(2, f"karn: sandbox probe: {where}: {item}: {outcome}\n".encode())


def _attempt(item: str) -> None:
    if item == "raw-socket":
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
    elif item == "fork":
        if os.fork() == 0:
            os._exit(0)
    elif item == "exec":
        os.execv("/bin/true", ["true"])
    else:
        os.close(os.open(item, os.O_RDONLY))


def armed() -> Probe | None:
    value = os.environ.get(VARIABLE)
    return Probe([i for i in value.split(",") if i]) if value else None
