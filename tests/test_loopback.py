"""A guest's connections to its own loopback listeners all get in; a host process's never
do, and never make a listener look readable (issue 12, R12 and R9).

Unpublished guest listeners are host sockets on loopback ports. The guest's own clients
sign their TCP segments with the run's key and the listener requires the signature
(karn/kernel/net/inet.py), so the kernel itself tells the two apart. Each program runs in
the private network namespace the sandbox gives a root monitor and, with an unrelated
published port, in the host's namespace, where host processes can reach the listener.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import PROGRAMS, free_port, go_build, listening_ports

PYTHON = "/usr/bin/python3"


@pytest.fixture(params=["private", "host"], ids=["private-netns", "host-netns"])
def netns(request) -> list[str]:
    """karn options: none (a root monitor gets a network namespace of its own), or an
    unrelated published port (the monitor stays in the host's namespace)."""
    return [] if request.param == "private" else ["-p", f"{free_port()}:9"]


def sorted_lines(out: bytes) -> list[str]:
    return sorted(out.decode().splitlines())


PY_SCRIPT = """
    import socket, threading
    for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        s = socket.socket(fam); s.bind((addr, 0)); s.listen(4); port = s.getsockname()[1]
        c = socket.socket(fam); c.settimeout(10); c.connect((addr, port))
        s.settimeout(10)
        a, _ = s.accept(); c.send(b"x"); print(addr, "ok", a.recv(1))
    # closed before accept, then a second one
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(4); port = s.getsockname()[1]
    c1 = socket.socket(); c1.connect(("127.0.0.1", port)); c1.close()
    c2 = socket.socket(); c2.connect(("127.0.0.1", port)); c2.send(b"y")
    s.settimeout(10)
    a, _ = s.accept(); print("closed-first accept got", a.recv(1))
    a, _ = s.accept(); print("then", a.recv(1))
    # a dual-stack listener; another thread connects over both families, non-blocking
    s = socket.socket(socket.AF_INET6); s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", 0)); s.listen(4); port = s.getsockname()[1]
    def client(addr):
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        c = socket.socket(fam); c.setblocking(False); c.connect_ex((addr, port))
        c.settimeout(10); c.sendall(addr.encode()); c.close()
    for addr in ("127.0.0.1", "::1"):
        t = threading.Thread(target=client, args=(addr,)); t.start(); t.join()
    s.settimeout(10)
    got = sorted(s.accept()[0].recv(20) for _ in range(2))
    print("dual-stack from a thread", got)
"""


def test_python_guest_connects_to_itself(karn, native, same, netns):
    """The red team's reproducer and more: both families, a connection closed before
    accept, non-blocking connects from another thread; output as natively."""
    if not os.access(PYTHON, os.X_OK):
        pytest.fail(f"{PYTHON} missing (apt-get install python3)", pytrace=False)
    code = textwrap.dedent(PY_SCRIPT)
    expected = native(PYTHON, "-c", code)
    assert expected.returncode == 0, expected.stderr.decode()
    got = karn(*netns, "--root", "/", PYTHON, "-c", code, timeout=90)
    same(expected, got, "python loopback")
    assert b"network policy" not in got.stderr


def test_c_threads_connect_over_both_families(build, karn, native, netns):
    """Three threads connect at once over 127.0.0.1 and [::1] (one non-blocking, one on a
    socket the main thread made), two close before accept; all three are accepted."""
    exe = build("loopback_self", "static")
    expected = native(exe)
    assert expected.returncode == 0, expected.stdout
    assert len(sorted_lines(expected.stdout)) == 3
    got = karn(*netns, exe, timeout=60)
    assert got.returncode == 0, got.stdout + got.stderr
    assert sorted_lines(got.stdout) == sorted_lines(expected.stdout)
    assert b"network policy" not in got.stderr


@pytest.fixture(scope="module")
def go_exe() -> Path:
    return go_build(PROGRAMS / "go" / "loopback_dial.go", "go-loopback_dial")


@pytest.mark.serial  # 40 dials within the program's 10 s timeout: flaky beside other tests
def test_go_dials_itself_over_both_families(go_exe, karn, native, same, netns):
    """40 concurrent dials over 127.0.0.1 and [::1] closed before accept, then a
    happy-eyeballs dial to localhost (the collected root's /etc/hosts has both)."""
    expected = native(go_exe)
    assert expected.returncode == 0, expected.stdout
    got = karn(*netns, go_exe, timeout=90)
    same(expected, got, "go loopback")


def test_host_connection_never_makes_the_listener_readable(build):
    """R9: a host process connects to the host port behind an unpublished guest listener.
    The guest's poll must not say readable (accept would have nothing to give), and a
    non-blocking accept says EAGAIN; the guest's own connection then does both."""
    exe = build("loopback_self", "static")
    cmd = [sys.executable, "-m", "karn", "run", "-p", f"{free_port()}:9", str(exe),
           "hostpoll", str(free_port())]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    hosts: list[socket.socket] = []
    try:
        assert proc.stdout.readline() == b"LISTENING\n", proc.stderr.read()
        ports = listening_ports(proc.pid)
        assert len(ports) == 1, ports  # the guest's listener, on the host
        for family, ip in ((socket.AF_INET6, "::ffff:127.0.0.1"), (socket.AF_INET6, "::1"),
                           (socket.AF_INET, "127.0.0.1")):
            host = socket.socket(family)
            host.setblocking(False)
            host.connect_ex((ip, ports[0]))
            hosts.append(host)
        # wait until the host's attempts went as far as they go (connected, refused or
        # still waiting for an answer)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not all(select.select([], hosts, [], 0.1)[1]):
            pass
        connected = [h for h in hosts if h.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                     and select.select([], [h], [], 0)[1]]
        out, err = proc.communicate(b"go\n", timeout=60)
    finally:
        for host in hosts:
            host.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = out.decode().splitlines()
    assert proc.returncode == 0, out + err
    assert lines == [
        "after the host's connect: poll 0 revents 0",
        "after the host's connect: accept Resource temporarily unavailable",
        "after its own connect: poll 1 revents 0x1",
        "after its own connect: accept a connection",
    ], out + err
    assert not connected, "a host process completed a handshake with the guest's listener"
