"""--core-dump DIR: gdb opens the core with the program and shows the crash."""

from __future__ import annotations

import re
import shutil
import subprocess


def test_gdb_reads_a_karn_core(build, karn, build_dir):
    exe = build("debug_lib_crash", "dynamic")
    cores = build_dir / "cores"
    cores.mkdir(exist_ok=True)
    got = karn("--core-dump", cores, exe)
    err = got.stderr.decode()
    assert got.returncode == 139, err
    files = list(cores.glob("core.*"))
    assert len(files) == 1, err
    assert f"core dumped to {files[0]}" in err
    gdb = subprocess.run(
        [shutil.which("gdb") or "gdb", "-batch", "-nx", "-ex", "bt", "-ex", "info threads",
         "-ex", "print length", str(exe), str(files[0])],
        capture_output=True, text=True, timeout=120)
    out = gdb.stdout + gdb.stderr
    assert "Program terminated with signal SIGSEGV" in out, out
    # The same frames as karn's report: memset in libc, called from main at line 13.
    assert re.search(r"#0\s+.*memset.*", out), out
    assert re.search(r"#1\s+0x[0-9a-f]+ in main \(.*debug_lib_crash\.c:13", out), out
    assert re.search(r"^\*\s+1\s+Thread .*\(LWP 1\)", out, re.M), out
    report_frames = re.findall(r"#1\s+(0x[0-9a-f]+) in main", err)
    gdb_frames = re.findall(r"#1\s+(0x[0-9a-f]+) in main", out)
    assert int(report_frames[0], 16) == int(gdb_frames[0], 16)


def test_core_dump_dir_must_exist(karn):
    got = karn("--core-dump", "/no/such/dir", "/bin/busybox", "true")
    assert got.returncode == 125
    assert got.stderr.decode() == "karn: --core-dump: /no/such/dir is not a directory\n"


def test_no_core_without_a_crash(build, karn, build_dir):
    cores = build_dir / "cores-none"
    cores.mkdir(exist_ok=True)
    got = karn("--core-dump", cores, build("exit42", "static"))
    assert got.returncode == 42
    assert not list(cores.iterdir())


def test_abort_gets_a_report_and_a_core(build, karn, build_dir):
    """abort() is a signal the program sends itself: report and core show where."""
    exe = build("abort_check", "dynamic")
    cores = build_dir / "cores-abort"
    cores.mkdir(exist_ok=True)
    got = karn("--core-dump", cores, exe)
    err = got.stderr.decode()
    assert got.returncode == 134, err
    assert "crashed: SIGABRT (abort() or raise() in the program)" in err
    report = re.findall(r"#\d+\s+0x[0-9a-f]+ in (\w+)\+0x[0-9a-f]+ .*?(?: at .*:(\d+))?$",
                        err, re.M)
    names = [name for name, _ in report]
    assert names.index("abort") < names.index("check_positive") < names.index("main"), err
    assert dict(report)["check_positive"] == "9" and dict(report)["main"] == "16", report
    files = list(cores.glob("core.*"))
    assert len(files) == 1, err
    gdb = subprocess.run([shutil.which("gdb") or "gdb", "-batch", "-nx", "-ex", "bt",
                          str(exe), str(files[0])], capture_output=True, text=True, timeout=120)
    out = gdb.stdout + gdb.stderr
    assert "Program terminated with signal SIGABRT" in out, out
    assert re.search(r"in check_positive \(.*abort_check\.c:9", out), out
    assert re.search(r"in main \(.*abort_check\.c:16", out), out
