"""C programs from tests/programs, in four build variants: karn must match native.

Each program prints return values and errno names of the calls it makes; stdout and the
exit status of a karn run must be byte-identical to the same binary run natively.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios

import pytest
from conftest import GUEST_DEFAULT_ENV, VARIANT_NAMES

# Programs that print the same natively and under karn, with no arguments or input.
PLAIN_PROGRAMS = ("files", "dirs", "fds", "timing", "memory", "system", "exit42")


@pytest.mark.parametrize("variant", VARIANT_NAMES)
@pytest.mark.parametrize("program", PLAIN_PROGRAMS)
def test_program_matches_native(program, variant, build, karn, native, same):
    exe = build(program, variant)
    expected = native(exe)
    assert expected.returncode in (0, 42), expected.stdout.decode() + expected.stderr.decode()
    same(expected, karn(exe), f"{program} ({variant})")


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_startup_args_env_auxv_stdin(variant, build, karn, native, same):
    exe = build("startup", variant)
    args = ["one", "two words", "", "--flag=x", "fail"]
    data = bytes(range(256)) * 300 + b"tail\n"
    expected = native(
        exe, *args, input=data, extra_env={"FOO": "bar", "EMPTY": "", "PASSED": "from-host"}
    )
    assert expected.returncode == 3
    got = karn(
        "-e",
        "FOO=bar",
        "-e",
        "EMPTY=",
        "-e",
        "PASSED",
        exe,
        *args,
        input=data,
        extra_env={"PASSED": "from-host"},
    )
    same(expected, got, f"startup ({variant})")


@pytest.mark.parametrize("variant", ["static", "dynamic"])
def test_env_override_default(variant, build, karn, native, same):
    exe = build("startup", variant)
    env = dict(GUEST_DEFAULT_ENV, HOME="/home/someone", PATH="/bin")
    same(
        native(exe, env=env),
        karn("-e", "HOME=/home/someone", "-e", "PATH=/bin", exe),
        f"startup with -e overriding defaults ({variant})",
    )


@pytest.mark.parametrize("variant", ["static", "musl-static"])
def test_hostname_option(variant, build, karn):
    exe = build("system", variant)
    got = karn("--hostname", "unikernel-test-7", exe, "hostname")
    assert got.returncode == 0, got.stderr.decode()
    assert b"nodename = unikernel-test-7\n" in got.stdout
    assert b"gethostname == nodename: yes" in got.stdout


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_unimplemented_syscall_is_enosys_and_logged_once(variant, build, karn, native, same):
    exe = build("unimplemented", variant)
    got = karn(exe)
    same(native(exe), got, f"unimplemented ({variant})")
    err = got.stderr.decode(errors="replace")
    warnings = [line for line in err.splitlines() if "unimplemented syscall" in line]
    named = [line for line in warnings if "afs_syscall" in line]
    assert len(named) == 1, f"expected one warning naming afs_syscall, got:\n{err}"
    assert all(line.startswith("karn: ") or "karn" in line for line in warnings), err
    assert "Traceback" not in err


def test_memory_option(build, karn, native, same):
    """--memory sets the guest's memory; 1G is plenty for the memory program."""
    exe = build("memory", "static")
    same(native(exe), karn("--memory", "1G", exe), "memory with --memory 1G")


@pytest.mark.parametrize("variant", ["static", "musl-static"])
@pytest.mark.parametrize("program", ["files", "dirs", "memory"])
def test_program_on_volume(program, variant, tmp_path, build, karn, native, same):
    """The same calls on a read-write host volume (-v) instead of the guest's tmpfs."""
    exe = build(program, variant)
    native_dir, guest_dir = tmp_path / "native", tmp_path / "guest"
    native_dir.mkdir()
    guest_dir.mkdir()
    expected = native(exe, native_dir)
    assert expected.returncode == 0
    got = karn("-v", f"{guest_dir}:/data", exe, "/data")
    same(expected, got, f"{program} ({variant}) on a volume")
    assert list(guest_dir.iterdir()) == [], "the program cleans up after itself"


@pytest.mark.parametrize("variant", ["static", "dynamic"])
def test_terminal_ioctls(variant, build):
    """TCGETS/TIOCGWINSZ on stdin/stdout that are a pseudo-terminal, as natively."""
    exe = build("tty", variant)

    def on_pty(cmd: list[str]) -> tuple[int, bytes]:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 111, 0, 0))
        proc = subprocess.Popen(
            cmd, stdin=slave, stdout=slave, stderr=subprocess.PIPE, start_new_session=True
        )
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        rc = proc.wait(timeout=60)
        proc.stderr.close()
        return rc, out

    native_rc, native_out = on_pty([str(exe)])
    karn_rc, karn_out = on_pty([sys.executable, "-m", "karn", "run", str(exe)])
    assert b"rows=33 cols=111" in native_out
    assert (karn_rc, karn_out) == (native_rc, native_out)


def test_root_option(tmp_path, build, karn, native):
    """--root DIR: the program is a path inside DIR, which is the guest's whole root."""
    exe = build("startup", "static")
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(exe, root / "bin" / "startup")
    expected = native(root / "bin" / "startup", "x")
    got = karn("--root", root, "/bin/startup", "x")
    assert got.returncode == expected.returncode, got.stderr.decode(errors="replace")
    assert got.stdout == expected.stdout


def test_program_stored_under_tmp(tmp_path, build, karn, native, same):
    """A program whose host path is under /tmp still runs (guest /tmp is a tmpfs)."""
    exe = build("exit42", "static")
    copy = tmp_path / "exit42-copy"
    copy.write_bytes(exe.read_bytes())
    os.chmod(copy, 0o755)
    same(native(copy), karn(copy), "program under /tmp")


def test_program_found_on_path(build, karn, native, same):
    """PROGRAM may be a bare name looked up on the host's $PATH."""
    exe = build("exit42", "dynamic")
    env = dict(os.environ, PATH=f"{exe.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    same(native(exe), karn(exe.name, env=env), "program by name on $PATH")


def test_stdout_and_stderr_are_separate(build, karn):
    exe = build("fds", "static")
    got = karn(exe)
    assert got.returncode == 0, got.stderr.decode()
    assert b"to stderr\n" in got.stderr
    assert b"to stderr" not in got.stdout
    assert re.search(rb"raw write on fd 1\n", got.stdout)
