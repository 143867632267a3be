"""Shared fixtures: build the C test programs, run things under karn and natively.

Every test here runs real binaries in real KVM virtual machines: /dev/kvm, gcc,
musl-gcc and busybox are required, and their absence fails the tests (CI must provide
them; see .ci/run and `make test`), it never skips them.
"""

from __future__ import annotations

import difflib
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import PROGRAMS, compile_c, prune_cache

# What karn gives a guest by default (like docker): the tests give native runs the same.
GUEST_DEFAULT_ENV: dict[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
}

KARN_TIMEOUT = 60.0
_STATE_DIR = pytest.StashKey[str]()
BUSYBOX = "/bin/busybox"


@dataclass(frozen=True)
class Variant:
    """One way of building a C test program."""

    name: str
    compiler: str
    flags: tuple[str, ...]


VARIANTS: tuple[Variant, ...] = (
    Variant("static", "gcc", ("-static",)),
    Variant("dynamic", "gcc", ()),
    Variant("static-pie", "gcc", ("-static-pie",)),
    Variant("musl-static", "musl-gcc", ("-static",)),
)
VARIANT_NAMES = tuple(v.name for v in VARIANTS)
# Built by the tests that name them, not in every test that runs each of VARIANTS.
EXTRA_VARIANTS = (Variant("musl-dynamic", "musl-gcc", ()),)


