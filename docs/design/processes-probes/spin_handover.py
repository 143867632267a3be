# Guest program for the preemption probe (issue 15): a thread spins in bytecode while the
# main thread sleeps 10 ms twenty times. Natively ~0.2 s plus the GIL hand-overs.
#   python3 docs/design/processes-probes/spin_handover.py                 (native)
#   python3 -m karn run --root / /usr/bin/python3 $PWD/docs/design/processes-probes/spin_handover.py
import threading
import time

stop = False


def spin():
    n = 0
    while not stop:
        n += 1


t = threading.Thread(target=spin)
start = time.monotonic()
t.start()
waits = []
for _ in range(20):
    a = time.monotonic()
    time.sleep(0.01)
    waits.append(time.monotonic() - a)
stop = True
t.join()
print(f"total {time.monotonic() - start:.2f} s, sleep(10 ms) took max {max(waits) * 1e3:.0f} ms, "
      f"median {sorted(waits)[10] * 1e3:.0f} ms")
