"""Errors a user can cause: one line on stderr starting with 'karn: ', a non-zero exit
status (125: karn could not run it; 127: the program cannot be found or run), and no
Python traceback."""

from __future__ import annotations

import os
import struct
import subprocess

import pytest

RUNTIME_FAILURE = 125
NOT_RUNNABLE = 127


def assert_one_error_line(
    proc: subprocess.CompletedProcess[bytes], status: int | None, *must_mention: str
) -> str:
    err = proc.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    # the error is the last line; lines before it may only be progress of a long
    # operation (build, pull, push: karn/image/progress.py), never another error
    said = [line for line in err.splitlines() if line.strip()]
    lines = [line for line in said if line.startswith("karn: ")]
    assert len(lines) == 1, f"want exactly one error line on stderr, got {len(lines)}:\n{err}"
    assert said[-1] == lines[0], err
    assert proc.returncode != 0
    if status is not None:
        assert proc.returncode == status, f"exit status {proc.returncode}, want {status}: {err}"
    for text in must_mention:
        assert text.lower() in lines[0].lower(), f"{text!r} not in {lines[0]!r}"
    assert proc.stdout == b""
    return lines[0]


def elf_header(ei_class: int, machine: int) -> bytes:
    """A minimal ELF executable header with the given class and e_machine."""
    ident = b"\x7fELF" + bytes([ei_class, 1, 1, 0]) + bytes(8)
    if ei_class == 1:  # ELFCLASS32: 52-byte header
        rest = struct.pack(
            "<HHIIIIIHHHHHH", 2, machine, 1, 0x8048000, 52, 0, 0, 52, 32, 0, 40, 0, 0
        )
    else:
        rest = struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0x400000, 64, 0, 0, 64, 56, 0, 64, 0, 0)
    return ident + rest


def make_exe(path, data: bytes):
    path.write_bytes(data)
    os.chmod(path, 0o755)
    return path


def test_not_an_elf(tmp_path, karn):
    exe = make_exe(tmp_path / "notes.txt", b"just some text, not a program\n")
    assert_one_error_line(karn(exe), NOT_RUNNABLE, str(exe))


def test_script_whose_line_names_no_interpreter(tmp_path, karn):
    exe = make_exe(tmp_path / "script.sh", b"#!  \necho hi\n")
    assert_one_error_line(karn(exe), NOT_RUNNABLE, str(exe))


def test_empty_file(tmp_path, karn):
    exe = make_exe(tmp_path / "empty", b"")
    assert_one_error_line(karn(exe), NOT_RUNNABLE, str(exe))


def test_truncated_elf(tmp_path, build, karn):
    exe = make_exe(tmp_path / "truncated", build("exit42", "static").read_bytes()[:200])
    assert_one_error_line(karn(exe), NOT_RUNNABLE, str(exe))


def test_32bit_elf(tmp_path, karn):
    exe = make_exe(tmp_path / "i386-prog", elf_header(1, 3) + bytes(200))
    assert_one_error_line(karn(exe), NOT_RUNNABLE, "32")


def test_aarch64_elf(tmp_path, karn):
    exe = make_exe(tmp_path / "arm-prog", elf_header(2, 183) + bytes(200))
    line = assert_one_error_line(karn(exe), NOT_RUNNABLE)
    assert "aarch64" in line.lower() or "arm" in line.lower(), line


def test_missing_interpreter(tmp_path, build, karn):
    interp = "/nonexistent/ld-karn-test.so.2"
    exe = build("exit42", "dynamic", extra_flags=[f"-Wl,--dynamic-linker={interp}"])
    with pytest.raises(FileNotFoundError):  # natively, execve fails with ENOENT too
        subprocess.run([str(exe)], capture_output=True)
    assert_one_error_line(karn(exe), NOT_RUNNABLE, interp)


def test_missing_file(karn):
    assert_one_error_line(
        karn("/nonexistent/karn-program"), NOT_RUNNABLE, "/nonexistent/karn-program"
    )


def test_name_not_on_path(karn):
    assert_one_error_line(
        karn("karn-no-such-program-xyz"), NOT_RUNNABLE, "karn-no-such-program-xyz"
    )


def test_directory_as_program(tmp_path, karn):
    assert_one_error_line(karn(tmp_path), NOT_RUNNABLE, str(tmp_path))


@pytest.mark.parametrize("device", ["/nonexistent/kvm", "/dev/null"])
def test_kvm_not_accessible(device, build, karn):
    exe = build("exit42", "static")
    proc = karn(exe, extra_env={"KARN_KVM_DEVICE": device})
    assert_one_error_line(proc, RUNTIME_FAILURE, device)


def test_missing_volume_source(tmp_path, build, karn):
    exe = build("exit42", "static")
    missing = tmp_path / "no-such-dir"
    assert_one_error_line(karn("-v", f"{missing}:/data", exe), None, str(missing))


def test_bad_memory_size(build, karn):
    exe = build("exit42", "static")
    assert_one_error_line(karn("--memory", "lots", exe), None, "lots")


def test_bad_workdir(build, karn):
    exe = build("exit42", "static")
    proc = karn("-w", "/no/such/dir", exe)
    assert_one_error_line(proc, None, "/no/such/dir")
