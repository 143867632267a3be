"""collect_program / inspect_elf against real binaries built here and compared with ldd."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import BUSYBOX

from karn.errors import ImageError
from karn.image.collect import collect_program
from karn.image.elfinfo import ET_DYN, ET_EXEC, inspect_elf

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")

MATH_C = r"""
#include <math.h>
#include <stdio.h>
int main(int argc, char **argv) { printf("%f\n", cos((double)argc)); return 0; }
"""
HELLO_C = r"""
#include <stdio.h>
int main(void) { puts("hello"); return 0; }
"""


def _cc(tmp_path: Path, source: str, out: str, *flags: str, compiler: str = "gcc") -> Path:
    src = tmp_path / f"{out}.c"
    src.write_text(source)
    exe = tmp_path / out
    subprocess.run([compiler, "-O1", "-o", str(exe), str(src), *flags], check=True)
    return exe


def _ldd(path: str) -> tuple[str | None, dict[str, str]]:
    """(interpreter, {soname: resolved path}) as the real ldd reports them."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    interp, libs = None, {}
    for line in out.splitlines():
        line = line.strip()
        if m := re.match(r"(\S+) => (/\S+) \(0x", line):
            libs[m[1]] = m[2]
        elif m := re.match(r"(/\S+) \(0x", line):
            interp = m[1]
    return interp, libs


def _guest_file(manifest, path: str) -> str | None:
    """The host file the guest reaches at path, following the manifest's symlinks."""
    pending = [c for c in path.split("/") if c]
    current = ""
    for _ in range(100):
        if not pending:
            return manifest.files.get(current)
        component = pending.pop(0)
        if component == "..":
            current = current.rsplit("/", 1)[0]
            continue
        candidate = f"{current}/{component}"
        target = manifest.symlinks.get(candidate)
        if target is None:
            current = candidate
            continue
        current = "" if target.startswith("/") else current
        pending[:0] = [c for c in target.split("/") if c]
    raise AssertionError(f"symlink loop at {path}")


def _check_against_ldd(path: str) -> None:
    manifest = collect_program(path)
    interp, libs = _ldd(path)
    assert manifest.interpreter == interp
    assert _guest_file(manifest, interp) == os.path.realpath(interp)
    for soname, resolved in libs.items():
        if soname == os.path.basename(interp):
            continue  # ldd lists the interpreter again for libraries that need it
        assert _guest_file(manifest, resolved) == os.path.realpath(resolved), (
            f"{soname} => {resolved} missing"
        )
    assert set(manifest.libraries) == {p for s, p in libs.items() if s != os.path.basename(interp)}
    assert _guest_file(manifest, manifest.entry) == os.path.realpath(path)
    for host in manifest.files.values():
        assert os.path.isfile(host) and not os.path.islink(host)


@needs_gcc
def test_dynamic_with_libm_matches_ldd(tmp_path: Path) -> None:
    exe = _cc(tmp_path, MATH_C, "math", "-lm")
    manifest = collect_program(str(exe))
    assert manifest.entry == str(exe)
    assert any(os.path.basename(p) == "libm.so.6" for p in manifest.libraries)
    assert any(os.path.basename(p) == "libc.so.6" for p in manifest.libraries)
    if os.path.exists("/etc/ld.so.cache"):
        assert "/etc/ld.so.cache" in manifest.files
    _check_against_ldd(str(exe))


def test_python3_matches_ldd() -> None:
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("/usr/bin/python3 is not installed")
    manifest = collect_program("/usr/bin/python3")
    assert manifest.entry == "/usr/bin/python3"  # its host path, not the realpath
    _check_against_ldd("/usr/bin/python3")


def test_bare_name_searches_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent:/usr/bin:/bin")
    assert collect_program("ls").entry == "/usr/bin/ls"
    with pytest.raises(ImageError, match=r"^no-such-program-xyz: command not found"):
        collect_program("no-such-program-xyz")


