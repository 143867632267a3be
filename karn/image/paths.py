"""Guest paths inside a host directory holding an image's root, symlinks taken as the guest
takes them (an absolute target starts again at the root; '..' stops at the root)."""

from __future__ import annotations

import os
import stat

from karn.errors import ImageError

MAX_LINK_HOPS = 40


def resolve_inside(root: str, parts: list[str]) -> str:
    """Host path of a directory below root; the result has no symlink and is inside root.

    For reading an extracted root (extraction itself walks directory fds: layer._Tree).
    Raises FileNotFoundError/NotADirectoryError, or ImageError on a symlink loop.
    """
    pending = list(parts)
    current: list[str] = []
    hops = 0
    while pending:
        comp = pending.pop(0)
        if comp in ("", "."):
            continue
        if comp == "..":
            if current:
                current.pop()
            continue
        host = os.path.join(root, *current, comp)
        st = os.lstat(host)
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_LINK_HOPS:
                raise ImageError(f"too many levels of symbolic links at /{'/'.join(parts)}")
            target = os.readlink(host)
            if target.startswith("/"):
                current = []
            pending[:0] = target.split("/")
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(host)
        current.append(comp)
    return os.path.join(root, *current)


def guest_file(root: str, guest_path: str) -> str | None:
    """Host path of a guest path's final regular file (links followed inside root), or None."""
    parts = [p for p in guest_path.split("/") if p]
    for _ in range(MAX_LINK_HOPS):
        if not parts:
            return None
        try:
            parent = resolve_inside(root, parts[:-1])
        except (OSError, ImageError):
            return None
        host = os.path.join(parent, parts[-1])
        try:
            st = os.lstat(host)
        except OSError:
            return None
        if not stat.S_ISLNK(st.st_mode):
            return host if stat.S_ISREG(st.st_mode) else None
        target = os.readlink(host)
        base = [] if target.startswith("/") else os.path.relpath(parent, root).split("/")
        parts = [p for p in [*base, *target.split("/")] if p and p != "."]
    return None
