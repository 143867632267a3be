"""The `#!` line of a script, read as Linux's binfmt_script reads it (the image's
collector, the loader's first program and execve use it)."""

from __future__ import annotations

import errno

from karn.abi.errno import SyscallError

BINPRM_BUF_SIZE = 256  # how much of a file decides what it is (`#!` line included)
MAX_SCRIPT_DEPTH = 5  # nested `#!` interpreters (Linux's exec_binprm)
SPACETAB = b" \t"


def _next_non_spacetab(buf: bytearray, first: int, last: int) -> int | None:
    for i in range(first, last + 1):
        if buf[i] not in SPACETAB:
            return i
    return None


def _next_terminator(buf: bytearray, first: int, last: int) -> int | None:
    for i in range(first, last + 1):
        if buf[i] in SPACETAB or buf[i] == 0:
            return i
    return None


def _cstring(buf: bytearray, start: int) -> bytes:
    end = buf.find(b"\0", start)
    return bytes(buf[start:end])


def parse_shebang(head: bytes) -> tuple[bytes, bytes | None] | None:
    """The interpreter and optional argument of a `#!` line, read from the file's first
    BINPRM_BUF_SIZE bytes as Linux's binfmt_script does; None if not a script, ENOEXEC
    for a line that names no interpreter or whose name does not fit."""
    buf = bytearray(head[:BINPRM_BUF_SIZE].ljust(BINPRM_BUF_SIZE, b"\0"))
    if buf[:2] != b"#!":
        return None
    last = BINPRM_BUF_SIZE - 1
    end: int | None = None
    for i in range(BINPRM_BUF_SIZE):  # strnchr: a newline before any NUL
        if buf[i] in (0, 0x0A):
            end = i if buf[i] == 0x0A else None
            break
    if end is None:
        first = _next_non_spacetab(buf, 2, last)
        if first is None or _next_terminator(buf, first, last) is None:
            raise SyscallError(errno.ENOEXEC)  # all blank, or a name cut off by the limit
        end = last
    while buf[end - 1] in SPACETAB:
        end -= 1
    name = _next_non_spacetab(buf, 2, end)
    if name is None or name == end:
        raise SyscallError(errno.ENOEXEC)
    arg = None
    sep = _next_terminator(buf, name, end)
    if sep is not None and buf[sep] != 0:
        arg = _next_non_spacetab(buf, sep, end)
    buf[end] = 0
    if arg is not None and sep is not None:
        buf[sep] = 0
    return _cstring(buf, name), (None if arg is None else _cstring(buf, arg))
