"""`karn run` through a running `karn daemon` (karn/cli/daemon.py), and the messages both
sides exchange.

The `karn` command (karn/cli/entry.py) comes here when a daemon's socket exists, before
it imports karn's own modules; this imports only C modules. It sends its command line,
environment, working directory, umask, resource limits and standard streams to the
daemon, forwards the signals it gets to the run the daemon forked, and exits with that
run's status. When nobody listens or the daemon declines (a terminal run, a detached
one, karn's code changed since the daemon started), `run` returns None and karn runs
in-process.

A message is 4 bytes of length, then a marshalled tuple (only the user's own processes
may connect: the socket is the user's, and the daemon checks the peer's uid).
"""

from __future__ import annotations

import _socket
import marshal
import os
import resource
import sys

TYPE_CHECKING = False  # typing's, without importing typing (re, enum and more: ~7 ms)
if TYPE_CHECKING:
    import signal as _signal
else:  # the C module: `signal` makes enums of its names at import
    import _signal

LIMITS = (resource.RLIMIT_NOFILE, resource.RLIMIT_CORE, resource.RLIMIT_STACK,
          resource.RLIMIT_NPROC, resource.RLIMIT_AS, resource.RLIMIT_DATA,
          resource.RLIMIT_FSIZE, resource.RLIMIT_MEMLOCK, resource.RLIMIT_CPU)
# forwarded to the run; SIGTSTP also stops this client, as the shell expects of its job
FORWARDED = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT,
             _signal.SIGUSR1, _signal.SIGUSR2, _signal.SIGWINCH, _signal.SIGCONT,
             _signal.SIGTSTP, _signal.SIGALRM)
TERMINATING = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT)
TAKEN_WITHIN = 10.0  # seconds for the daemon to take a run; else it runs in-process
MAX_MESSAGE = 1 << 20
MAX_FDS = 5  # the streams and the working directory; to a spare, the client too
DAEMON_GONE = 125


def identity() -> tuple[str, str]:
    """Which karn and which Python: a daemon serves only clients of its own."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__))), sys.version


def send(sock: _socket.socket, message: tuple, fds: tuple[int, ...] = ()) -> None:
    data = marshal.dumps(message)
    data = len(data).to_bytes(4, "little") + data
    ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                  b"".join(fd.to_bytes(4, "little") for fd in fds))] if fds else []
    sent = sock.sendmsg([data], ancillary)
    if sent < len(data):
        sock.sendall(data[sent:])


def receive(sock: _socket.socket) -> tuple[tuple, list[int]]:
    """One message and the descriptors that came with it; EOFError at the end."""
    head, ancillary, _, _ = sock.recvmsg(4, _socket.CMSG_SPACE(4 * MAX_FDS))
    fds = [int.from_bytes(data[i:i + 4], "little")
           for level, kind, data in ancillary
           if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
           for i in range(0, len(data) - len(data) % 4, 4)]
    try:
        if not head:
            raise EOFError
        while len(head) < 4:
            more = sock.recv(4 - len(head))
            if not more:
                raise EOFError
            head += more
        size = int.from_bytes(head, "little")
        if size > MAX_MESSAGE:
            raise EOFError
        data = b""
        while len(data) < size:
            more = sock.recv(size - len(data))
            if not more:
                raise EOFError
            data += more
        message = marshal.loads(data)
        if not isinstance(message, tuple) or not message:
            raise EOFError
    except (EOFError, ValueError, TypeError):
        for fd in fds:
            os.close(fd)
        raise EOFError from None
    return message, fds


def run(argv: list[str], path: str) -> int | None:
    """The exit status of `karn ARGV` run by the daemon at `path`; None if there is none
    to run it, it is not this user's, or it declined (then nothing has run)."""
    if not _ours(path):
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
        if peer(sock)[1] != os.geteuid():
            return None
        return _converse(sock, argv)
    except OSError:
        return None
    finally:
        sock.close()


