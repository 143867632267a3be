"""The protected consumer: what reaches it has passed the DAC. Counts what it gets and
prints a summary line per second and at the end."""

from __future__ import annotations

import os
import sys
import time

from ids.ports import Port


def main() -> int:
    port = Port("in", "in")
    os.set_blocking(port.fd, True)
    counts = {"bus": 0, "ip": 0}
    last = time.monotonic()
    first = 0.0
    while True:
        doc = port.receive()
        if doc is None or doc.get("end"):
            break
        first = first or time.monotonic()
        counts[doc["s"]] += len(doc["m"])
        if time.monotonic() - last > 1.0:
            last = time.monotonic()
            print(f"consumer: received bus {counts['bus']}, ip {counts['ip']}", flush=True)
    span = time.monotonic() - first if first else 0.0
    print(f"consumer: done: received bus {counts['bus']}, ip {counts['ip']} "
          f"in {span:.3f} s from the first", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
