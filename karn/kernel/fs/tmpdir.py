"""The run's private host directory, where its tmpfs mounts move at the first fork
(kernel/fs/sharedtmp.py): made before the monitor is confined (Landlock allows it), on a
host tmpfs, mode 0700, locked while any monitor of the run lives, and removed by the
first monitor when the run ends; one a killed run left is removed by the next run.
Apart from sharedtmp.py, which a run loads only when it forks."""

from __future__ import annotations

import fcntl
import os
import threading

from karn.kernel.hosttmp import private_dir, remove_tree, temp_dir

# Where the run's directory goes when TMPDIR does not say: a host tmpfs, so guest
# temporaries never reach a disk.
HOST_TMPFS = "/dev/shm"
PREFIX = "karn-tmpfs-"


def _host_base() -> str:
    if os.environ.get("TMPDIR"):
        return temp_dir()
    if os.path.isdir(HOST_TMPFS) and os.access(HOST_TMPFS, os.W_OK | os.X_OK):
        return HOST_TMPFS
    return temp_dir()


def _sweep(base: str) -> None:
    """Remove what runs killed by SIGKILL left: a run's directory is flock()ed by its
    monitors for as long as one lives, so one that can be locked has no run left."""
    try:
        names = [n for n in os.listdir(base) if n.startswith(PREFIX)]
    except OSError:
        return
    for name in names:
        try:
            fd = os.open(os.path.join(base, name),
                         os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if os.fstat(fd).st_uid != os.geteuid():
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a live run's
        finally:
            os.close(fd)  # (the lock, if taken, goes with it: the tree goes next)
        remove_tree(os.path.join(base, name))


class SharedTmpDir:
    """The run's private host directory for its shared tmpfs mounts, made on first use
    and removed by the monitor that made it; locked while any monitor of the run lives
    (the fd is inherited across forks), so a later run can tell it from a leftover."""

    def __init__(self) -> None:
        self._path: str | None = None
        self._owner = 0
        self._held = -1  # the locked fd
        self._lock = threading.Lock()

    def path(self) -> str:
        with self._lock:
            if self._path is None:
                base = _host_base()
                _sweep(base)
                # made under a name no sweep looks at, locked, then named
                made = private_dir("." + PREFIX, base)
                fd = os.open(made, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                fcntl.flock(fd, fcntl.LOCK_EX)
                path = os.path.join(base, os.path.basename(made)[1:])
                os.rename(made, path)
                self._path, self._owner, self._held = path, os.getpid(), fd
            return self._path

    def remove(self) -> None:
        """The run has ended: the directory and everything the guest left in it go (a
        forked monitor never removes it; it ends with os._exit)."""
        if self._path is not None and self._owner == os.getpid():
            remove_tree(self._path)
            os.close(self._held)
            self._path = None
