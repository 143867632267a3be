"""The monitor's control socket: one JSON request per connection, one JSON answer.

Protocol (docs/instances.md): the client sends one line `{"op": ..., ...}` and reads one
line back, `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. Operations:

    ping                  -> {"ok": true, "pid": ...}
    stats                 -> uptime, threads, cpu, memory, syscalls (for `karn ps`)
    inspect               -> threads, fds, syscall counts, policy (for `karn inspect`)
    signal {"signal": N}  -> send signal N to the guest, as `kill` would

Only the socket's owner can connect (the directory is 0700). The guest cannot reach it.
"""

from __future__ import annotations

import json
import os
import socket
import threading

from karn import log
from karn.abi.signals import NSIG, SI_USER
from karn.hints import TYPE_CHECKING
from karn.kernel.signals import SigInfo

if TYPE_CHECKING:
    from karn.run.guest import Guest

MAX_REQUEST = 4096
CLIENT_TIMEOUT = 5.0


class ControlServer:
    def __init__(self, guest: Guest, path: str) -> None:
        self.guest = guest
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        os.chmod(path, 0o600)
        self.listener.listen(8)
        # Held while a request is answered: a `kill` may end the guest, and the monitor
        # with it, between doing it and saying so (close() waits for the answer).
        self._answering = threading.Lock()
        threading.Thread(target=self._serve, name="karn-control", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed at exit
            with conn, self._answering:
                try:
                    conn.settimeout(CLIENT_TIMEOUT)
                    request = _read_line(conn)
                    try:
                        answer = self.answer(request)
                    except Exception as err:  # a monitor bug: the guest keeps running
                        log.error("control socket: %s: %s", type(err).__name__, err)
                        answer = {"ok": False, "error": f"internal error: {err!r}"}
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                except OSError:
                    pass  # the client went away

    def answer(self, raw: bytes) -> dict:
        try:
            request = json.loads(raw)
            op = request["op"]
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": "bad request: send one JSON object with an 'op'"}
        from karn.debug import introspect

        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "stats":
            return {"ok": True, **introspect.stats(self.guest)}
        if op == "inspect":
            return {"ok": True, **introspect.inspect(self.guest)}
        if op == "signal":
            sig = request.get("signal")
            if not isinstance(sig, int) or not 1 <= sig < NSIG:
                return {"ok": False, "error": f"invalid signal {sig!r}"}
            self.guest.process.signal_process(SigInfo.from_sender(sig, SI_USER, 0))
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def close(self) -> None:
        self.listener.close()
        if self._answering.acquire(timeout=CLIENT_TIMEOUT):
            self._answering.release()


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < MAX_REQUEST:
        chunk = conn.recv(MAX_REQUEST)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def request(path: str, op: str, timeout: float = CLIENT_TIMEOUT, **fields: object) -> dict:
    """Client side: ask the monitor at `path`; OSError when it does not answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(path)
        conn.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    try:
        return json.loads(data)
    except ValueError:
        raise OSError("the monitor sent no answer") from None
