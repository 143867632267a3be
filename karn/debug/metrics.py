"""--metrics HOST:PORT: Prometheus text-format metrics of one unikernel over HTTP.

Any local process may connect, so clients are bounded: at most MAX_CONNECTIONS at once
(more are closed at once, without a thread), each socket operation times out after
IDLE_TIMEOUT and a connection lasts at most CONNECTION_DEADLINE in all (a client that
trickles its request one byte at a time), so idle or slow clients cannot take the
endpoint, or the monitor's threads, away.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from karn.errors import UsageError
from karn.hints import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from karn.run.guest import Guest

GAUGES = (  # stats key, metric name, help
    ("uptime", "karn_uptime_seconds", "Seconds since the guest started."),
    ("threads", "karn_guest_threads", "Guest threads."),
    ("memory_limit", "karn_memory_limit_bytes", "Guest memory limit (--memory)."),
    ("guest_mapped", "karn_guest_mapped_bytes", "Accessible guest mappings."),
    ("guest_resident", "karn_guest_resident_bytes", "Guest memory resident in host RAM."),
    ("monitor_rss", "karn_monitor_resident_bytes", "Resident memory of the monitor process."),
)
# How calls travel (introspect.transport): the exit transport has only "exit"
TRANSPORT_PATHS = ("fast", "redone", "withdrawn", "skipped", "exit", "in_guest")


MAX_CONNECTIONS = 16
IDLE_TIMEOUT = 5.0  # seconds a client may leave a read or write waiting
CONNECTION_DEADLINE = 10.0  # seconds a connection may last in all


class BoundedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # a burst of connections waits to be turned away, not dropped

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lock = threading.Lock()
        self.live: dict[socket.socket, float] = {}  # connection -> its deadline

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            admitted = len(self.live) < MAX_CONNECTIONS
            if admitted:
                self.live[request] = time.monotonic() + CONNECTION_DEADLINE
        if admitted:
            super().process_request(request, client_address)  # a thread serves it
        else:
            self.shutdown_request(request)

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.live.pop(request, None)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        """Between accepts (every poll interval): end connections past their deadline;
        their threads then see EOF and finish."""
        now = time.monotonic()
        with self.lock:  # under the lock: a connection still here is not closed yet
            for conn, deadline in self.live.items():
                if deadline <= now:
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client's misbehaviour (or no thread to spare) is not the user's news


def parse_address(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--metrics {spec!r}: use [HOST:]PORT")
    return host or "127.0.0.1", int(port)


def render(guest: Guest) -> str:
    from karn.debug import introspect

    stats = introspect.stats(guest)
    lines = []
    for key, name, text in GAUGES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {stats[key]}"]
    lines += [
        "# HELP karn_cpu_seconds_total CPU time of the monitor and its vCPUs.",
        "# TYPE karn_cpu_seconds_total counter",
        f"karn_cpu_seconds_total {stats['cpu_seconds']:.3f}",
        "# HELP karn_syscalls_total Guest system calls served, by name.",
        "# TYPE karn_syscalls_total counter",
    ]
    for name, count in introspect.syscall_counts(guest.process.syscall_counts).items():
        lines.append(f'karn_syscalls_total{{name="{name}"}} {count}')
    transport = introspect.transport(guest)
    lines += [
        "# HELP karn_syscall_paths_total Guest system calls by the way they travelled "
        "(karn inspect's transport: fast, redone, withdrawn, skipped, exit, in_guest).",
        "# TYPE karn_syscall_paths_total counter",
    ]
    for path in TRANSPORT_PATHS:
        if path in transport:
            lines.append(f'karn_syscall_paths_total{{path="{path}"}} {transport[path]}')
    if "sites_patched" in transport:
        lines += ["# HELP karn_syscall_sites_patched Syscall sites patched to the fast "
                  "transport's stubs.", "# TYPE karn_syscall_sites_patched gauge",
                  f"karn_syscall_sites_patched {transport['sites_patched']}"]
    return "\n".join(lines) + "\n"


class MetricsServer:
    def __init__(self, guest: Guest, spec: str) -> None:
        address = parse_address(spec)

        class Handler(BaseHTTPRequestHandler):
            timeout = IDLE_TIMEOUT

            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "try /metrics")
                    return
                try:
                    body = render(guest).encode()
                except Exception as err:  # a monitor bug: say so, keep serving
                    self.send_error(500, f"karn: {type(err).__name__}: {err}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes are not news

        try:
            self.server = BoundedHTTPServer(address, Handler)
        except OSError as err:
            raise UsageError(f"--metrics {spec}: {err.strerror}") from None
        threading.Thread(target=self.server.serve_forever, name="karn-metrics", daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
