"""Hostile guests (C and Python) try to get out; each attempt must be refused, as Linux
would refuse it in the guest's place, and the host side is checked for what might have
escaped: files outside the volume, changes to the read-only root, connections that
reached a host server, host connections that reached the guest.

Positive controls (an egress rule that allows the host service, a published port) show
that the same checks do see a connection when policy allows one.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port, listening_ports, wait_for

SECRET = b"TOPSECRET host file\n"


def results(out: bytes) -> dict[str, str]:
    """The guest's "name = result" lines."""
    pairs = (line.split(" = ", 1) for line in out.decode().splitlines() if " = " in line)
    return {name: value for name, value in pairs}


def expect(got: dict[str, str], wanted: dict[str, str], run: subprocess.CompletedProcess):
    wrong = {k: (got.get(k), v) for k, v in wanted.items() if got.get(k) != v}
    assert not wrong, f"(got, wanted): {wrong}\n--- stderr\n{run.stderr.decode()[-2000:]}"


def tree(path: Path) -> dict[str, bytes]:
    """Every entry under path (symlinks as their target), to compare before and after."""
    found = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = Path(root, name)
            rel = str(p.relative_to(path))
            found[rel] = (os.readlink(p).encode() if p.is_symlink()
                          else b"<dir>" if p.is_dir() else p.read_bytes())
    return found


def digest(path: str) -> tuple[str, int]:
    st = os.stat(path)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest(), st.st_mode


@pytest.fixture
def host_dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(volume, outside, secret): a volume holding host-made symlinks that point out of
    it, and a host directory beside it with a secret the guest must never read."""
    volume, outside = tmp_path / "volume", tmp_path / "outside"
    volume.mkdir()
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_bytes(SECRET)
    (volume / "abs-link").symlink_to("/")
    (volume / "rel-link").symlink_to("../" * 12)
    (volume / "outside-link").symlink_to(outside)
    return volume, outside, secret


FS_REFUSALS = {
    "create ../ from volume": "-1 ENOENT",
    "read ../ secret": "-1 ENOENT",
    "create ../ from cwd": "-1 ENOENT",
    "openat ../ from volume fd": "-1 ENOENT",
    "host absolute symlink": "-1 ENOENT",
    "host relative symlink": "-1 ENOENT",
    "create via host dir symlink": "-1 ENOENT",
    "guest absolute symlink": "-1 ENOENT",
    "create via guest symlink": "-1 ENOENT",
    "hard link to host secret": "-1 ENOENT",
    "rename into host dir": "-1 ENOENT",
    "create in root": "-1 EROFS",
    "mkdir in root": "-1 EROFS",
    "write /etc/passwd": "-1 EROFS",
    "truncate /etc/passwd": "-1 EROFS",
    "chmod /etc/passwd": "-1 EROFS",
    "unlink /etc/passwd": "-1 EROFS",
    "symlink in root": "-1 EROFS",
    "host secret": "-1 ENOENT",  # not in the image
    "host /etc/shadow": "-1 ENOENT",
    "host /root/.bashrc": "-1 ENOENT",
}


def test_c_guest_cannot_leave_its_volume_or_write_its_root(build, karn, host_dirs):
    volume, outside, secret = host_dirs
    exe = build("hostile", "static")
    before_outside, before_passwd = tree(outside), digest("/etc/passwd")
    run = karn("-v", f"{volume}:/data", exe, "fs", "/data", secret, outside)
    assert run.returncode == 0 and run.stdout.endswith(b"alive\n"), run.stdout + run.stderr
    expect(results(run.stdout), FS_REFUSALS, run)
    assert SECRET.strip().decode() not in run.stdout.decode()
    assert tree(outside) == before_outside, "something was created or changed outside"
    assert digest("/etc/passwd") == before_passwd
    # Inside the volume: only what the guest made, symlinks kept as the guest wrote them.
    inside = tree(volume)
    assert inside["guest-link"] == str(secret).encode() and inside["sub"] == b"<dir>"
    assert not [p for p in inside if p.startswith(("abs-link/", "rel-link/", "outside-link/"))]


def test_c_guest_cannot_write_a_root_directory(build, karn, tmp_path, host_dirs):
    """--root DIR: the root is a host directory, read-only for the guest."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    exe = root / "hostile"
    exe.write_bytes(build("hostile", "static").read_bytes())
    exe.chmod(0o755)
    volume, outside, secret = host_dirs
    before = tree(root)
    run = karn("--root", root, "-v", f"{volume}:/data", "/hostile", "fs", "/data", secret,
               outside)
    assert run.returncode == 0, run.stdout + run.stderr
    got = results(run.stdout)
    expect(got, {k: v for k, v in FS_REFUSALS.items() if "root" in k or "passwd" in k}, run)
    assert tree(root) == before, "the read-only root directory changed on the host"


