"""Where karn keeps its images: $KARN_HOME (a tiny module: `karn run` may ask cheaply)."""

from __future__ import annotations

import os


def karn_home() -> str:
    home = os.environ.get("KARN_HOME")
    if home:
        return os.path.abspath(home)
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local/share")
    return os.path.join(data, "karn")
