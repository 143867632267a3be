"""Real servers under karn serving real clients: Debian nginx (curl, wrk), redis-server
(redis-cli, redis-benchmark), a Go net/http server, Python's http.server,
ThreadingHTTPServer and an asyncio echo server. Missing tools fail the tests (CI installs
them: nginx redis-server redis-tools wrk curl golang-go)."""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import PROGRAMS, free_port, go_build

pytestmark = pytest.mark.slow  # real servers under load (wrk, redis-benchmark)

KARN = [sys.executable, "-m", "karn", "run"]
NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
error_log stderr warn;
pid /tmp/nginx.pid;
events { worker_connections 1024; multi_accept on; }
http {
    access_log off;
    client_body_temp_path /tmp/body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    types { text/html html; application/octet-stream bin; }
    server {
        listen 8080;
        root /data/html;
    }
}
"""


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}")
                                  else None)
    if path is None:
        pytest.fail(f"{name} not found (apt-get install nginx redis-server redis-tools wrk "
                    "curl golang-go)", pytrace=False)
    return path


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"server exited {proc.returncode}: {proc.communicate()[1][-2000:]!r}",
                        pytrace=False)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"server did not listen on {port}", pytrace=False)


@contextmanager
def guest_server(args: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([*KARN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_port(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = Path(tmp_path_factory.mktemp("site", numbered=True))
    (root / "html").mkdir()
    rng = random.Random(612)
    (root / "html" / "index.html").write_text("".join(rng.choice("abcdefgh\n")
                                                      for _ in range(612)))
    (root / "html" / "big.bin").write_bytes(rng.randbytes(3_000_000))
    (root / "nginx.conf").write_text(NGINX_CONF)
    return root


def test_nginx_curl_and_wrk(site: Path) -> None:
    nginx, curl, wrk = _tool("nginx"), _tool("curl"), _tool("wrk")
    port = free_port()
    with guest_server(["-p", f"{port}:8080", "-v", f"{site}:/data:ro", nginx, "-c",
                       "/data/nginx.conf", "-p", "/tmp"], port):
        for name in ("index.html", "big.bin"):
            got = subprocess.run([curl, "-sf", f"http://127.0.0.1:{port}/{name}"],
                                 capture_output=True, timeout=60)
            assert got.returncode == 0
            assert got.stdout == (site / "html" / name).read_bytes(), name
        missing = subprocess.run([curl, "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                  f"http://127.0.0.1:{port}/nope"], capture_output=True,
                                 timeout=60)
        assert missing.stdout == b"404"
        bench = subprocess.run([wrk, "-t2", "-c200", "-d10s", "--latency",
                                f"http://127.0.0.1:{port}/index.html"],
                               capture_output=True, text=True, timeout=60)
    assert bench.returncode == 0, bench.stderr
    out = bench.stdout
    assert "Socket errors" not in out and "Non-2xx" not in out, out
    assert int(re.search(r"(\d+) requests in", out).group(1)) > 1000, out


def test_redis(tmp_path: Path) -> None:
    server, cli, bench = _tool("redis-server"), _tool("redis-cli"), _tool("redis-benchmark")
    port = free_port()
    with guest_server(["-p", f"{port}:6379", server, "--port", "6379", "--save", "",
                       "--appendonly", "no", "--dir", "/tmp"], port):
        def redis(*args: str) -> str:
            out = subprocess.run([cli, "-p", str(port), *args], capture_output=True,
                                 text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            return out.stdout.strip()

        assert redis("set", "karn", "unikernel") == "OK"
        assert redis("rpush", "list", "a", "b", "c") == "3"
        assert redis("get", "karn") == "unikernel"
        assert redis("lrange", "list", "0", "-1").split() == ["a", "b", "c"]
        out = subprocess.run([bench, "-p", str(port), "-t", "set,get", "-n", "20000", "-q"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        rates = re.findall(r"(SET|GET): ([\d.]+) requests per second", out.stdout)
        assert [r[0] for r in rates] == ["SET", "GET"], out.stdout
        assert redis("exists", "key:__rand_int__") == "1"  # what the benchmark SET
        assert redis("get", "karn") == "unikernel"


def test_go_http_server() -> None:
    curl = _tool("curl")
    exe = go_build(PROGRAMS / "net" / "httpserver.go", "go-httpserver")
    port = free_port()
    with guest_server(["--cpus", "2", "-p", f"{port}:8081", str(exe), "8081"], port):
        def get(path: str) -> bytes:
            out = subprocess.run([curl, "-sf", f"http://127.0.0.1:{port}{path}"],
                                 capture_output=True, timeout=30)
            assert out.returncode == 0, path
            return out.stdout

        assert get("/hello") == b"hello from go\n"
        assert get("/echo?x=karn") == b"karn\n"
        assert get("/self") == b"self: hello from go\n"  # the guest as its own client
        many = [subprocess.Popen([curl, "-sf", f"http://127.0.0.1:{port}/echo?x={i}"],
                                 stdout=subprocess.PIPE) for i in range(20)]
        assert [p.communicate(timeout=30)[0] for p in many] == [
            f"{i}\n".encode() for i in range(20)]


def test_python_servers_match_native() -> None:
    """HTTPServer, ThreadingHTTPServer (IPv4 and [::1]) and asyncio echo, each with its
    clients in the guest; UDP over [::1]; getaddrinfo; socketpair (python3 from --root /)."""
    script = PROGRAMS / "net" / "py_servers.py"
    native = subprocess.run(["/usr/bin/python3", str(script)], capture_output=True,
                            timeout=120)
    assert native.returncode == 0, native.stderr
    got = subprocess.run([*KARN, "--root", "/", "--cpus", "2", "-v",
                          f"{script.parent}:/t:ro", "/usr/bin/python3", "/t/py_servers.py"],
                         capture_output=True, timeout=180)
    assert (got.returncode, got.stdout) == (0, native.stdout), got.stderr[-3000:]


def test_python_http_server_published(site: Path) -> None:
    curl = _tool("curl")
    port = free_port()
    with guest_server(["--root", "/", "-p", f"{port}:8000", "-v", f"{site}:/site:ro", "-w",
                       "/site/html",
                       "/usr/bin/python3", "-m", "http.server", "8000"], port):
        got = subprocess.run([curl, "-sf", f"http://127.0.0.1:{port}/index.html"],
                             capture_output=True, timeout=30)
    assert got.stdout == (site / "html" / "index.html").read_bytes()