def test_c_guest_cannot_reach_host_processes_through_proc_or_ptrace(build, karn):
    exe = build("hostile", "static")
    run = karn(exe, "proc", str(os.getpid()))
    assert run.returncode == 0, run.stdout + run.stderr
    expect(results(run.stdout), {
        "open /proc/self/mem rw": "-1 ENOENT",
        "open /proc/self/mem r": "-1 ENOENT",
        "open /proc/1/mem": "-1 ENOENT",
        "host pid environ": "-1 ENOENT",  # the host pid does not exist in the guest
        "host pid mem": "-1 ENOENT",
        "host pid cmdline": "-1 ENOENT",
        "/proc/self/root escape": "-1 ENOENT",
        "ptrace traceme": "-1 EPERM",
        "ptrace attach self": "-1 EPERM",
        "ptrace attach host": "-1 EPERM",
        "ptrace seize host": "-1 EPERM",
        "process_vm_readv host": "-1 ENOSYS",
    }, run)


class HostServer:
    """A TCP listener and a UDP socket on one host loopback port, counting what arrives."""

    def __init__(self) -> None:
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp.setblocking(False)
        self.udp.setblocking(False)

    def arrived(self) -> list[str]:
        got = []
        for sock, kind in ((self.tcp, "tcp connection"), (self.udp, "udp datagram")):
            try:
                while True:
                    if kind.startswith("tcp"):
                        sock.accept()[0].close()
                    else:
                        sock.recvfrom(100)
                    got.append(kind)
            except BlockingIOError:
                pass
        return got

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


@pytest.fixture
def host_server() -> Iterator[HostServer]:
    server = HostServer()
    yield server
    server.close()


NET_REFUSALS = {
    "raw icmp socket": "-1 EPERM",
    "raw ipv6 socket": "-1 EPERM",
    "raw ip socket": "-1 EPERM",
    "packet socket": "-1 EPERM",
    "packet dgram socket": "-1 EPERM",
    "icmp ping socket": "-1 EACCES",  # as Linux outside net.ipv4.ping_group_range
    "udplite socket": "-1 EPROTONOSUPPORT",  # as a kernel without UDP-Lite (was EACCES)
    # the guest's own loopback, where nothing listens on that port
    "connect 127.0.0.1": "-1 ECONNREFUSED",
    "connect 127.0.0.2": "-1 ECONNREFUSED",
    "connect 0.0.0.0": "-1 ECONNREFUSED",
    "connect ::1": "-1 ECONNREFUSED",
    "connect ::ffff:127.0.0.1": "-1 ECONNREFUSED",
    "connect ::": "-1 ECONNREFUSED",
    "udp sendto 127.0.0.1": "1",  # sent, and lost: nobody in the guest has that port
}


@pytest.mark.parametrize("network", [None, "egress=10.0.0.0/8:443,fd00::/8"])
def test_c_guest_sockets_cannot_reach_the_host(build, karn, host_server, network):
    exe = build("hostile", "static")
    opts = ["--network", network] if network else []
    run = karn(*opts, exe, "net", str(host_server.port))
    assert run.returncode == 0, run.stdout + run.stderr
    expect(results(run.stdout), NET_REFUSALS, run)
    time.sleep(0.2)  # a datagram or connection would be queued by now
    assert host_server.arrived() == []


