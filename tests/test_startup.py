"""Start-up stays lean without timing anything: `karn run` of a static hello imports none
of the modules a run like it does not need (image building and registries, the other
commands, debugging, the Python socket module for a guest that opens no socket, ...).
Each of them cost milliseconds of every start-up once; this keeps laziness from rotting.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import compile_c

REPO = Path(__file__).resolve().parent.parent

# Never imported by `karn run` of a static hello (no image, no --trace, no socket).
NOT_NEEDED = (
    # the other commands and images
    "karn.cli.images", "karn.cli.instances", "karn.cli.policy", "karn.cli.system",
    "karn.system", "karn.run.image", "karn.image.registry", "karn.image.build",
    "karn.image.store", "karn.image.layer", "karn.image.oci", "karn.image.launch",
    "karn.image.auth", "karn.image.karnfile",
    # debugging (--trace, --gdb, core dumps, crash reports)
    "karn.debug.options", "karn.debug.session", "karn.debug.tracer", "karn.debug.gdbstub",
    "karn.debug.crash", "karn.debug.coredump", "karn.debug.disasm", "karn.debug.symbols",
    # -d and --name (a foreground run registers late: see LATE below)
    "karn.instance.detach",
    # the fast transport (the default): made once a process is warm (platform/warmup.py)
    "karn.platform.fastcall",
    # what only some guests use
    "karn.kernel.net.inet", "karn.kernel.net.unix",
    "karn.kernel.net.base", "karn.kernel.net.options", "karn.kernel.net.addr",
    "karn.kernel.fs.procfiles", "karn.kernel.syscall_groups",
    # the tmpfs mounts' move to the host at the first fork
    "karn.kernel.fs.sharedtmp",
    # C modules loaded at their first use: openat2 of a path of two names or more, a
    # process's first timer
    "karn.kernel.fs._hostcalls", "_heapq",
    # /dev (a mount made on first lookup), its ptys, /proc/sys
    "karn.kernel.fs.devfs", "karn.kernel.fs.pty", "karn.kernel.fs.procsys",
    # the syscall areas whose calls a static hello never makes (each loads on its first call)
    "karn.kernel.sys_time", "karn.kernel.sys_signal", "karn.kernel.sys_thread",
    "karn.kernel.sys_poll", "karn.kernel.sys_timer", "karn.kernel.sys_net",
    "karn.kernel.sys_timerfd", "karn.kernel.sys_wait", "karn.kernel.exec",
    "karn.kernel.fs.sys_names", "karn.kernel.fs.sys_xattr", "karn.kernel.fs.memfd",
    "karn.kernel.fs.sys_splice",
    # typing (and the re, enum and contextlib it imports): karn's modules take its names
    # from karn/hints.py; re only where a pattern is matched (a runtime's name, argparse)
    "typing", "re", "enum", "glob", "fnmatch",
    # contextlib: the few context managers on a run's path are classes of their own
    "contextlib",
    # importlib's package: optional C modules come through __import__ (not warnings, which
    # threading imports from Python 3.13 on)
    "importlib",
    # the standard library's slow or unneeded modules
    "socket", "selectors", "ssl", "uuid", "platform", "dataclasses", "inspect",
    "subprocess", "tarfile", "json", "hashlib", "http.client", "urllib.request",
    "asyncio", "logging",
    # tempfile and its shutil, random, bz2, lzma: karn/kernel/hosttmp.py does the little a
    # run needs; ipaddress: imported where an address is parsed (kernel/net/policy.py)
    "tempfile", "shutil", "random", "bz2", "lzma", "ipaddress",
    # their C modules do (_signal, _heapq, _bisect): signal makes enums of its names at import
    "signal", "heapq", "bisect",
    # the terminal ioctls are numbers (kernel/tty.py, fs/file.py, sandbox/allowlist.py)
    "termios",
    # copy: for a forked monitor's limit watch only
    "copy",
) + (
    # argparse's words are not translated where no catalogue can exist (karn/cli/main.py);
    # gettext's search for one imports locale (where a locale directory exists, it searches)
    () if os.path.isdir(os.path.join(sys.base_prefix, "share", "locale")) else ("locale",)
)
# A foreground run that lasts more than 50 ms registers for `karn ps` (runner.py): what
# that imports is needed then, and on a loaded machine even hello can last that long.
# (its control socket's module is imported from a function, so importtime shows it as a
# top-level import of its own).
LATE = ("karn.instance.monitor", "karn.instance.options", "karn.debug.control")


def imports_by_top_level(stderr: str) -> dict[str, str]:
    """Each module -X importtime reports, with the top-level import that brought it in
    (importtime prints a module's imports, indented, before the module itself)."""
    pending: list[str] = []
    owner: dict[str, str] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        field = line.split("|", 2)[2]
        name = field.strip()
        pending.append(name)
        if field[1:] == name:  # no indentation beyond the separator's space: top level
            for module in pending:
                owner[module] = name
            pending = []
    return owner


def importtime(*args: str) -> subprocess.CompletedProcess[str]:
    """Without site (-S): its .pth files may import what karn must not (an editable
    install's finder imports pathlib and tempfile), and hide it from the check."""
    return subprocess.run([sys.executable, "-S", "-X", "importtime", *args],
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=120, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


def test_run_hello_imports_only_what_it_needs() -> None:
    hello = compile_c(REPO / "examples" / "hello.c", "hello-example-static", "gcc",
                      ("-static", "-O1"))
    proc = importtime(str(REPO / "bin/karn"), "run", str(hello))  # the command (not -m: runpy)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Hello from hello" in proc.stdout
    owner = imports_by_top_level(proc.stderr)
    assert "karn.run.builder" in owner, "the importtime report was not parsed"
    python_itself = imports_by_top_level(importtime("-c", "pass").stderr)  # site, .pth files
    # Registering imports on the main thread while the guest's first calls import their
    # areas on another: importtime's lines interleave, so what registering brought in can
    # be shown under an area. Where the run registered, what registering imports (measured
    # alone) is needed, whichever import it is shown under.
    registered = any(module in owner for module in LATE)
    late = set(imports_by_top_level(importtime("-c", "import " + ", ".join(LATE)).stderr)) \
        if registered else set()
    unneeded = sorted(
        f"{module} (through {owner[module]})"
        for module in owner
        if any(module == bad or module.startswith(bad + ".") for bad in NOT_NEEDED)
        and owner[module] not in LATE and module not in python_itself and module not in late
    )
    assert not unneeded, "karn run hello imported: " + ", ".join(unneeded)


def test_a_host_fork_with_threads_about_loads_what_the_filesystem_defers() -> None:
    """What the filesystem defers (/dev, /proc/sys) loads on first use; a thread halfway
    through loading it when another forks would leave the child waiting forever for its
    import lock, so such a fork loads it first (a fork with no other thread has nothing
    to wait for, and loads none). Syscall areas are imported under a lock the fork takes
    instead (tests/test_fork.py): no fork loads them."""
    code = textwrap.dedent("""
        import os, sys, threading
        from karn.kernel import syscalls
        from karn.kernel.fs import context

        def fork_and_list_unloaded():
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
            modules = ["karn.kernel." + a for a in syscalls.AREA_CALLS]
            modules += context.IMPORTED_ON_FIRST_USE
            return [m for m in modules if m not in sys.modules]

        print(fork_and_list_unloaded())
        hold = threading.Event()
        threading.Thread(target=hold.wait).start()
        print(fork_and_list_unloaded())
        hold.set()
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    alone, with_thread = proc.stdout.splitlines()
    assert "karn.kernel.sys_net" in alone and "karn.kernel.fs.devfs" in alone
    assert "karn.kernel.sys_net" in with_thread
    assert "devfs" not in with_thread and "procsys" not in with_thread, with_thread


def test_importtime_report_is_read_as_a_tree() -> None:
    report = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:        10 |         10 |     select",
        "import time:        20 |         30 |   karn.kernel.blocking",
        "import time:        40 |         70 | karn.kernel.process",
        "import time:         5 |          5 | karn.run.runner",
    ])
    assert imports_by_top_level(report) == {
        "select": "karn.kernel.process",
        "karn.kernel.blocking": "karn.kernel.process",
        "karn.kernel.process": "karn.kernel.process",
        "karn.run.runner": "karn.run.runner",
    }


def karn_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "karn", "run", *args], capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=120, text=True)


@pytest.mark.parametrize("link", ["static", "dynamic"])
def test_a_rebuilt_program_runs_as_rebuilt(tmp_path: Path, link: str) -> None:
    """Nothing collected for a program may outlive the program (a guard for any cache of
    collected manifests): rebuilt at the same path between two runs, with a size of its
    own, the second run runs the new build."""
    program = tmp_path / "prog"
    outputs = []
    for word in ("first", "second build"):
        source = tmp_path / "prog.c"
        source.write_text(f'#include <stdio.h>\nint main(void) {{ puts("{word}"); return 0; }}\n')
        flags = ["-static"] if link == "static" else []
        subprocess.run(["gcc", "-O1", *flags, "-o", str(program), str(source)], check=True)
        proc = karn_run(str(program))
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    assert outputs == ["first\n", "second build\n"]


def test_a_run_ends_with_its_exit_status_and_held_log_lines(tmp_path: Path) -> None:
    """A run leaves without the interpreter's shutdown (karn/cli/main.py _leave), yet its
    exit handlers run: karn's warning, held while the guest's stderr line was unfinished,
    comes out after the guest's text, and the guest's exit status is karn's."""
    source = tmp_path / "partial.c"
    source.write_text(textwrap.dedent("""
        #include <unistd.h>
        #include <sys/syscall.h>
        int main(void) {
            write(2, "no newline yet", 14);
            syscall(1000);  /* no such call: karn warns, after the guest's line ends */
            return 7;
        }
    """))
    program = tmp_path / "partial"
    subprocess.run(["gcc", "-O1", "-static", "-o", str(program), str(source)], check=True)
    proc = karn_run(str(program))
    assert proc.returncode == 7, proc.stderr
    assert proc.stderr.startswith("no newline yet"), proc.stderr
    assert "unimplemented syscall ? (1000)" in proc.stderr.split("no newline yet", 1)[1]
