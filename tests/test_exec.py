"""execve and execveat in the calling process (karn/kernel/exec.py), compared with native
runs of the same programs.

karn runs with `--root /` (the host root, read-only), so the guest finds the programs,
scripts and interpreters at the paths the native run uses. Scripts live in a directory
under /var/tmp: the guest's /tmp is its own tmpfs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BUSYBOX
from helpers import PROGRAMS, go_build

PYTHON = "/usr/bin/python3"


@pytest.fixture
def scripts() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="karn-exec-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _script(path: Path, text: str, mode: int = 0o755) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def _both(karn, native, same, *argv: str | os.PathLike[str], what: str = ""):
    expected = native(*argv)
    got = karn("--root", "/", *argv)
    same(expected, got, what or " ".join(map(str, argv)))
    return got


@pytest.mark.parametrize("variant", ["static", "dynamic", "static-pie"])
@pytest.mark.parametrize("mode", ["fds", "signals", "fexec"])
def test_exec_resets_as_linux(build, karn, native, same, variant, mode):
    """Close-on-exec fds close and plain ones stay; a caught signal returns to its
    default, an ignored one stays ignored, the mask and a pending signal stay, the
    alternate stack goes; /proc/self/exe, comm, AT_EXECFN and the vDSO of the new
    program; fexecve (execveat with AT_EMPTY_PATH)."""
    probe = build("exec_probe", variant, ("-pthread",))
    got = _both(karn, native, same, probe, mode)
    assert b"fd 6 open: yes" in got.stdout or mode != "fds"
    assert b"vdso clock agrees: yes" in got.stdout


def test_exec_programs_with_argv_and_envp(build, karn, native, same):
    probe = build("exec_probe")
    got = _both(karn, native, same, probe, "env", BUSYBOX, "env")
    assert got.stdout == b"EXEC_ONE=1\nEXEC_TWO=two words\nPATH=/bin\n"
    _both(karn, native, same, probe, "env", BUSYBOX, "echo", "one", "two  three", "")
    _both(karn, native, same, probe, "run", BUSYBOX, "readlink", "/proc/self/exe")
    _both(karn, native, same, probe, "run", "/proc/self/exe", "show", "again")


def test_exec_from_a_thread_keeps_the_pid(build, karn, native, same):
    """Every other thread ends (one sleeping, one spinning in user code); the execing
    thread becomes the leader with the process's pid."""
    probe = build("exec_probe", "static", ("-pthread",))
    got = _both(karn, native, same, probe, "threads")
    assert b"pid kept: yes" in got.stdout and b"Threads:\t1" in got.stdout


def test_exec_errors_as_linux(build, karn, native, same, scripts):
    probe = build("exec_probe")
    (scripts / "dir").mkdir()
    _script(scripts / "not-executable", "#!/bin/busybox sh\n", 0o644)
    _script(scripts / "no-shebang", "echo hi\n")
    _script(scripts / "empty", "")
    _script(scripts / "blank-shebang", "#!   \n")
    _script(scripts / "missing-interpreter", "#!/nonexistent/sh\n")
    os.symlink(BUSYBOX, scripts / "link")
    for name in ("missing", "dir", "not-executable", "no-shebang", "empty", "blank-shebang",
                 "missing-interpreter", "dir/", "link/"):
        got = _both(karn, native, same, probe, "run", scripts / name)
        assert got.returncode == 1, name
    got = _both(karn, native, same, probe, "badptr")
    assert b"execve bad argv = -1 EFAULT" in got.stdout
    got = _both(karn, native, same, probe, "big")
    assert b"argument: errno7" in got.stdout  # E2BIG (karntest.h names no more)
    assert b"argv[2] = fits" in got.stdout
    got = _both(karn, native, same, probe, "txtbsy")
    assert got.stdout.endswith(b"exec'd after close\n")


def test_exec_scripts(build, karn, native, same, scripts):
    """`#!` with an interpreter and one argument (the rest of the line, spaces inside
    kept), nested interpreters up to Linux's depth, ELOOP past it."""
    probe = build("exec_probe")
    first = _script(scripts / "first", '#!/bin/busybox sh\necho "0=$0 args=$*"\n')
    _script(scripts / "spaced", '#!  /bin/busybox   sh  \t\necho "spaced $0 $1"\n')
    _script(scripts / "arg-with-spaces", f"#!{probe} show  a b\t c \n")
    _script(scripts / "no-newline", f"#!{probe} show")
    previous = first
    for depth in range(1, 7):  # script depth N runs script N-1 ... first: 6 levels fail
        previous = _script(scripts / f"nested{depth}", f"#!{previous}\n")
    for name, args in (("first", ["a", "b c"]), ("spaced", ["x"]), ("arg-with-spaces", ["y"]),
                       ("no-newline", []), ("nested4", ["n"]), ("nested5", []),
                       ("nested6", [])):
        _both(karn, native, same, probe, "run", scripts / name, *args)
    got = karn("--root", "/", probe, "run", scripts / "nested6")
    assert got.stdout == b"execv nested6: ELOOP\n"