def test_egress_rule_for_the_host_service_does_let_it_through(build, karn, host_server):
    """The control: the checks above would see a connection that got out."""
    exe = build("hostile", "static")
    run = karn("--network", f"egress=127.0.0.1/32:{host_server.port}", exe, "net",
               str(host_server.port))
    assert results(run.stdout)["connect 127.0.0.1"] == "0", run.stdout + run.stderr
    wait_for(lambda: "tcp connection" in host_server.arrived(), "the guest's connection")


def host_connect(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return "connected"
    except OSError as err:
        return type(err).__name__


def run_listener(build, *opts: str, port: int, host_ports: list[int]) -> tuple[dict, dict]:
    """Run `hostile listen PORT`; once it listens, connect from the host to host_ports and
    to every port the monitor listens on (the guest's listeners on the host)."""
    exe = build("hostile", "static")
    cmd = [sys.executable, "-m", "karn", "run", *opts, str(exe), "listen", str(port)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out = b""
        while b"LISTENING" not in out:
            line = proc.stdout.readline()
            assert line, f"guest ended early: {out!r} {proc.stderr.read()!r}"
            out += line
        monitor_ports = listening_ports(proc.pid)
        assert len(monitor_ports) >= 2, monitor_ports  # the guest's two listeners
        attempts = {p: host_connect(p) for p in [*host_ports, *monitor_ports]}
        rest, err = proc.communicate(b"x", timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + rest + err
    return results(out + rest), attempts


def test_guest_listeners_are_not_reachable_from_the_host(build):
    port = free_port()
    got, attempts = run_listener(build, port=port, host_ports=[port, 80])
    assert got["bind port"] == "ok" and got["bind 80"] == "ok"  # root may, on its loopback
    assert got["bind a foreign address"] == "-1 EADDRNOTAVAIL"
    assert attempts[port] != "connected"  # nothing of karn's is there
    # Whatever the host has on port 80, and though a host process can find the host ports
    # behind the guest's listeners and connect to them, nothing reached the guest.
    assert got["accept on port"] == "-1 EAGAIN" and got["accept on 80"] == "-1 EAGAIN", got


def test_published_port_is_reachable_from_the_host(build):
    """The control: a published port does bring a host connection to the guest."""
    port, host_port = free_port(), free_port()
    got, attempts = run_listener(build, "-p", f"{host_port}:{port}", port=port,
                                 host_ports=[host_port])
    assert attempts[host_port] == "connected"
    assert got["accept on port"] not in ("-1 EAGAIN", None), got


PYTHON_GUEST = textwrap.dedent("""
    import ctypes, errno, os, socket, sys
    token, secret, host_port, host_pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

    def attempt(name, fn):
        try:
            print(f"{name} = ok {fn()!r}"[:200])
        except OSError as err:
            print(f"{name} = {errno.errorcode[err.errno]}")

    attempt("create in root", lambda: open(f"/karn-escape-{token}", "w"))
    attempt("mkdir in /usr", lambda: os.mkdir(f"/usr/karn-escape-{token}"))
    attempt("chmod /etc/passwd", lambda: os.chmod("/etc/passwd", 0o666))
    attempt("append /etc/passwd", lambda: open("/etc/passwd", "a"))
    attempt("rename /etc/hostname", lambda: os.rename("/etc/hostname", "/etc/h2"))
    attempt("volume ../ escape", lambda: open(f"/data/../../karn-escape-{token}", "w"))
    os.symlink(os.path.dirname(secret), "/data/out")
    attempt("volume symlink escape", lambda: open(f"/data/out/escape-{token}", "w"))
    attempt("read /proc/self/mem", lambda: open("/proc/self/mem", "rb").read(1))
    attempt("read host environ", lambda: open(f"/proc/{host_pid}/environ").read())
    attempt("packet socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
    attempt("raw socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                                socket.IPPROTO_ICMP))
    attempt("connect host service",
            lambda: socket.create_connection(("127.0.0.1", host_port), timeout=5))
    libc = ctypes.CDLL(None, use_errno=True)
    r = libc.ptrace(16, 1, None, None)  # PTRACE_ATTACH
    print(f"ptrace attach = {r} {errno.errorcode.get(ctypes.get_errno(), 0)}")
    print("alive")
""")


def test_python_guest_cannot_escape(karn, host_dirs, host_server):
    """Debian's python3 with the host's root directory as its (read-only) root."""
    volume, outside, secret = host_dirs
    token = f"{os.getpid()}-{time.monotonic_ns()}"
    before_outside, before_passwd = tree(outside), digest("/etc/passwd")
    run = karn("--root", "/", "-v", f"{volume}:/data", "/usr/bin/python3", "-c", PYTHON_GUEST,
               token, secret, str(host_server.port), str(os.getpid()), timeout=120)
    assert run.returncode == 0 and run.stdout.endswith(b"alive\n"), run.stdout + run.stderr
    expect(results(run.stdout), {
        "create in root": "EROFS",
        "mkdir in /usr": "EROFS",
        "chmod /etc/passwd": "EROFS",
        "append /etc/passwd": "EROFS",
        "rename /etc/hostname": "EROFS",
        "volume ../ escape": "EROFS",  # /data/../.. is the guest's (read-only) root
        # the symlink's target in guest terms: under the guest's own /tmp (a tmpfs), or
        # in the host root, which the guest sees read-only
        "volume symlink escape": "ENOENT" if str(outside).startswith("/tmp/") else "EROFS",
        "read /proc/self/mem": "ENOENT",
        "read host environ": "ENOENT",
        "packet socket": "EPERM",
        "raw socket": "EPERM",
        "connect host service": "ECONNREFUSED",
        "ptrace attach": "-1 EPERM",
    }, run)
    assert not Path(f"/karn-escape-{token}").exists()
    assert not Path(f"/usr/karn-escape-{token}").exists()
    assert tree(outside) == before_outside
    assert digest("/etc/passwd") == before_passwd
    time.sleep(0.2)
    assert host_server.arrived() == []



UDP_GUEST = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 5353))
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"own", ("127.0.0.1", 5353))
    print("own datagram:", s.recvfrom(100)[0].decode(), flush=True)
    print("READY", flush=True)
    sys.stdin.readline()  # the host has sent its datagrams
    s.settimeout(3)
    try:
        print("then:", s.recvfrom(100)[0].decode(), flush=True)
    except socket.timeout:
        print("then: nothing", flush=True)