@needs_gcc
def test_relative_path_resolves_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exe = _cc(tmp_path, HELLO_C, "hello")
    monkeypatch.chdir(tmp_path)
    assert collect_program("./hello").entry == str(exe)


@needs_gcc
@pytest.mark.parametrize(("flags", "e_type"), [(("-static",), ET_EXEC), (("-static-pie",), ET_DYN)])
def test_static_programs_are_alone(tmp_path: Path, flags: tuple[str, ...], e_type: int) -> None:
    exe = _cc(tmp_path, HELLO_C, "static", *flags)
    info = inspect_elf(exe)
    assert info.e_type == e_type and info.interpreter is None and info.needed == []
    manifest = collect_program(str(exe))
    assert manifest.files == {str(exe): str(exe)}
    assert manifest.interpreter is None and manifest.libraries == []


@needs_gcc
def test_rpath_origin(tmp_path: Path) -> None:
    libdir = tmp_path / "lib"
    libdir.mkdir()
    (tmp_path / "f.c").write_text("int f(void) { return 42; }\n")
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(libdir / "libf.so"), str(tmp_path / "f.c")],
        check=True,
    )
    main = "int f(void); int main(void) { return f() == 42 ? 0 : 1; }\n"
    for dtags in ("--enable-new-dtags", "--disable-new-dtags"):  # RUNPATH, then RPATH
        exe = _cc(
            tmp_path, main, "usef", f"-L{libdir}", "-lf", "-Wl,-rpath,$ORIGIN/lib", f"-Wl,{dtags}"
        )
        manifest = collect_program(str(exe))
        assert str(libdir / "libf.so") in manifest.libraries
        _check_against_ldd(str(exe))


@pytest.mark.skipif(shutil.which("musl-gcc") is None, reason="musl-gcc (musl-tools) not installed")
def test_musl_dynamic(tmp_path: Path) -> None:
    exe = _cc(tmp_path, MATH_C, "musl", "-lm", compiler="musl-gcc")
    manifest = collect_program(str(exe))
    assert manifest.interpreter == "/lib/ld-musl-x86_64.so.1"
    assert _guest_file(manifest, "/lib/ld-musl-x86_64.so.1") == os.path.realpath(
        "/lib/ld-musl-x86_64.so.1"
    )
    assert manifest.libraries == []  # libc.so and libm are the interpreter itself
    assert "/etc/ld.so.cache" not in manifest.files


@needs_gcc
def test_missing_interpreter(tmp_path: Path) -> None:
    exe = _cc(tmp_path, HELLO_C, "badinterp", "-Wl,--dynamic-linker=/nonexistent/ld.so")
    assert inspect_elf(exe).interpreter == "/nonexistent/ld.so"
    with pytest.raises(ImageError, match=r"interpreter /nonexistent/ld.so not found$"):
        collect_program(str(exe))


@needs_gcc
def test_missing_library(tmp_path: Path) -> None:
    libdir = tmp_path / "lib"
    libdir.mkdir()
    (tmp_path / "g.c").write_text("int g(void) { return 1; }\n")
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(libdir / "libg.so"), str(tmp_path / "g.c")],
        check=True,
    )
    main = "int g(void); int main(void) { return g(); }\n"
    exe = _cc(tmp_path, main, "useg", f"-L{libdir}", "-lg")  # no rpath: not findable
    with pytest.raises(ImageError, match=r"library libg.so not found"):
        collect_program(str(exe))


