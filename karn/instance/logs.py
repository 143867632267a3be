"""A detached instance's output log, with the time each piece arrived (`karn logs -t`).

The guest's stdout and stderr are one pipe (as docker's are); a small writer process
copies it into output.log and, before each piece, appends (offset, time) to output.times.
The writer holds an exclusive flock on the log while it runs: a reader that finds the
instance ended takes a shared lock to know it has the whole log.
"""

from __future__ import annotations

import bisect
import fcntl
import os
import struct
import time

RECORD = struct.Struct("<Qq")  # byte offset in the log, time in ns since the epoch
WRITER_WAIT = 10.0  # seconds a reader waits for the writer to copy the last output


def times_path(log_path: str) -> str:
    return log_path.removesuffix(".log") + ".times"


def start_writer(log_path: str) -> int:
    """Fork the writer process (its own child's, so nobody need reap it); returns the
    pipe's write end for the caller's stdout and stderr. The log is locked before the
    fork: it is never seen unlocked while the writer may still add to it."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    fcntl.flock(log, fcntl.LOCK_EX)
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        if os.fork() == 0:
            _copy(read_end, log, log_path)
        os._exit(0)
    os.waitpid(middle, 0)
    os.close(read_end)
    os.close(log)  # the writer's copy keeps the lock
    return write_end


def _copy(read_end: int, log: int, log_path: str) -> None:
    status = 1
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        keep = sorted({read_end, log})
        os.closerange(3, keep[0])
        os.closerange(keep[0] + 1, keep[-1])
        os.closerange(keep[-1] + 1, os.sysconf("SC_OPEN_MAX"))
        times = os.open(times_path(log_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        offset = 0
        while chunk := os.read(read_end, 1 << 16):
            os.write(times, RECORD.pack(offset, time.time_ns()))  # before the data it dates
            view = memoryview(chunk)
            while view:
                view = view[os.write(log, view):]
            offset += len(chunk)
        status = 0
    finally:
        os._exit(status)


def wait_for_writer(log_path: str, timeout: float = WRITER_WAIT) -> None:
    """Until the writer has copied everything (its lock is gone), or the timeout."""
    try:
        fd = os.open(log_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.02)
    finally:
        os.close(fd)


def tail_offset(log_path: str, lines: int) -> int:
    """The offset where the last `lines` lines of the log begin."""
    with open(log_path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        if lines <= 0:
            return end
        pos = end
        f.seek(end - 1 if end else 0)
        wanted = lines + (f.read(1) == b"\n")  # a final newline ends the last line
        while pos > 0:
            step = min(pos, 1 << 16)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            at = len(block)
            while (at := block.rfind(b"\n", 0, at)) >= 0:
                wanted -= 1
                if wanted == 0:
                    return pos + at + 1
        return 0


class Times:
    """When each byte of the log arrived (to the piece the writer read)."""

    def __init__(self, log_path: str) -> None:
        try:
            with open(times_path(log_path), "rb") as f:
                data = f.read()
        except OSError:
            data = b""
        data = data[: len(data) - len(data) % RECORD.size]
        records = [RECORD.unpack_from(data, i) for i in range(0, len(data), RECORD.size)]
        self.offsets = [r[0] for r in records]
        self.stamps = [r[1] for r in records]

    def ends_before(self, offset: int) -> bool:
        """Whether the log may hold output at `offset` read after these records."""
        return not self.offsets or self.offsets[-1] < offset

    def at(self, offset: int) -> str:
        """RFC 3339 with nanoseconds, as `docker logs -t`; '-' for output before any record."""
        i = bisect.bisect_right(self.offsets, offset) - 1
        if i < 0:
            return "-"
        seconds, nanos = divmod(self.stamps[i], 1_000_000_000)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def stamped(chunk: bytes, start: int, times: Times, at_line_start: bool) -> tuple[bytes, bool]:
    """chunk (read at log offset start) with each line's arrival time before it."""
    out = []
    pos = 0
    while pos < len(chunk):
        if at_line_start:
            out.append(times.at(start + pos).encode() + b" ")
        end = chunk.find(b"\n", pos)
        end = len(chunk) if end < 0 else end + 1
        out.append(chunk[pos:end])
        at_line_start = chunk[end - 1:end] == b"\n"
        pos = end
    return b"".join(out), at_line_start

