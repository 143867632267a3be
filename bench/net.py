#!/usr/bin/env python3
"""Network benchmarks for issue 5: nginx under wrk and redis under redis-benchmark.

    python3 bench/net.py [--seconds S] [--requests N] [--write] [--no-runsc]

1. nginx (Debian's, `daemon off; master_process off;`, one worker) serving a 612-byte page
   (the page size the Unikraft paper measures), `wrk -t2 -c50 -dS`: requests/s and p50.
2. redis-server, `redis-benchmark -t set,get -n N -q`: requests/s for SET and GET.
3. syscalls per request: karn's `--trace-summary` total calls over a wrk run divided by
   the requests wrk made (start-up calls included; they are a few hundred).

Runners: native, karn (-p HOSTPORT:GUESTPORT) and gVisor
(`runsc --network=host --platform=ptrace do`) when installed and running as root.
Prints a markdown section; --write replaces the "Network" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import merge

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Network"
KARN = [sys.executable, "-m", "karn", "run"]
RUNSC = ["runsc", "--network=host", "--platform=ptrace", "do"]
NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
error_log stderr error;
pid {tmp}/nginx.pid;
events {{ worker_connections 1024; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ text/html html; }}
    server {{ listen {port}; root {root}/html; }}
}}
"""


class BenchError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise BenchError(f"server exited {proc.returncode}: "
                             f"{proc.stderr.read().decode(errors='replace')[-300:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"server did not listen on {port}")


def stop(proc: subprocess.Popen) -> bytes:
    proc.terminate()
    try:
        return proc.communicate(timeout=15)[1]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[1]


def server_cmd(runner: str, port: int, guest_port: int, argv: list[str],
               extra: list[str]) -> list[str]:
    if runner == "native":
        return argv
    if runner == "runsc":
        return [*RUNSC, *argv]
    return [*KARN, *extra, "-p", f"{port}:{guest_port}", *argv]


def nginx(runner: str, site: Path, seconds: int, trace: Path | None = None
          ) -> tuple[float, str, int]:
    port = free_port()
    guest_port = port if runner != "karn" else 8080
    conf = site / f"nginx-{runner}.conf"
    tmp = tempfile.mkdtemp(prefix="karn-bench-nginx-") if runner != "karn" else "/tmp"
    root = str(site) if runner != "karn" else "/site"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=guest_port, root=root))
    extra = ["-v", f"{site}:/site:ro"]
    if trace is not None:
        extra = [*extra, "--trace-summary", "--trace-file", str(trace)]
    cfg = str(conf) if runner != "karn" else f"/site/{conf.name}"
    argv = [shutil.which("nginx") or "/usr/sbin/nginx", "-c", cfg, "-p", tmp]
    proc = subprocess.Popen(server_cmd(runner, port, guest_port, argv, extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc)
        out = subprocess.run(["wrk", "-t2", "-c50", f"-d{seconds}s", "--latency",
                              f"http://127.0.0.1:{port}/index.html"],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
    finally:
        stop(proc)
    if "Socket errors" in out:
        raise BenchError("wrk reported socket errors: " + out.strip().splitlines()[-3])
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return rate, p50, total


def redis(runner: str, requests: int) -> dict[str, float]:
    port = free_port()
    guest_port = port if runner != "karn" else 6379
    argv = [shutil.which("redis-server") or "redis-server", "--port", str(guest_port),
            "--save", "", "--appendonly", "no", "--dir", "/tmp"]
    proc = subprocess.Popen(server_cmd(runner, port, guest_port, argv, []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc)
        out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set,get", "-n",
                              str(requests), "-q"], capture_output=True, text=True,
                             timeout=600).stdout
    finally:
        stop(proc)
    found = dict(re.findall(r"(SET|GET): ([\d.]+) requests per second", out.replace("\r", "\n")))
    if set(found) != {"SET", "GET"}:
        raise BenchError("redis-benchmark: " + out[-200:])
    return {k: float(v) for k, v in found.items()}


def syscalls_total(trace: Path) -> int:
    total = 0
    for line in trace.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1] != "total" and parts[3].isdigit():
            total += int(parts[3])
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--no-runsc", action="store_true")
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "redis-server", "redis-benchmark"):
        if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
            print(f"{tool} missing: apt-get install nginx wrk redis-server redis-tools",
                  file=sys.stderr)
            return 2
    runners = ["native", "karn"]
    if not args.no_runsc and shutil.which("runsc") and os.geteuid() == 0:
        runners.append("runsc")
    site = Path(tempfile.mkdtemp(prefix="karn-bench-site-", dir="/var/tmp"))
    (site / "html").mkdir()
    (site / "html" / "index.html").write_bytes(b"k" * 611 + b"\n")
    rows, problems = [], []
    for runner in runners:
        try:
            ngx = nginx(runner, site, args.seconds)
        except BenchError as exc:
            ngx = None
            problems.append(f"nginx, {runner}: {exc}")
        try:
            red = redis(runner, args.requests)
        except BenchError as exc:
            red = None
            problems.append(f"redis, {runner}: {exc}")
        rows.append((runner, ngx, red))
    per_request = None
    try:
        trace = site / "trace.txt"
        _, _, total = nginx("karn", site, max(3, args.seconds // 3), trace)
        per_request = syscalls_total(trace) / total
    except BenchError as exc:
        problems.append(f"syscalls per request: {exc}")
    shutil.rmtree(site, ignore_errors=True)
    report = render(rows, per_request, args, problems)
    print(report)
    if args.write:
        merge(report)
    return 0


def render(rows, per_request, args, problems) -> str:
    now = datetime.date.today().isoformat()
    out = [SECTION, "",
           f"Generated by `python3 bench/net.py --write` on {now} ({os.cpu_count()} host "
           f"CPUs). nginx: 612-byte page, `wrk -t2 -c50 -d{args.seconds}s`; redis: "
           f"`redis-benchmark -t set,get -n {args.requests}` (50 clients). karn runs with "
           "the defaults (`--cpus 1`) and `-p` to publish the port.", "",
           "| runner | nginx req/s | nginx p50 | redis SET req/s | redis GET req/s |",
           "| --- | ---: | ---: | ---: | ---: |"]
    for runner, ngx, red in rows:
        n = (f"{ngx[0]:,.0f}", ngx[1]) if ngx else ("-", "-")
        r = (f"{red['SET']:,.0f}", f"{red['GET']:,.0f}") if red else ("-", "-")
        out.append(f"| {runner} | {n[0]} | {n[1]} | {r[0]} | {r[1]} |")
    if per_request is not None:
        out += ["", f"karn served {per_request:.1f} syscalls per nginx request (`--trace-summary` "
                "total over a wrk run / requests, start-up included): typically `recvfrom`, "
                "`openat`, `newfstatat`, `writev`, `pread64`, `close` and a share of "
                "`epoll_wait`. Each is a VM exit served in Python."]
    if problems:
        out += ["", "Not measured: " + "; ".join(problems)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
