"""Networking: sockets inside one guest (compared with native), the network policy, and
bad --publish/--network input. Real servers (nginx, redis, Go, Python) are in
test_net_servers.py."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PROGRAMS, compile_c, free_port, free_port_block

NET = PROGRAMS / "net"


@pytest.fixture(scope="module")
def cc():
    def _cc(name: str, *flags: str) -> Path:
        return compile_c(NET / f"{name}.c", f"net-{name}{''.join(flags).replace('-', '_')}",
                         flags=("-O1", "-g", "-Wall", *flags), after=("-lpthread",))
    return _cc


@pytest.mark.parametrize("flags", [("-static",), ()], ids=["static", "dynamic"])
def test_sockets_inside_guest_match_native(flags, cc, karn, native, same) -> None:
    """TCP over 127.0.0.1, [::1] and a dual-stack [::] listener (200 kB round trips with
    threads), UDP echo with source addresses, MSG_TRUNC, socketpair, a named AF_UNIX socket,
    SCM_RIGHTS, connection refused, EAGAIN, SO_RCVTIMEO, timerfd under edge-triggered
    epoll; getsockname shows the guest's ports."""
    exe = cc("net_basic", *flags)
    base = str(free_port_block(10))
    expected = native(exe, base)
    assert expected.returncode == 0, expected.stdout
    same(expected, karn(exe, base), "net_basic")


class HostServer:
    """A TCP server on the host's loopback that answers "hello" and counts connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.sendall(b"hello\n")
            conn.close()


@pytest.fixture
def host_server() -> Iterator[HostServer]:
    server = HostServer()
    yield server
    server.sock.close()


def test_egress_denied_by_default(cc, karn, host_server: HostServer) -> None:
    exe = cc("net_probe", "-static")
    out = karn(exe, "connect", "127.0.0.1", str(host_server.port))
    assert out.stdout == b"connect: ECONNREFUSED\n"  # the guest's own loopback: nothing there
    out = karn(exe, "connect", "192.0.2.1", "80")
    assert out.stdout == b"connect: ENETUNREACH\n"
    assert b"network policy: connect to 192.0.2.1:80 denied (--network none)" in out.stderr
    out = karn(exe, "connect", "192.0.2.1", "53", "udp")
    assert out.stdout == b"sendto: ENETUNREACH\n"
    assert host_server.accepted == 0


def test_egress_allowed_reaches_host_server(cc, karn, host_server: HostServer) -> None:
    exe = cc("net_probe", "-static")
    port = host_server.port
    out = karn("--network", f"egress=127.0.0.1/32:{port}", exe, "connect", "127.0.0.1",
               str(port))
    assert out.stdout == b"connect: OK hello\n", out.stderr
    assert host_server.accepted == 1
    out = karn("--network", f"egress=127.0.0.1/32:{port + 1 if port < 65535 else 1}", exe,
               "connect", "127.0.0.1", str(port))
    assert out.stdout == b"connect: ECONNREFUSED\n"
    out = karn("--network", "egress=10.0.0.0/8:443", exe, "connect", "10.1.2.3", "80")
    assert out.stdout == b"connect: ECONNREFUSED\n"  # covered network, port not allowed
    out = karn("--network", "host", exe, "connect", "127.0.0.1", str(port))
    assert out.stdout == b"connect: OK hello\n"
    assert host_server.accepted == 2


def _start(cmd: list[str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline() if proc.stdout else b""
    if line != b"listening\n":
        proc.kill()
        pytest.fail(f"guest server did not start: {line!r} {proc.communicate()[1]!r}",
                    pytrace=False)
    return proc


def _get(port: int) -> bytes | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            return s.recv(100)
    except OSError:
        return None


def test_published_port_reachable_unpublished_not(cc) -> None:
    exe = cc("net_probe", "-static")
    guest_port = free_port()
    host_port = free_port()
    karn = [sys.executable, "-m", "karn", "run"]
    proc = _start([*karn, "-p", f"{host_port}:{guest_port}", str(exe), "serve",
                   str(guest_port)])
    try:
        assert _get(host_port) == b"hello\n"
        assert _get(guest_port) is None  # the guest's port itself is not on the host
    finally:
        proc.kill()
        proc.wait()
    other = free_port()
    proc = _start([*karn, str(exe), "serve", str(other)])
    try:
        assert _get(other) is None
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("args, message", [
    (["-p", "http"], "invalid --publish 'http'"),
    (["-p", "70000:80"], "invalid host port '70000'"),
    (["-p", "8080:80/sctp"], "invalid protocol 'sctp'"),
    (["-p", "nohost:8080:80"], "invalid host address 'nohost'"),
    (["--network", "bogus"], "invalid --network 'bogus'"),
    (["--network", "egress=10.0.0.0/33:80"], "invalid network"),
    (["--network", "egress=::1:80"], "put the IPv6 address in brackets"),
])
def test_bad_network_options(args, message, karn) -> None:
    out = karn(*args, "/bin/busybox", "true")
    assert out.returncode == 125
    lines = out.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("karn: ") and message in lines[0], lines


def test_published_port_in_use(karn) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        out = karn("-p", f"{port}:80", "/bin/busybox", "true")
    assert out.returncode == 125
    lines = out.stderr.decode().splitlines()
    assert lines == [f"karn: --publish {port}:80: cannot bind 127.0.0.1:{port}/tcp: "
                     "Address already in use"]
