"""Programs under the host's /tmp (and /dev/shm) keep their paths in the guest, whose /tmp
is its own tmpfs: the collected files below it are copied into that tmpfs, so argv[0],
/proc/self/exe and $ORIGIN libraries are the host's, and the guest's changes stay its own.

The programs are compiled at test time into a directory under the host's real /tmp (the
cached builds of the other tests live in /var/tmp, outside it)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BUSYBOX, karn_run, native_run
from helpers import karn_in
from test_errors import assert_one_error_line

# Prints what names it (argv[0], /proc/self/exe), what its $ORIGIN library says, and the
# data file beside it (its own path + ".txt"), read through the path the kernel reports.
PROGRAM_C = r"""
#include <stdio.h>
#include <unistd.h>
const char *beside(void);
int main(int argc, char **argv) {
    char exe[4096] = {0}, path[4200], line[128];
    if (readlink("/proc/self/exe", exe, sizeof exe - 1) < 0) return 2;
    printf("argv0 %s\nexe %s\nlibrary %s\n", argv[0], exe, beside());
    snprintf(path, sizeof path, "%s.txt", exe);
    FILE *f = fopen(path, "r");
    printf("data %s", f && fgets(line, sizeof line, f) ? line : "(none)\n");
    return 0;
}
"""
LIBRARY_C = 'const char *beside(void) { return "from beside the program"; }\n'
STATIC_C = 'const char *beside(void) { return "linked in"; }\n'


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compile(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True)


@pytest.fixture(scope="module")
def tmpdir_programs() -> Iterator[Path]:
    """/tmp/karn-tmpprog-XXX: `dyn` (dynamic, its library libbeside.so found by
    $ORIGIN), `st` (static), a copy of busybox (static) and each program's data file."""
    top = Path(tempfile.mkdtemp(prefix="karn-tmpprog-", dir="/tmp"))
    try:
        (top / "prog.c").write_text(PROGRAM_C)
        (top / "lib.c").write_text(LIBRARY_C)
        (top / "static.c").write_text(STATIC_C)
        _compile("gcc", "-shared", "-fPIC", "-o", top / "libbeside.so", top / "lib.c")
        _compile("gcc", "-o", top / "dyn", top / "prog.c", f"-L{top}", "-lbeside",
                 "-Wl,-rpath,$ORIGIN")  # fmt: skip
        _compile("gcc", "-static", "-o", top / "st", top / "prog.c", top / "static.c")
        shutil.copy2(BUSYBOX, top / "busybox")
        for name in ("dyn", "st"):
            (top / f"{name}.txt").write_text(f"the data of {name}\n")
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def _data_volume(program: Path) -> tuple[str, str]:
    """The data file beside the program, shown at its own path (read-only)."""
    return "-v", f"{program}.txt:{program}.txt:ro"


@pytest.mark.parametrize("name", ["dyn", "st"])
def test_tmp_program_runs_at_its_own_path(tmpdir_programs: Path, name: str) -> None:
    program = tmpdir_programs / name
    got = karn_run(*_data_volume(program), program)
    want = native_run(program)
    assert got.returncode == want.returncode == 0, got.stderr.decode()
    assert got.stdout == want.stdout
    assert f"exe {program}\n".encode() in got.stdout  # not moved anywhere


def test_guest_changes_to_tmp_files_stay_in_the_guest(tmpdir_programs: Path) -> None:
    """The guest removes and rewrites its own program file and adds one beside it: its
    /tmp shows that, the host's files are as they were."""
    d = tmpdir_programs
    before = {p.name: _sha(p) for p in d.iterdir()}
    script = (f"{d}/busybox rm {d}/busybox && echo changed > {d}/busybox && "
              f"read line < {d}/busybox && echo $line && echo new > {d}/made && "
              f"for f in {d}/*; do echo ${{f##*/}}; done")  # fmt: skip
    got = karn_run(d / "busybox", "sh", "-c", script)
    assert got.returncode == 0, got.stderr.decode()
    # only what was collected (the program) and what the guest made are there
    assert got.stdout.decode().splitlines() == ["changed", "busybox", "made"]
    assert {p.name: _sha(p) for p in d.iterdir()} == before


def test_forked_processes_see_the_tmp_files(tmpdir_programs: Path) -> None:
    """The shell forks (its /tmp becomes the run's shared host copy) and its children
    exec the program from there, at its path, with the data file beside it."""
    d = tmpdir_programs
    script = (f"{d}/busybox readlink /proc/self/exe; {d}/busybox cat {d}/st.txt; "
              f"{d}/busybox sh -c 'echo $0' {d}/st")  # fmt: skip
    got = karn_run(*_data_volume(d / "st"), d / "busybox", "sh", "-c", script)
    want = native_run(d / "busybox", "sh", "-c", script)
    assert got.returncode == want.returncode == 0, got.stderr.decode()
    assert got.stdout == want.stdout
    assert got.stdout.startswith(f"{d}/busybox\n".encode())


def test_volume_at_tmp(tmpdir_programs: Path, tmp_path: Path) -> None:
    """`-v /tmp:/tmp` shows the program itself; a volume showing other files there is
    refused, as it would hide the program."""
    program = tmpdir_programs / "dyn"
    got = karn_run("-v", "/tmp:/tmp", program)
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout == native_run(program).stdout
    other = tmp_path / "other"
    other.mkdir()
    refused = karn_run("-v", f"{other}:/tmp", program)
    assert_one_error_line(refused, None, str(program), "hides it")
    assert refused.stdout == b""


def test_tmp_files_count_against_the_tmpfs_size(tmpdir_programs: Path) -> None:
    program = tmpdir_programs / "st"  # ~800 KB of static binary
    refused = karn_run("--tmpfs-size", "64k", program)
    assert_one_error_line(refused, None, str(program), "--tmpfs-size")


def test_dev_shm_program_keeps_its_path(tmpdir_programs: Path) -> None:
    top = Path(tempfile.mkdtemp(prefix="karn-tmpprog-", dir="/dev/shm"))
    try:
        program = top / "st"
        shutil.copy2(tmpdir_programs / "st", program)
        got = karn_run(program)
        assert got.returncode == 0, got.stderr.decode()
        assert got.stdout == native_run(program).stdout
        assert f"argv0 {program}\nexe {program}\n".encode() in got.stdout
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_image_of_a_tmp_program_keeps_its_entrypoint(tmpdir_programs: Path, home: Path,
                                                     tmp_path: Path) -> None:
    """`karn build` keeps the program's /tmp path (and its library's, and a data file
    put there); a run copies the image's /tmp into the guest's tmpfs."""
    program = tmpdir_programs / "dyn"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Karnfile").write_text(f'name = "tmpprog:1"\nprogram = "{program}"\n'
                                  f'[[files]]\nsrc = "{program}.txt"\ndst = "{program}.txt"\n')
    built = karn_in(home, "build", ctx)
    assert built.returncode == 0, built.stderr.decode()
    (info,) = json.loads(karn_in(home, "inspect", "tmpprog:1").stdout)
    assert info["Config"]["Entrypoint"] == [str(program)]
    got = karn_in(home, "run", "tmpprog:1")
    assert got.returncode == 0, got.stderr.decode()
    assert got.stdout == native_run(program).stdout  # its library and data at their paths
