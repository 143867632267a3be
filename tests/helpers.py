"""Helpers shared by several test files, and the cache of compiled test programs.

The cache keeps what gcc, musl-gcc and go build across runs, in $KARN_TEST_CACHE or
/var/tmp/karn-test-cache (outside /tmp: a guest's /tmp is a tmpfs). An entry's key is a
hash of everything that makes the binary: the command (compiler and flags), the source,
the headers it includes from the tests, the source's path (debug info names it) and the
toolchain (its version, and the libc it links statically). Several pytest workers may
build the same program at once: one builds under a lock, into a temporary name renamed
into place, and the others wait for it and reuse the result.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from karn.kernel.fs.ports import DestPort, SourcePort
from karn.system.channels import ChannelRun
from karn.system.description import Channel, Port

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
PROGRAMS = TESTS / "programs"

CACHE_UNUSED_DAYS = 14  # entries nobody used for this long are removed at a session start
_OUT = "{out}"  # the output path in a cached command (the key must not depend on it)
_INCLUDE = re.compile(rb'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)

T = TypeVar("T")


# ---- waiting, ports, processes ----------------------------------------------------------


def wait_for(predicate: Callable[[], T], what: str = "", timeout: float = 60.0) -> T:
    """Poll predicate until it returns something true (returned); fail after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}", pytrace=False)
        time.sleep(0.1)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(count: int) -> int:
    """The first of count consecutive ports, all bindable on 0.0.0.0 and :: right now, below
    the ephemeral range (32768 and up here), so no client connection takes one meanwhile."""
    start = 10000 + (os.getpid() * 97 + time.monotonic_ns()) % 2000 * 10
    for base in range(start, 32000, count):
        if all(_bindable(socket.AF_INET, "0.0.0.0", p) and _bindable(socket.AF_INET6, "::", p)
               for p in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports between {start} and 32000")


def _bindable(family: socket.AddressFamily, address: str, port: int) -> bool:
    with socket.socket(family) as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
        return True


def listening_ports(pid: int) -> list[int]:
    """The TCP ports process pid listens on (its socket fds in /proc/PID/net/tcp*)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def signal_when_ready(
    cmd: Sequence[str],
    sig: int,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    timeout: float = 40,
) -> tuple[int, bytes, str]:
    """Start cmd, wait for its "ready" line, send it sig; (returncode, stdout, stderr)."""
    proc = subprocess.Popen(
        list(cmd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=cwd,
    )
    watchdog = threading.Timer(60, proc.kill)  # never hang the suite
    watchdog.start()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if first == b"ready\n":
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=timeout)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, first + out, err.decode(errors="replace")


# ---- the karn CLI -----------------------------------------------------------------------


def karn_in(home: Path, *args: str | os.PathLike[str], input: bytes | None = None,
            timeout: float = 120, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    """`python -m karn ARGS` with KARN_HOME=home."""
    host_env = {**os.environ, "KARN_HOME": str(home), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "karn", *map(str, args)],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        env=host_env,
        timeout=timeout,
    )


def karn_system(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m karn system ARGS` in the environment env (its private state directory)."""
    return subprocess.run(
        [sys.executable, "-m", "karn", "system", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def system_status(env: dict[str, str], name: str) -> dict:
    """`karn system status --json NAME`, parsed."""
    proc = karn_system(env, "status", "--json", name)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def system_logs(env: dict[str, str], name: str, part: str | None = None) -> str:
    """`karn system logs -s NAME [PART]`."""
    args = ["logs", "-s", name] + ([part] if part else [])
    proc = karn_system(env, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# A sender and a receiver partition of one program joined by one channel (depth 8), for
# format(name=, tool=, sender=JSON args, receiver=JSON args, diode="true"|"false", more=
# further keys of the channel table).
PORT_PAIR = """
name = "{name}"
[partitions.sender]
program = "{tool}"
args = {sender}
[partitions.sender.ports.out]
direction = "out"
max_size = 256
[partitions.receiver]
program = "{tool}"
args = {receiver}
[partitions.receiver.ports.in]
direction = "in"
max_size = 256
depth = 8
[[channels]]
from = "sender.out"
to = "receiver.in"
diode = {diode}
{more}
"""


def channel_ends(diode: bool) -> tuple[SourcePort, DestPort, tuple[socket.socket, ...]]:
    """Both ends of a queuing channel of depth 8 (64 B), as the supervisor sets them up for
    two monitors, in this process; close the sockets (the receiver's report socket) after."""
    src = Port("a", "out", "out", "queuing", 64, 8, 0.0)
    dst = Port("b", "in", "in", "queuing", 64, 8, 0.0)
    run = ChannelRun(Channel(src, dst, diode, None, 64), lambda _line: None)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return (SourcePort(run.endpoint(src, -1)[0]),
            DestPort(run.endpoint(dst, theirs.fileno())[0]), (mine, theirs))


class SystemUp:
    """`karn system up -d FILE` for a `with` block (stdout must name the system); `down` at
    the end, whatever happened."""

    def __init__(self, env: dict[str, str], path: Path, name: str) -> None:
        self.env, self.path, self.name = env, path, name

    def __enter__(self) -> SystemUp:
        proc = karn_system(self.env, "up", "-d", str(self.path))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == self.name
        return self

    def __exit__(self, *exc: object) -> None:
        karn_system(self.env, "down", self.name)


def channel(st: dict, name: str) -> dict:
    """One channel of a system's status."""
    return next(c for c in st["channels"] if c["name"] == name)


# ---- the build cache --------------------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get("KARN_TEST_CACHE") or "/var/tmp/karn-test-cache")


@functools.cache
def toolchain(tool: str) -> str:
    """What identifies a compiler's output besides its input: its path, version, and for a C
    compiler the static libc it links (updated by a libc upgrade, which --version misses)."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found", pytrace=False)
    if tool == "go":
        return "\n".join([path, _output([path, "version"]), _stat(path)])
    libc = _static_libc(path)
    return "\n".join([path, _output([path, "--version"]), _stat(path), libc, _stat(libc)])


def _static_libc(compiler: str) -> str:
    """The libc.a a static link takes: the first in the link's -L directories (musl-gcc's
    come from its specs file, which -print-file-name does not read)."""
    link = subprocess.run(
        [compiler, "-static", "-###", "-x", "c", "/dev/null", "-o", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stderr
    for directory in re.findall(r'"?-L\s*"?([^\s"]+)', link):
        libc = os.path.join(directory, "libc.a")
        if os.path.exists(libc):
            return os.path.realpath(libc)
    return "none"


def _output(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout


def _stat(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size} {st.st_mtime_ns}"


def _sources(source: Path) -> Iterable[bytes]:
    """The source and, recursively, the headers it includes with "" (path and text)."""
    seen: set[Path] = set()
    pending = [source.resolve()]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        text = path.read_bytes()
        yield str(path).encode()
        yield text
        for name in _INCLUDE.findall(text):
            header = (path.parent / name.decode()).resolve()
            if header.exists():
                pending.append(header)


def cached_build(
    name: str,
    cmd: Sequence[str],
    source: Path,
    env: dict[str, str] | None = None,
    keyed_env: Sequence[str] = (),
) -> Path:
    """Run cmd (its output path written as "{out}") once for these inputs; the binary's
    path in the cache, called name. keyed_env: the variables of env that change the build.
    """
    digest = hashlib.sha256()
    for part in [
        *cmd,
        toolchain(Path(cmd[0]).name),
        *(f"{k}={(env or {}).get(k)}" for k in keyed_env),
    ]:
        digest.update(part.encode() + b"\0")
    for part in _sources(source):
        digest.update(hashlib.sha256(part).digest())
    entry = cache_dir() / digest.hexdigest()[:24]
    out = entry / name
    if not out.exists():
        entry.mkdir(parents=True, exist_ok=True)
        with open(entry / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be building it: wait
            if not out.exists():
                _compile(cmd, out, env)
    os.utime(entry)  # used: not pruned
    return out


def _compile(cmd: Sequence[str], out: Path, env: dict[str, str] | None) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        argv = [tmp if a == _OUT else a for a in cmd]
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        if proc.returncode != 0:
            pytest.fail(f"build failed: {' '.join(argv)}\n{proc.stderr}", pytrace=False)
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)  # complete or absent: never half-written
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def source_file(name: str, text: str) -> Path:
    """A source file holding text, at a path that depends on text only (so that what is
    built from it can be cached)."""
    data = text.encode()
    path = cache_dir() / "sources" / hashlib.sha256(data).hexdigest()[:24] / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    os.utime(path.parent)  # used: not pruned
    return path


def compile_c(
    source: Path,
    name: str,
    compiler: str = "gcc",
    flags: Sequence[str] = (),
    after: Sequence[str] = (),
) -> Path:
    """`COMPILER FLAGS -o OUT SOURCE AFTER`, cached; the binary's path."""
    return cached_build(name, [compiler, *flags, "-o", _OUT, str(source), *after], source)


GO_ENV = {"CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "GO111MODULE": "auto"}


def go_build(source: Path, name: str, extra_env: dict[str, str] | None = None) -> Path:
    """`go build -o OUT SOURCE` (static: no cgo), cached; the binary's path. Go's own
    build cache is kept beside ours, so a changed program does not rebuild the runtime."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("go not found (apt-get install golang-go)", pytrace=False)
    settings = {**GO_ENV, **(extra_env or {})}
    env = {
        **os.environ,
        **settings,
        "GOCACHE": str(cache_dir() / "gocache"),
        "GOPATH": str(cache_dir() / "gopath"),
    }
    return cached_build(
        name, [go, "build", "-o", _OUT, str(source)], source, env, keyed_env=sorted(settings)
    )


def prune_cache(days: float = CACHE_UNUSED_DAYS) -> None:
    """Remove cache entries no run used for days (Go trims its own cache)."""
    root = cache_dir()
    if not root.is_dir():
        return
    old = time.time() - days * 86400
    for entry in [*root.iterdir(), *root.joinpath("sources").glob("*")]:
        if len(entry.name) == 24 and entry.is_dir() and entry.stat().st_mtime < old:
            shutil.rmtree(entry, ignore_errors=True)
