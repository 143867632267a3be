#!/usr/bin/env python3
"""Network benchmarks for issue 5: nginx under wrk and redis under redis-benchmark.

    python3 bench/net.py [--runs N] [--seconds S] [--requests N] [--write] [--no-runsc]
                         [--base DIR] [--runners LIST]

1. nginx (Debian's, `daemon off; master_process off;`, one worker) serving a 612-byte page
   (the page size the Unikraft paper measures), `wrk -t2 -c16 -dS`: requests/s and p50.
2. redis-server, `redis-benchmark -t set,get -n N -q`: requests/s for SET and GET.
3. syscalls per request: karn's `--trace-summary` total calls over a wrk run divided by
   the requests wrk made (start-up calls included; they are a few hundred).

Runners: native, karn in both syscall transports (fast, the default, and exit; -p
HOSTPORT:GUESTPORT) and gVisor (`runsc --network=host --platform=ptrace do`) when installed
and running as root. `runsc do` puts its sandbox in a network namespace of its own with a
veth (host networking inside that namespace), so its servers are reached at the sandbox's
address, not at 127.0.0.1. The runners
take turns, --runs rounds; each figure is the median over the rounds. --base DIR adds
`karn-base`: the fast transport of the karn source tree DIR (another checkout, before a
change); --runners picks some of them (e.g. native,karn,karn-base).
Prints a markdown section; --write replaces the "Network" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import merge
from trees import compile_tree

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks.md"
SECTION = "## Network"
KARN = [sys.executable, "-m", "karn", "run"]
RUNSC_IP = "192.168.10.2"
RUNSC = ["runsc", "--network=host", "--platform=ptrace", "do", "-ip", RUNSC_IP]
TRANSPORT = {"karn": "fast", "karn-exit": "exit",  # karn runners: --syscall-transport
             "karn-base": "fast"}
BASE: Path | None = None  # the karn tree karn-base runs (--base)
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


def address(runner: str) -> str:
    return RUNSC_IP if runner == "runsc" else "127.0.0.1"


def wait_port(host: str, port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise BenchError(f"server exited {proc.returncode}: "
                             f"{proc.stderr.read().decode(errors='replace')[-300:]}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"server did not listen on {host}:{port}")


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
    return [*KARN, "--syscall-transport", TRANSPORT[runner], *extra,
            "-p", f"{port}:{guest_port}", *argv]


def server_env(runner: str) -> dict[str, str] | None:
    """karn-base imports karn from the --base tree (`python3 -m` looks there first)."""
    if runner != "karn-base" or BASE is None:
        return None
    return {**os.environ, "PYTHONPATH": str(BASE)}


def nginx(runner: str, site: Path, seconds: int, trace: Path | None = None
          ) -> tuple[float, float, int]:
    port = free_port()
    in_karn = runner in TRANSPORT
    guest_port = 8080 if in_karn else port
    conf = site / f"nginx-{runner}.conf"
    tmp = "/tmp" if in_karn else tempfile.mkdtemp(prefix="karn-bench-nginx-")
    root = "/site" if in_karn else str(site)
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=guest_port, root=root))
    extra = ["-v", f"{site}:/site:ro"]
    if trace is not None:
        extra = [*extra, "--trace-summary", "--trace-file", str(trace)]
    cfg = f"/site/{conf.name}" if in_karn else str(conf)
    argv = [shutil.which("nginx") or "/usr/sbin/nginx", "-c", cfg, "-p", tmp]
    proc = subprocess.Popen(server_cmd(runner, port, guest_port, argv, extra),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=server_env(runner), cwd=BASE if server_env(runner) else None)
    try:
        wait_port(address(runner), port, proc)
        out = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency",
                              f"http://{address(runner)}:{port}/index.html"],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
    finally:
        stop(proc)
    if "Socket errors" in out:
        raise BenchError("wrk reported socket errors: " + out.strip().splitlines()[-3])
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = wrk_time_us(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    return rate, p50, total


def wrk_time_us(text: str) -> float:
    """wrk's latency figures ("651.00us", "1.36ms", "2.01s") in µs."""
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