def _require_tools() -> None:
    problems = []
    if not os.path.exists("/dev/kvm"):
        problems.append("/dev/kvm does not exist (karn needs KVM)")
    elif not os.access("/dev/kvm", os.R_OK | os.W_OK):
        problems.append("/dev/kvm is not readable and writable by this user")
    for tool in ("gcc", "musl-gcc"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found (apt-get install gcc musl-tools)")
    if not os.access(BUSYBOX, os.X_OK):
        problems.append(f"{BUSYBOX} not found (apt-get install busybox-static)")
    if problems:
        pytest.fail("test prerequisites missing: " + "; ".join(problems), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def prerequisites() -> None:
    """Fail (never skip) every test when KVM or a build tool is missing."""
    _require_tools()


def pytest_configure(config: pytest.Config) -> None:
    """Every karn the tests start records its instance in a state directory of this run
    (of this worker): `karn ps`, or `karn rm IMAGE` (refused while an instance of the image
    runs), must not see the instances of another run or another user of the machine.
    Short: the directory holds UNIX socket paths."""
    config.stash[_STATE_DIR] = tempfile.mkdtemp(prefix="ks-", dir="/tmp")
    os.environ["KARN_STATE_DIR"] = config.stash[_STATE_DIR]


def pytest_report_header(config: pytest.Config) -> str:
    """Which syscall transport the karn runs use where a test names none: the default,
    fast, unless KARN_SYSCALL_TRANSPORT=exit (how a file runs in exit mode)."""
    chosen = os.environ.get("KARN_SYSCALL_TRANSPORT")
    return f"karn syscall transport: {chosen or 'fast (the default)'}"


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(config.stash.get(_STATE_DIR, ""), ignore_errors=True)


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # once a run: not in each xdist worker
        prune_cache()


@pytest.fixture(autouse=True)
def machine_share(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Under pytest-xdist, a test marked serial runs with the machine to itself.

    A readers-writer lock shared by the workers: every test holds it shared, a serial one
    exclusive. A serial test waiting for it holds the turnstile, so that the other workers
    start nothing new until it had its turn.
    """
    if not hasattr(request.config, "workerinput"):
        yield
        return
    base = tmp_path_factory.getbasetemp().parent  # the run's, shared by its workers
    serial = request.node.get_closest_marker("serial") is not None
    with open(base / "turnstile.lock", "a") as turnstile, open(base / "tests.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if serial:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        else:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
            fcntl.flock(lock, fcntl.LOCK_SH)
        yield


@pytest.fixture(scope="session")
def build_dir() -> Iterator[Path]:
    """Where compiled programs go: outside /tmp, which is a tmpfs inside the guest."""
    base = os.environ.get("KARN_TEST_BUILD_DIR") or "/var/tmp"
    os.makedirs(base, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="karn-tests-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


Builder = Callable[..., Path]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A KARN_HOME of the test's own (karn makes it on first use)."""
    return tmp_path / "karn-home"


@pytest.fixture(scope="module")
def state_env() -> Iterator[dict[str, str]]:
    """karn's environment with a private state directory (short: it holds UNIX socket
    paths) and KARN_HOME inside it."""
    path = tempfile.mkdtemp(prefix="ks-", dir="/tmp")
    env = dict(os.environ, KARN_STATE_DIR=path, KARN_HOME=os.path.join(path, "home"))
    yield env
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def build() -> Builder:
    """build(program, variant="static", extra_flags=()) -> path of the compiled binary.

    program is the stem of tests/programs/<program>.c; binaries are cached across runs
    (tests/helpers.py: keyed by the source, its headers, the flags and the compiler).
    """
    by_name = {v.name: v for v in (*VARIANTS, *EXTRA_VARIANTS)}

    def _build(program: str, variant: str = "static", extra_flags: Sequence[str] = ()) -> Path:
        v = by_name[variant]
        return compile_c(
            PROGRAMS / f"{program}.c",
            f"{program}-{variant}",
            v.compiler,
            (*v.flags, "-O1", "-g", "-Wall"),
            tuple(extra_flags),
        )

    return _build


def _run(
    cmd: Sequence[str],
    *,
    input: bytes | None,
    env: dict[str, str] | None,
    cwd: str | os.PathLike[str] | None,
    timeout: float,
    umask: int = -1,
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            list(cmd),
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            env=env,
            cwd=cwd,
            timeout=timeout,
            umask=umask,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-2000:].decode(errors="replace")
        err = (exc.stderr or b"")[-2000:].decode(errors="replace")
        pytest.fail(
            f"timed out after {timeout}s: {' '.join(map(str, cmd))}\n"
            f"--- stdout (tail)\n{out}\n--- stderr (tail)\n{err}",
            pytrace=False,
        )


def karn_run(
    *args: str | os.PathLike[str],
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = KARN_TIMEOUT,
) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m karn run ARGS...` and return the completed process (bytes).

    env replaces karn's own (host) environment; extra_env adds to it. Neither is the guest
    environment: that is karn's default plus -e options.
    """
    host_env = dict(os.environ if env is None else env)
    if extra_env:
        host_env.update(extra_env)
    cmd = [sys.executable, "-m", "karn", "run", *map(str, args)]
    return _run(cmd, input=input, env=host_env, cwd=cwd, timeout=timeout)


def native_run(
    *argv: str | os.PathLike[str],
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    extra_env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = "/",
    timeout: float = KARN_TIMEOUT,
) -> subprocess.CompletedProcess[bytes]:
    """Run a program natively with the environment karn gives a guest by default.

    The default cwd is / and the umask 022, as karn gives a guest by default.
    """
    guest_env = dict(GUEST_DEFAULT_ENV if env is None else env)
    if extra_env:
        guest_env.update(extra_env)
    return _run(
        [str(a) for a in argv], input=input, env=guest_env, cwd=cwd, timeout=timeout, umask=0o022
    )


@pytest.fixture(scope="session")
def karn() -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """karn(*args, input=, env=, extra_env=, cwd=, timeout=) -> CompletedProcess."""
    return karn_run


@pytest.fixture(scope="session")
def native() -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """native(*argv, input=, env=, extra_env=, cwd=, timeout=) -> CompletedProcess."""
    return native_run


def _tail(data: bytes, lines: int = 30) -> str:
    text = data.decode(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def describe_difference(
    native: subprocess.CompletedProcess[bytes], guest: subprocess.CompletedProcess[bytes]
) -> str:
    """A readable account of how a karn run differs from the native one ('' if it doesn't)."""
    parts = []
    if native.returncode != guest.returncode:
        parts.append(f"exit status: native {native.returncode}, karn {guest.returncode}")
    if native.stdout != guest.stdout:
        a = native.stdout.decode(errors="replace").splitlines(keepends=True)
        b = guest.stdout.decode(errors="replace").splitlines(keepends=True)
        diff = list(difflib.unified_diff(a, b, "native stdout", "karn stdout", n=2))
        if not diff:  # differ only in undecodable bytes
            diff = [f"native {native.stdout[:200]!r}\n", f"karn   {guest.stdout[:200]!r}\n"]
        if len(diff) > 60:
            diff = diff[:60] + [f"... ({len(diff) - 60} more diff lines)\n"]
        parts.append("".join(diff).rstrip("\n"))
    if parts:
        parts.insert(0, f"--- karn stderr (tail)\n{_tail(guest.stderr)}\n---")
    return "\n".join(parts)


def assert_same(
    native: subprocess.CompletedProcess[bytes],
    guest: subprocess.CompletedProcess[bytes],
    what: str = "",
) -> None:
    """Fail unless karn's run has byte-identical stdout and the same exit status."""
    diff = describe_difference(native, guest)
    if diff:
        pytest.fail(f"{what}: karn differs from native\n{diff}", pytrace=False)


@pytest.fixture(scope="session")
def same() -> Callable[..., None]:
    """same(native_result, karn_result, what) fails with a diff unless they agree."""
    return assert_same