def _elf_header(klass: int, machine: int, e_type: int = 2) -> bytes:
    ident = b"\x7fELF" + bytes([klass, 1, 1, 0]) + bytes(8)
    if klass == 1:
        return ident + struct.pack(
            "<HHIIIIIHHHHHH", e_type, machine, 1, 0, 52, 0, 0, 52, 32, 0, 40, 0, 0
        )
    return ident + struct.pack(
        "<HHIQQQIHHHHHH", e_type, machine, 1, 0, 64, 0, 0, 64, 56, 0, 64, 0, 0
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not an ELF executable"),
        (b"\x7fEL", "not an ELF executable"),
        (_elf_header(1, 3), "32-bit ELF is not supported; karn runs x86-64 programs"),
        (_elf_header(2, 183), "ELF for aarch64, karn runs x86-64 programs"),
        (_elf_header(2, 62, e_type=1), "relocatable object (ET_REL), not an executable"),
        (_elf_header(2, 62, e_type=4), "core dump (ET_CORE), not an executable"),
        (_elf_header(2, 62)[:40], "malformed ELF file"),
        (_elf_header(2, 62), "malformed ELF file: bad program header count 0"),
    ],
)
def test_bad_inputs(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(content)
    with pytest.raises(ImageError, match=f"^{re.escape(str(bad))}: .*{re.escape(message)}"):
        collect_program(str(bad))
    with pytest.raises(ImageError, match=re.escape(message)):
        inspect_elf(content)  # bytes work too


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"#!\necho hi\n", "its `#!` line names no interpreter"),
        (b"#!sh\necho hi\n", "`#!` sh: not an absolute path"),
        (b"#!/nonexistent/sh\n", "`#!` /nonexistent/sh: no such file or directory"),
    ],
)
def test_bad_scripts(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(content)
    with pytest.raises(ImageError, match=f"^{re.escape(str(bad))}: .*{re.escape(message)}"):
        collect_program(str(bad))


def test_a_script_brings_its_interpreter(tmp_path: Path) -> None:
    """A `#!` script is collected with the program its line names and what that needs;
    the script stays the entry (the run starts its interpreter, as execve does)."""
    script = tmp_path / "script"
    script.write_text(f"#!{BUSYBOX} sh\necho hi\n")
    manifest = collect_program(str(script))
    assert manifest.entry == str(script)
    assert set(manifest.files.values()) == {str(script), os.path.realpath(BUSYBOX)}


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r": no such file or directory$"):
        collect_program(str(tmp_path / "nope"))
    with pytest.raises(ImageError, match=r": not a regular file$"):
        collect_program(str(tmp_path))


@needs_gcc
def test_truncated_real_binary(tmp_path: Path) -> None:
    exe = _cc(tmp_path, HELLO_C, "whole")
    data = exe.read_bytes()
    for cut in (63, 64 + 56, 1000, len(data) // 2):
        with pytest.raises(ImageError, match="malformed ELF file"):
            inspect_elf(data[:cut], name="cut")


def test_inspect_python3_fields() -> None:
    if not os.path.exists("/usr/bin/python3"):
        pytest.skip("/usr/bin/python3 is not installed")
    info = inspect_elf("/usr/bin/python3")
    assert info.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert "libc.so.6" in info.needed
    assert info.phentsize == 56 and info.phnum > 0 and info.segments
    assert info.entry != 0
    lo, hi = info.vaddr_range
    assert lo < info.entry < hi


def test_ld_so_cache_lookups_agree_with_ldconfig() -> None:
    """Every x86-64 soname `ldconfig -p` lists is found at the path it gives, whether
    looked up by a scan (a program's first few) or through the index built after them
    (a runtime's dozens of modules)."""
    from karn.image.collect import LD_SO_CACHE, _read_ld_so_cache

    if not os.path.exists(LD_SO_CACHE):
        pytest.skip("no ld.so.cache on this host")
    listed = subprocess.run(["ldconfig", "-p", "-C", LD_SO_CACHE], capture_output=True,
                            text=True, check=True).stdout
    expected: dict[str, str] = {}
    for name, kind, path in re.findall(r"^\s+(\S+) \(([^)]*)\) => (\S+)$", listed, re.M):
        if "x86-64" in kind and "hwcap" not in kind:
            expected.setdefault(name, path)  # ld.so takes the first
    assert len(expected) > 20
    cache = _read_ld_so_cache(LD_SO_CACHE)
    assert cache is not None
    found = {name: cache.get(name) for name in expected}
    assert found == expected
    assert cache.get("libkarn-none.so.1") is None
