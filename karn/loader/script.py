"""The first program of a run as execve starts a `#!` script: its interpreter
(image/shebang.py reads the line)."""

from __future__ import annotations

import os
from collections.abc import Callable

from karn.abi.errno import SyscallError
from karn.errors import ImageError
from karn.image.shebang import BINPRM_BUF_SIZE, MAX_SCRIPT_DEPTH, parse_shebang
from karn.kernel.fs.file import OpenFile, read_prefix


def script_command(open_path: Callable[[str], OpenFile], path: str, argv: list[bytes]
                   ) -> tuple[str, list[bytes]]:
    """What runs when `path` is started with `argv`, as execve runs a script: its
    interpreter, with argv [interpreter, its optional argument, path, argv[1:]...], for
    as many `#!` levels as Linux allows; (path, argv) for anything else. ImageError for a
    bad `#!` line or too many levels."""
    first = path
    for _ in range(MAX_SCRIPT_DEPTH + 1):
        try:
            file = open_path(path)
        except SyscallError:
            return path, argv  # the loader says why
        try:
            head = bytes(read_prefix(file, BINPRM_BUF_SIZE))
        except SyscallError:
            return path, argv  # (a directory): the loader says why
        finally:
            file.close()
        try:
            script = parse_shebang(head)
        except SyscallError:
            raise ImageError(f"{path}: its `#!` line names no interpreter") from None
        if script is None:
            return path, argv
        interp, arg = script
        argv = [interp, *([arg] if arg is not None else []), os.fsencode(path), *argv[1:]]
        path = os.fsdecode(interp)
    raise ImageError(f"{first}: too many levels of `#!` interpreters")