@pytest.mark.parametrize("root", ["--root /", "collected"])
def test_a_script_as_the_program_runs_its_interpreter(build, karn, native, same, scripts,
                                                      root):
    """`karn run SCRIPT ARGS` runs the script's `#!` interpreter as execve would (argv
    [interpreter, its argument, script, ARGS], nested levels too), with the guest's root
    or with the interpreter collected from the host; a `#!` naming no program is a one-line
    error. Before: "not an ELF executable"."""
    probe = build("exec_probe")
    sh = _script(scripts / "sh-script", '#!/bin/busybox sh\necho "0=$0 args=$*"; exit 3\n')
    spaced = _script(scripts / "arg-with-spaces", f"#!{probe} show  a b\t c \n")
    nested = _script(scripts / "nested", f"#!{spaced}\n")
    opts = ["--root", "/"] if root == "--root /" else []
    for script, args in ((sh, ["a", "b c"]), (spaced, ["y"]), (nested, ["n"])):
        expected = native(script, *args)
        same(expected, karn(*opts, script, *args), f"{script.name} as the program ({root})")
    bad = _script(scripts / "bad", "#!/nonexistent/interpreter\n")
    got = karn(*opts, bad)
    err = got.stderr.decode()
    assert got.returncode == 127 and err.count("\n") == 1 and "/nonexistent/interpreter" in err, \
        err


def test_busybox_sh_exec(karn, native, same):
    cmd = "echo before; exec /bin/busybox echo hi; echo never"
    same(native(BUSYBOX, "sh", "-c", cmd), karn(BUSYBOX, "sh", "-c", cmd), "sh -c exec")
    script = "exec /bin/busybox sh -c 'exit 7'"
    expected = native(BUSYBOX, "sh", "-c", script)
    got = karn(BUSYBOX, "sh", "-c", script)
    assert got.returncode == expected.returncode == 7


def test_python_os_execv(karn, native, same):
    """Debian's dynamically linked python3 replaces itself with busybox, then with
    another python3 (PT_INTERP, the libraries, the vDSO of the new image)."""
    code = ("import os, sys; print('python', flush=True); "
            "os.execv(sys.executable, [sys.executable, '-c', "
            "'import os, time; print(os.readlink(\"/proc/self/exe\"), time.time() > 1e9, "
            "os.getpid() == os.getpid(), flush=True); "
            "os.execv(\"/bin/busybox\", [\"echo\", \"and busybox\"])'])")
    expected = native(PYTHON, "-c", code)
    got = karn("--root", "/", PYTHON, "-c", code, timeout=120)
    same(expected, got, "os.execv")
    assert got.stdout.endswith(b"and busybox\n")


def test_crash_after_exec_names_the_new_program(build, karn, native):
    probe = build("exec_probe")
    crasher = build("crash_segv")
    expected = native(probe, "run", crasher)
    got = karn("--root", "/", probe, "run", crasher)
    assert expected.returncode < 0 and got.returncode == 128 - expected.returncode
    assert f"karn: {crasher} crashed: SIGSEGV".encode() in got.stderr
    assert b"crash_null_write" in got.stderr  # symbolized from the new program


def test_exec_failure_past_the_point_of_no_return(build, karn, native):
    """A program that passes every check but cannot be loaded (128 MiB of data under
    --memory 64m): the old image is gone, so the process dies of SIGSEGV, as Linux kills
    a process whose new image fails to load."""
    probe = build("exec_probe")
    big = build("exec_big_bss")
    assert native(big).returncode == 42
    got = karn("-m", "64m", "--root", "/", probe, "run", big)
    assert got.returncode == 128 + 11, got.stderr
    assert b"killed with SIGSEGV" in got.stderr


def test_go_syscall_exec(karn, native, same):
    exe = go_build(PROGRAMS / "go" / "exec_self.go", "go-exec_self")
    got = _both(karn, native, same, exe)
    assert got.stdout.endswith(b"exec'd: [self second third arg] yes\n")
