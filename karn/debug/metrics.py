"""--metrics HOST:PORT: Prometheus text-format metrics of one unikernel over HTTP."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from karn.errors import UsageError

if TYPE_CHECKING:
    from karn.runtime import Unikernel

GAUGES = (  # stats key, metric name, help
    ("uptime", "karn_uptime_seconds", "Seconds since the guest started."),
    ("threads", "karn_guest_threads", "Guest threads."),
    ("memory_limit", "karn_memory_limit_bytes", "Guest memory limit (--memory)."),
    ("guest_mapped", "karn_guest_mapped_bytes", "Accessible guest mappings."),
    ("guest_resident", "karn_guest_resident_bytes", "Guest memory resident in host RAM."),
    ("monitor_rss", "karn_monitor_resident_bytes", "Resident memory of the monitor process."),
)


def parse_address(spec: str) -> tuple[str, int]:
    host, _, port = spec.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--metrics {spec!r}: use [HOST:]PORT")
    return host or "127.0.0.1", int(port)


def render(uk: Unikernel) -> str:
    from karn.debug import introspect

    stats = introspect.stats(uk)
    lines = []
    for key, name, text in GAUGES:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} gauge", f"{name} {stats[key]}"]
    lines += ["# HELP karn_cpu_seconds_total CPU time of the monitor and its vCPUs.",
              "# TYPE karn_cpu_seconds_total counter",
              f"karn_cpu_seconds_total {stats['cpu_seconds']:.3f}",
              "# HELP karn_syscalls_total Guest system calls served, by name.",
              "# TYPE karn_syscalls_total counter"]
    for name, count in introspect.syscall_counts(uk.process.syscall_counts).items():
        lines.append(f'karn_syscalls_total{{name="{name}"}} {count}')
    return "\n".join(lines) + "\n"


class MetricsServer:
    def __init__(self, uk: Unikernel, spec: str) -> None:
        address = parse_address(spec)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404, "try /metrics")
                    return
                try:
                    body = render(uk).encode()
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
            self.server = ThreadingHTTPServer(address, Handler)
        except OSError as err:
            raise UsageError(f"--metrics {spec}: {err.strerror}") from None
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="karn-metrics",
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
