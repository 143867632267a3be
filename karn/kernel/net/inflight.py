"""Guest files in flight: passed in SCM_RIGHTS messages (unix.py) and not yet received.
Apart from the socket code, as every process's network stack has one (stack.py)."""

from __future__ import annotations

import errno
import os
import select
import threading

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING
from karn.kernel.fs.fdtable import FdTable
from karn.kernel.fs.file import host_error

if TYPE_CHECKING:
    from karn.kernel.fs.file import OpenFile


class InFlight:
    """Guest files in SCM_RIGHTS messages not yet received, as Linux keeps them: they
    belong to the socket buffer that holds the message, and count against the sender's
    RLIMIT_NOFILE (ETOOMANYREFS beyond it; the guest has no CAP_SYS_RESOURCE).

    Each message carries the read end of a pipe; the monitor keeps the write end, which
    polls POLLERR once the host kernel dropped the message (its socket closed, or read
    without room for the ancillary data): reap() then releases the files."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: dict[int, tuple[int, list[OpenFile]]] = {}  # token inode -> (write
        # end, files)
        self.files = 0

    def add(self, files: list[OpenFile], limit: int) -> int:
        """A token (a host fd) for a message carrying files, which gain a reference."""
        self.reap()
        with self.lock:
            if self.files > limit:  # Linux checks before adding, as here
                raise SyscallError(errno.ETOOMANYREFS)
            try:
                r, w = os.pipe2(os.O_CLOEXEC)
            except OSError as err:
                raise host_error(err) from None
            self.messages[os.fstat(r).st_ino] = (w, files)
            self.files += len(files)
            for f in files:
                f.refs += 1
        return r

    def take(self, token: int, peek: bool) -> list[OpenFile] | None:
        """The files a received token stands for; closes the token."""
        ino = os.fstat(token).st_ino
        with self.lock:  # before closing the token: reap() must not see it dropped
            entry = self.messages.get(ino) if peek else self.messages.pop(ino, None)
            if entry is not None and not peek:
                os.close(entry[0])
                self.files -= len(entry[1])
        os.close(token)
        return None if entry is None else entry[1]

    def reap(self) -> None:
        """Release the files of messages the host kernel dropped unread."""
        if not self.messages:
            return
        released: list[OpenFile] = []
        with self.lock:
            poller = select.poll()
            ends = {w: ino for ino, (w, _) in self.messages.items()}
            for w in ends:
                poller.register(w, 0)  # POLLERR is always reported: no reader left
            for w, _ in poller.poll(0):
                _, files = self.messages.pop(ends[w])
                os.close(w)
                self.files -= len(files)
                released += files
        for f in released:  # outside the lock: closing a socket here reaps again
            FdTable.unref(f)

    def close(self) -> None:
        with self.lock:
            for w, _ in self.messages.values():
                os.close(w)
            self.messages.clear()
            self.files = 0

