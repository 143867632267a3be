"""The container's init process: a karn monitor forked by `create`, which outlives it.

The caller (conmon, the containerd shim) is a subreaper waiting for `create` to exit; the
init, `create`'s child, is then reparented to it, and its exit status is the container's.
The init joins the network namespace, builds the guest (VM, filesystems, the program
loaded), tells `create` it is ready, and blocks opening exec.fifo for writing until
`start` opens it for reading; then the guest runs. Everything that can fail does so
before `create` returns, as runc's init does.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import traceback

from karn.errors import KarnError, UsageError
from karn.hints import TYPE_CHECKING

if TYPE_CHECKING:
    from karn.oci.spec import ContainerSpec
    from karn.oci.state import Container
    from karn.run.guest import Guest

CLONE_NEWNET = 0x40000000
READY = b"ready"
# Signals `kill` may send that the runner does not already forward to the guest; the
# others (SIGKILL, SIGSTOP) act on the monitor itself, as on any process.
MORE_FORWARDED = (signal.SIGWINCH, signal.SIGALRM, signal.SIGPWR, signal.SIGURG,
                  signal.SIGCONT, signal.SIGVTALRM, signal.SIGPROF, signal.SIGTSTP,
                  signal.SIGTTIN, signal.SIGTTOU)


def spawn_init(spec: ContainerSpec, container: Container, console_socket: str | None) -> int:
    """Fork the init; its pid once it is set up and waiting for `start`."""
    if spec.terminal and not console_socket:
        raise UsageError("process.terminal is true but no --console-socket was given")
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the init: it never returns into the command line's code
        status = 1
        try:
            os.close(read_end)
            status = _init(spec, container, console_socket, write_end)
        except BaseException:  # noqa: BLE001 - a monitor failure: report it, status 1
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as report:
        message = report.read()
    if message == READY:
        return pid
    os.waitpid(pid, 0)
    raise UsageError(message.decode(errors="replace") or "the container's init ended")


def _init(spec: ContainerSpec, container: Container, console_socket: str | None,
          report: int) -> int:
    """The init's whole life; its exit status (the guest's, or 1 before it ran)."""
    try:
        guest = _prepare(spec, console_socket)
    except KarnError as err:
        os.write(report, str(err).encode())
        return 1
    except BaseException as err:  # noqa: BLE001 - the caller must hear of any failure
        os.write(report, f"init: {err!r}\n{traceback.format_exc()}".encode())
        return 1
    os.write(report, READY)
    os.close(report)
    try:
        fifo = os.open(container.fifo, os.O_WRONLY)  # blocks until `start` opens it
    except OSError:
        return 1  # deleted before it started
    os.write(fifo, b"0")
    os.close(fifo)
    return _run(guest)


def _prepare(spec: ContainerSpec, console_socket: str | None) -> Guest:
    from karn.kernel.process import Identity
    from karn.run.builder import build

    os.setsid()  # out of the caller's session: its job-control signals are not ours
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # `kill INT` before start ends the init
    if spec.terminal:
        from karn.oci.console import attach_terminal

        assert console_socket is not None
        attach_terminal(console_socket, spec.console_size)
    if spec.netns is not None:
        join_network(spec.netns)
    guest = build(spec.run)
    guest.process.identity = Identity(spec.uid, spec.gid, spec.uid, spec.gid)
    guest.process.namespace_init = spec.pid_init
    return guest


def join_network(path: str) -> None:
    """Enter the network namespace at path before any thread exists: every thread the
    monitor starts, and so every guest socket, lives there."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise UsageError(f"network namespace {path}: setns: {os.strerror(err)}")
    finally:
        os.close(fd)


def _run(guest: Guest) -> int:
    from karn.abi.signals import SI_USER
    from karn.kernel.signals import SigInfo
    from karn.run.runner import run

    def forward(signum: int, frame: object) -> None:
        if not guest.process.done.is_set():
            guest.process.signal_process(SigInfo.from_sender(signum, SI_USER, 0))

    for sig in MORE_FORWARDED:
        signal.signal(sig, forward)
    try:
        status = run(guest)
    except KarnError as err:
        sys.stderr.write(f"karn: {err}\n")
        status = err.exit_code
    sys.stdout.flush()
    sys.stderr.flush()
    return status