""")


def udp_ports(pid: int) -> list[int]:
    """The UDP ports process pid has sockets bound to (its fds in /proc/net/udp*)."""
    inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
              if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
    ports = []
    for table in ("udp", "udp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            ports += [int(fields[1].rsplit(":", 1)[1], 16) for fields in
                      (line.split() for line in f.readlines()[1:]) if fields[9] in inodes]
    return ports


def run_udp_guest(*opts: str, send_to: list[int] | None = None) -> bytes:
    """The guest binds UDP 5353; then the host sends a datagram to send_to (default:
    every UDP port the monitor has, i.e. the host ports behind the guest's sockets)."""
    cmd = [sys.executable, "-m", "karn", "run", "--root", "/", *opts, "/usr/bin/python3",
           "-c", UDP_GUEST]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        out = b""
        while b"READY" not in out:
            line = proc.stdout.readline()
            assert line, out + proc.stderr.read()
            out += line
        ports = udp_ports(proc.pid) if send_to is None else send_to
        assert ports
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as host:
            for port in ports:
                host.sendto(b"from-host", ("127.0.0.1", port))
        rest, err = proc.communicate(b"sent\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + rest + err
    return out + rest


def test_unpublished_udp_socket_does_not_hear_the_host():
    out = run_udp_guest()
    assert b"own datagram: own\n" in out  # the guest's own traffic still flows
    assert out.endswith(b"then: nothing\n"), out


def test_published_udp_port_hears_the_host():
    """The control: the same datagram on a published port reaches the guest."""
    host_port = free_port()
    out = run_udp_guest("-p", f"{host_port}:5353/udp", send_to=[host_port])
    assert out.endswith(b"then: from-host\n"), out
