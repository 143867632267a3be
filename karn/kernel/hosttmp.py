"""The monitor's private host directories and files, and their removal.

What the standard library's tempfile and shutil would do, for the few calls a run makes:
tempfile imports shutil, random, weakref, bz2 and lzma, ~3.5 ms of every `karn run`
(docs/benchmarks.md, "Start-up measured in a fresh venv"). Names are random (16 hex
digits from os.urandom), made with O_EXCL or mkdir so a name taken by someone else is
never reused, and private (0700 directories, 0600 files), as tempfile's.
"""

from __future__ import annotations

import os

from karn import log

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ATTEMPTS = 100  # names tried before giving up (tempfile's TMP_MAX is 10000; a clash is rare)
_temp_dir: str | None = None


def temp_dir() -> str:
    """The host's directory for temporary files: $TMPDIR, $TEMP or $TMP, else /tmp,
    /var/tmp or /usr/tmp, the first that is a directory this process may write; else the
    working directory (tempfile.gettempdir's order)."""
    global _temp_dir
    if _temp_dir is None:
        candidates = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")]
        candidates += ["/tmp", "/var/tmp", "/usr/tmp"]
        _temp_dir = next((os.path.abspath(c) for c in candidates
                          if c and os.path.isdir(c) and os.access(c, os.W_OK | os.X_OK)),
                         os.getcwd())
    return _temp_dir


def _name(prefix: str) -> str:
    return prefix + os.urandom(8).hex()


def private_dir(prefix: str = "", base: str | None = None) -> str:
    """A new directory of mode 0700 under `base` (temp_dir() if None): its path."""
    where = temp_dir() if base is None else base
    for _ in range(_ATTEMPTS):
        path = os.path.join(where, _name(prefix))
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free name for a directory in {where}")


def private_file(base: str) -> tuple[int, str]:
    """A new empty file of mode 0600 in `base`, open for reading and writing: its fd
    (close-on-exec) and path."""
    for _ in range(_ATTEMPTS):
        path = os.path.join(base, _name("tmp"))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        return fd, path
    raise FileExistsError(f"no free name for a file in {base}")


def remove_tree(path: str) -> None:
    """rm -rf of a tree a guest may have made, without recursion (it may be nested deeper
    than Python's stack) and with one directory fd open at a time; directories the guest
    made read-only are opened up first. Stops at the first thing it cannot remove."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except OSError:
        return
    below: list[str] = []  # names from path down to fd's directory
    try:
        while True:
            subdir = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        subdir = entry.name
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if subdir is not None:
                os.chmod(subdir, 0o700, dir_fd=fd)
                inner = os.open(subdir, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = inner
                below.append(subdir)
                continue
            if not below:
                break
            outer = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = outer
            os.rmdir(below.pop(), dir_fd=fd)
        os.close(fd)
        fd = -1
        os.rmdir(path)
    except OSError as err:
        log.debug("removing %s: %s", path, err)
    finally:
        if fd >= 0:
            os.close(fd)