def redis(runner: str, requests: int) -> dict[str, float]:
    port = free_port()
    guest_port = 6379 if runner in TRANSPORT else port
    argv = [shutil.which("redis-server") or "redis-server", "--port", str(guest_port),
            "--save", "", "--appendonly", "no", "--dir", "/tmp",
            "--protected-mode", "no"]  # runsc's clients come from its veth peer
    proc = subprocess.Popen(server_cmd(runner, port, guest_port, argv, []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=server_env(runner), cwd=BASE if server_env(runner) else None)
    try:
        wait_port(address(runner), port, proc)
        out = subprocess.run(["redis-benchmark", "-h", address(runner), "-p", str(port),
                              "-t", "set,get", "-n", str(requests), "-q"],
                             capture_output=True, text=True, timeout=600).stdout
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
    ap.add_argument("--runs", type=int, default=3, help="rounds, runners taking turns")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--no-runsc", action="store_true")
    ap.add_argument("--base", type=Path, help="also karn-base: the fast transport of this tree")
    ap.add_argument("--runners", help="comma-separated subset of the runners")
    args = ap.parse_args()
    global BASE
    BASE = args.base.resolve() if args.base is not None else None
    for tool in ("nginx", "wrk", "redis-server", "redis-benchmark"):
        if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
            print(f"{tool} missing: apt-get install nginx wrk redis-server redis-tools",
                  file=sys.stderr)
            return 2
    runners = ["native", "karn", "karn-exit"]
    compile_tree(REPO)
    if BASE is not None:
        compile_tree(BASE)
        runners.append("karn-base")
    if not args.no_runsc and shutil.which("runsc") and os.geteuid() == 0:
        runners.append("runsc")
    if args.runners:
        runners = [r for r in runners if r in args.runners.split(",")]
    site = Path(tempfile.mkdtemp(prefix="karn-bench-site-", dir="/var/tmp"))
    (site / "html").mkdir()
    (site / "html" / "index.html").write_bytes(b"k" * 611 + b"\n")
    samples: dict[str, dict[str, list[float]]] = {r: {} for r in runners}
    p50s: dict[str, list[float]] = {r: [] for r in runners}
    problems, loads = [], [os.getloadavg()[0]]
    for _ in range(args.runs):
        for runner in runners:
            try:
                rate, p50, _ = nginx(runner, site, args.seconds)
                samples[runner].setdefault("nginx", []).append(rate)
                p50s[runner].append(p50)
            except BenchError as exc:
                problems.append(f"nginx, {runner}: {exc}")
            try:
                for op, rate in redis(runner, args.requests).items():
                    samples[runner].setdefault(op, []).append(rate)
            except BenchError as exc:
                problems.append(f"redis, {runner}: {exc}")
            loads.append(os.getloadavg()[0])
    per_request = None
    try:
        trace = site / "trace.txt"
        _, _, total = nginx("karn", site, max(3, args.seconds // 3), trace)
        per_request = syscalls_total(trace) / total
    except BenchError as exc:
        problems.append(f"syscalls per request: {exc}")
    shutil.rmtree(site, ignore_errors=True)
    medians = {r: {k: statistics.median(v) for k, v in ops.items()}
               for r, ops in samples.items()}
    report = render(runners, medians, p50s, per_request, args, problems, loads)
    print(report)
    if args.write:
        merge(report)
    return 0


def render(runners: list[str], medians: dict[str, dict[str, float]],
           p50s: dict[str, list[float]], per_request: float | None,
           args: argparse.Namespace, problems: list[str], loads: list[float]) -> str:
    now = datetime.date.today().isoformat()
    native = medians.get("native", {})
    out = [SECTION, "",
           f"Generated by `python3 bench/net.py --runs {args.runs} --write` on {now} "
           f"({os.cpu_count()} host CPUs, load average {min(loads):.1f}-{max(loads):.1f}); "
           f"runners taking turns, medians of {args.runs} rounds, each in brackets as a "
           f"share of native. nginx: 612-byte page, `wrk -t2 -c16 -d{args.seconds}s`; redis: "
           f"`redis-benchmark -t set,get -n {args.requests}` (50 clients). karn runs with "
           "the defaults (`--cpus 1`), `-p` to publish the port, in both syscall "
           "transports; runsc (`runsc --network=host --platform=ptrace do`) is reached at "
           "its sandbox's veth address.", "",
           "| runner | nginx req/s | nginx p50 | redis SET req/s | redis GET req/s |",
           "| --- | ---: | ---: | ---: | ---: |"]

    def cell(runner: str, op: str) -> str:
        value = medians[runner].get(op)
        if value is None:
            return "-"
        base = native.get(op)
        share = f" ({value / base:.1%})" if base and runner != "native" else ""
        return f"{value:,.0f}{share}"

    for runner in runners:
        p50 = f"{statistics.median(p50s[runner]) / 1e3:.2f} ms" if p50s[runner] else "-"
        out.append(f"| {runner} | {cell(runner, 'nginx')} | {p50} | {cell(runner, 'SET')} "
                   f"| {cell(runner, 'GET')} |")
    if per_request is not None:
        out += ["", f"karn served {per_request:.1f} syscalls per nginx request (`--trace-summary` "
                "total over a wrk run / requests, start-up included): typically `recvfrom`, "
                "`openat`, `newfstatat`, `writev`, `pread64`, `close` and a share of "
                "`epoll_wait`."]
    if problems:
        out += ["", "Not measured: " + "; ".join(problems)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
