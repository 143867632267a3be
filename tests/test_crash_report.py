"""Full crash reports: disassembly, a symbolized backtrace across a shared library and
the program, source lines from DWARF, and the last syscalls."""

from __future__ import annotations

import re

import pytest

BUSYBOX = "/bin/busybox"


def backtrace(err: str) -> list[str]:
    lines = err.splitlines()
    start = lines.index("  backtrace:") + 1
    out = []
    for line in lines[start:]:
        if not re.match(r"\s+#\d+", line):
            break
        out.append(line)
    return out


def test_null_write_inside_libc_names_the_call_and_main(build, karn, native):
    exe = build("debug_lib_crash", "dynamic")
    assert native(exe).returncode == -11
    got = karn("--crash-history", exe)
    err = got.stderr.decode()
    assert got.returncode == 139, err
    assert "Traceback" not in err
    assert "fault address: 0x0 (write)" in err
    frames = backtrace(err)
    # frame 0: inside libc, named by what main called
    assert "memset" in frames[0] and "libc.so.6" in frames[0], frames
    # frame 1: the calling line in main, with its source line from DWARF
    assert re.search(r"#1 .* in main\+0x[0-9a-f]+ .*debug_lib_crash\.c:13$", frames[1]), frames
    assert any("__libc_start_main" in f for f in frames[2:]), frames
    # the faulting instruction, disassembled: a store through rdi (rep stosb / vmovdqu ...)
    insn = next(line for line in err.splitlines() if line.strip().startswith("=>"))
    assert re.search(r"=> 0x[0-9a-f]+: \w+", insn), insn
    # the last syscalls, newest last: the program's printf
    history = err.split("last 20 syscalls", 1)[1].splitlines()[1:]
    assert len(history) == 20, history
    assert history[-1].strip() == '[1] write(1, "writing 4097 bytes\\n", 19) = 19', history


def test_static_crash_backtrace_reaches_main(build, karn):
    exe = build("crash_segv", "static")
    got = karn(exe)
    err = got.stderr.decode()
    assert got.returncode == 139
    frames = backtrace(err)
    assert "crash_null_write" in frames[0], frames
    assert re.search(r"in main\+0x[0-9a-f]+ .*crash_segv\.c:\d+$", frames[1]), frames
    assert "not recorded" in err  # no history without a debug option


@pytest.mark.parametrize("variant", ["static", "dynamic", "musl-static"])
def test_disassembly_shows_the_faulting_instruction(build, karn, variant):
    exe = build("crash_ill", variant)
    err = karn(exe).stderr.decode()
    insn = next(line for line in err.splitlines() if line.strip().startswith("=>"))
    assert "ud2" in insn, err


def test_a_normal_run_imports_no_debug_modules(karn):
    """Start-up: capstone, pyelftools and karn's debug modules load only when needed."""
    got = karn(BUSYBOX, "true", extra_env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert got.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in got.stderr.decode().splitlines()}
    # A run still going after 50 ms registers as an instance (on a loaded host, even
    # `true`): that serves the control socket, karn.debug.control, and nothing heavier.
    late = {"karn.debug", "karn.debug.control"}
    heavy = {m for m in imported if m.split(".")[0] in ("capstone", "elftools")
             or m.startswith("karn.debug") and m not in late}
    assert not heavy, heavy
    assert "karn.run.runner" in imported  # the probe works
