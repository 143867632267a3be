"""process.terminal: the guest's stdio is a new pty's slave, and the master goes to the
caller through --console-socket (an AF_UNIX socket; the fd travels as SCM_RIGHTS, as
runc sends it), so conmon or the containerd shim carries the terminal's traffic."""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios

from karn.errors import UsageError


def attach_terminal(console_socket: str, size: tuple[int, int] | None) -> None:
    """Make a pty the controlling terminal and stdio of this (session-leading) process,
    and hand its master to whoever listens on console_socket."""
    master, slave = os.openpty()
    try:
        if size is not None:
            rows, columns = size
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(console_socket)
            except OSError as err:
                raise UsageError(f"--console-socket {console_socket}: {err.strerror}") from None
            socket.send_fds(sock, [os.ttyname(slave).encode()], [master])
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
    finally:
        os.close(master)
        if slave > 2:
            os.close(slave)
