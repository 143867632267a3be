"""The guest's vDSO image (vdso.c, built by `make vdso` into the committed vdso.so).

The image is position independent and relocation-free: the loader copies its bytes as
they are to a page-aligned address, with the time page ([vvar], timepage.py) on the page
just below, which the code reaches RIP-relative.
"""

from __future__ import annotations

import functools
import os

VVAR_SIZE = 0x1000  # the time page, immediately below the image


@functools.cache
def image() -> bytes:
    """The vdso.so bytes (package data beside this file), read once per process."""
    with open(os.path.join(os.path.dirname(__file__), "vdso.so"), "rb") as f:
        return f.read()