def _ours(path: str) -> bool:
    """The socket and its directory are this user's, and nobody else may write there (so
    nobody else can have put a listener there)."""
    for where in (path, os.path.dirname(path)):
        try:
            st = os.lstat(where)
        except OSError:
            return False
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return False
    return True


def peer(sock: _socket.socket) -> tuple[int, int]:
    """The pid and uid of the process at the other end (SO_PEERCRED)."""
    cred = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return int.from_bytes(cred[0:4], "little"), int.from_bytes(cred[4:8], "little")


def _converse(sock: _socket.socket, argv: list[str]) -> int | None:
    umask = os.umask(0)
    os.umask(umask)
    limits = [(which, resource.getrlimit(which)) for which in LIMITS]
    scheduling = (os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0)))
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        send(sock, ("run", identity(), sys.argv[0], argv, dict(os.environ), umask, limits,
                    scheduling), (0, 1, 2, cwd))
    finally:
        os.close(cwd)
    forwarder = _Forwarder()
    try:
        sock.settimeout(TAKEN_WITHIN)
        while True:
            try:
                message, fds = receive(sock)
            except (EOFError, OSError):
                if not forwarder.pid:
                    return None  # not taken (refused, or too slow): nothing ran
                sys.stderr.write("karn: the daemon went away during the run\n")
                return DAEMON_GONE
            for fd in fds:
                os.close(fd)
            kind = message[0]
            if kind == "pid":  # taken: the run starts at our word, once (not if we left)
                forwarder.start(message[1])
                send(sock, ("go",))
                sock.settimeout(None)
                forwarder.flush()
            elif kind == "declined":
                if message[2]:
                    sys.stderr.write(f"karn: {message[1]}\n")
                return None
            elif kind == "exit":
                return message[1]
            elif kind == "signal":  # the run died of it: so does this client
                forwarder.stop()
                _signal.signal(message[1], _signal.SIG_DFL)
                os.kill(os.getpid(), message[1])
                return 128 + message[1]
    except _Ended as ended:  # a terminating signal before the run was taken
        return ended.status
    finally:
        forwarder.stop()


class _Ended(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class _Forwarder:
    """Signals this client gets go to the run once it is taken; before, a terminating one
    ends the client (nothing has run), as it ends an in-process karn that early."""

    def __init__(self) -> None:
        self.pid = 0
        self.pidfd = -1  # the run's, opened while it waits for our word: never another's
        self.waiting: list[int] = []
        self.previous = {sig: _signal.signal(sig, self._got) for sig in FORWARDED}

    def start(self, pid: int) -> None:
        self.pid = pid
        try:
            self.pidfd = os.pidfd_open(pid)
        except OSError:
            pass  # (it died already: the daemon says how)

    def flush(self) -> None:
        while self.waiting:
            self._send(self.waiting.pop(0))

    def stop(self) -> None:
        for sig, handler in self.previous.items():
            _signal.signal(sig, handler)
        self.previous = {}
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def _got(self, sig: int, frame: object) -> None:
        if self.pid:
            self._send(sig)
        elif sig == _signal.SIGINT:
            sys.stderr.write("karn: interrupted\n")
            raise _Ended(130)
        elif sig in TERMINATING:
            self.stop()
            _signal.signal(sig, _signal.SIG_DFL)
            os.kill(os.getpid(), sig)
            raise _Ended(128 + sig)
        else:
            self.waiting.append(sig)

    def _send(self, sig: int) -> None:
        # Ctrl-Z stops an in-process run (SIGTSTP's default); the run here leads a session
        # of its own, an orphaned process group, where Linux drops SIGTSTP: SIGSTOP it.
        stop = sig == _signal.SIGTSTP
        if self.pidfd < 0:
            return
        try:
            _signal.pidfd_send_signal(self.pidfd, _signal.SIGSTOP if stop else sig)
        except ProcessLookupError:
            return
        if stop:  # the run stopped: so does its job, this client, for the shell
            os.kill(os.getpid(), _signal.SIGSTOP)
