"""Symbolizer against a real program compiled with -g, checked with nm."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from karn.debug.symbols import LoadedObject, Symbolizer

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or shutil.which("nm") is None, reason="gcc/nm not installed"
)

SOURCE = """\
#include <stdio.h>

__attribute__((noinline)) int crunch(int x)
{
    int acc = 0;
    for (int i = 0; i < x; i++)
        acc += i * x;
    return acc;
}

static __attribute__((noinline)) int helper(int y)
{
    return crunch(y) + 1;
}

int main(int argc, char **argv)
{
    (void)argv;
    printf("%d\\n", helper(argc));
    return 0;
}
"""


def _build(tmp_path: Path, *flags: str) -> Path:
    src = tmp_path / "prog.c"
    src.write_text(SOURCE)
    exe = tmp_path / "prog"
    subprocess.run(["gcc", "-g", "-O0", "-o", str(exe), str(src), *flags], check=True)
    return exe


def _nm(exe: Path, name: str) -> int:
    out = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise AssertionError(f"{name} not in nm output")


@pytest.mark.parametrize(("flags", "bias"), [(("-no-pie",), 0), (("-pie",), 0x555555554000)])
def test_symbolize_and_addr2line(tmp_path: Path, flags: tuple[str, ...], bias: int) -> None:
    exe = _build(tmp_path, *flags)
    sym = Symbolizer([(str(exe), bias)])
    for func in ("crunch", "helper", "main"):
        addr = _nm(exe, func) + bias
        assert sym.symbolize(addr + 3) == f"{func}+0x3 ({exe})"
        hit = sym.addr2line(addr + 3)
        assert hit is not None
        path, line = hit
        assert os.path.basename(path) == "prog.c"
        assert os.path.isabs(path)
        first = next(i for i, t in enumerate(SOURCE.splitlines(), 1) if f" {func}(" in t)
        assert first <= line <= first + 4, (func, line)  # the opening lines of the function


def test_unmapped_and_named_objects(tmp_path: Path) -> None:
    exe = _build(tmp_path, "-no-pie")
    sym = Symbolizer([LoadedObject(str(exe), 0, name="/guest/prog")])
    addr = _nm(exe, "crunch")
    assert sym.symbolize(addr) == "crunch+0x0 (/guest/prog)"
    assert sym.symbolize(0x10) is None
    assert sym.addr2line(0x10) is None


def test_stripped_library_uses_dynsym() -> None:
    libc = "/lib/x86_64-linux-gnu/libc.so.6"
    if not os.path.exists(libc):
        pytest.skip("no glibc at the Debian multiarch path")
    out = subprocess.run(
        ["nm", "-D", "--defined-only", libc], capture_output=True, text=True, check=True
    ).stdout
    addr = None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].split("@")[0] == "getpid" and parts[1] in "TtWi":
            addr = int(parts[0], 16)
    assert addr is not None
    bias = 0x7F0000000000
    sym = Symbolizer([(libc, bias)])
    result = sym.symbolize(bias + addr + 1)
    assert result is not None and result.endswith(f"+0x1 ({libc})")
    assert result.split("+")[0] in ("getpid", "__getpid")
    assert sym.addr2line(bias + addr) is None  # no DWARF in the distribution's libc


def test_nothing_parsed_until_first_use(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from karn.debug.symbols import Symbolizer\n"
        f"s = Symbolizer([({str(_build(tmp_path))!r}, 0)])\n"
        "assert 'elftools' not in sys.modules, 'pyelftools imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
