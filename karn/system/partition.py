"""One partition as a host process: a `karn run` monitor with its ports' ends.

Each port is one end of its channel's ring (system/channels.py): the monitor inherits
the fds the supervisor made and is told about them with the internal `karn run --port`
option. The monitor runs in its own session, so a terminal's Ctrl-C reaches only the
supervisor, which stops the system in order. Guard processes (system/guardproc.py) are
started the same way.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys

import karn
from karn.kernel.fs.ports import PortSpec
from karn.system.description import Partition

STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL when the system goes down
PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before any fork


def _die_with_supervisor() -> None:
    """In the child before exec: SIGKILL when the supervisor (the forking thread) dies,
    so a killed supervisor leaves no partition running without its channels."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def monitor_env() -> dict[str, str]:
    """The monitor imports this very karn, installed or not."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(karn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
    return env


def guard_command(into: PortSpec, out: PortSpec) -> list[str]:
    return [sys.executable, "-m", "karn.system.guardproc", into.format(), out.format()]


def monitor_command(part: Partition, specs: list[PortSpec]) -> list[str]:
    cmd = [sys.executable, "-m", "karn", "run"]
    if part.memory is not None:
        cmd += ["--memory", str(part.memory)]
    if part.cpus is not None:
        cmd += ["--cpus", str(part.cpus)]
    if part.network is not None:
        cmd += ["--network", part.network]
    for item in part.env:
        cmd += ["--env", item]
    for vol in part.volumes:
        cmd += ["--volume", vol]
    cmd += ["--hostname", part.name, *part.options]
    for spec in specs:
        cmd.append("--port=" + spec.format())
    return [*cmd, part.program, *part.args]


def spawn(cmd: list[str], fds: list[int], cwd: str) -> tuple[subprocess.Popen, int]:
    """Start cmd in its own session with fds inherited; (process, its output pipe)."""
    out_r, out_w = os.pipe()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w,
                                pass_fds=fds, cwd=cwd, env=monitor_env(),
                                start_new_session=True, preexec_fn=_die_with_supervisor)
    except BaseException:
        os.close(out_r)
        raise
    finally:
        os.close(out_w)
    os.set_blocking(out_r, False)
    return proc, out_r


class PartitionProcess:
    """A started partition (or guard process): its process, the supervisor's ends of
    its report sockets, its output pipe."""

    def __init__(self, cmd: list[str], fds: list[int], cwd: str,
                 socks: dict[str, socket.socket]) -> None:
        self.socks = socks  # port -> the supervisor's end of its report socket
        try:
            self.proc, self.output = spawn(cmd, fds, cwd)
        except BaseException:
            self.output = self.pidfd = -1  # nothing to close
            self.close()
            raise
        self.pid = self.proc.pid
        self.pidfd = os.pidfd_open(self.pid)

    def terminate(self) -> None:
        try:
            os.kill(self.pid, signal.SIGCONT)  # a paused (cyclic) partition must see it
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()
        self.socks.clear()
        for fd in (self.output, self.pidfd):
            if fd >= 0:
                os.close(fd)
        self.output = self.pidfd = -1
