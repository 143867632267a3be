"""The running monitor's side of an instance: its record, control socket and metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from karn import log
from karn.errors import UsageError
from karn.instance.paths import instances_dir
from karn.instance.registry import Registration

if TYPE_CHECKING:
    from karn.runtime import Unikernel

SOCKET_PATH_MAX = 107  # sockaddr_un.sun_path, minus the NUL


class InstanceOptions:
    """How `karn run` registers: -d/--detach, --name, --metrics."""

    __slots__ = ("name", "detached", "instance_id", "metrics", "on_started")

    def __init__(self, name: str | None = None, detached: bool = False,
                 instance_id: str | None = None, metrics: str | None = None,
                 on_started: Callable[[], None] | None = None) -> None:
        self.name = name
        self.detached = detached
        self.instance_id = instance_id  # chosen by the parent of a detached run
        self.metrics = metrics
        self.on_started = on_started  # a detached run tells its parent it is up


class MonitorInstance:
    """Registered at start-up, visible to `karn ps` while the guest runs."""

    def __init__(self, uk: Unikernel, options: InstanceOptions) -> None:
        from karn.debug.control import ControlServer

        self.options = options
        self.metrics = None
        if options.metrics is not None:  # first: a busy port fails before anything exists
            from karn.debug.metrics import MetricsServer

            self.metrics = MetricsServer(uk, options.metrics)
        config = uk.config
        self.registration = Registration(config.argv0 or config.program, config.args,
                                         options.name, options.detached, options.instance_id)
        self.id = self.registration.id
        try:
            if len(self.registration.socket_path) > SOCKET_PATH_MAX:
                raise UsageError(f"state directory path too long for a socket: "
                                 f"{self.registration.directory} (set KARN_STATE_DIR)")
            self.control = ControlServer(uk, self.registration.socket_path)
        except BaseException:
            self.registration.discard()
            raise
        self.registration.publish()

    def started(self) -> None:
        if self.options.on_started is not None:
            self.options.on_started()

    def finish(self, exit_code: int, signal: int) -> None:
        self.control.close()
        if self.metrics is not None:
            self.metrics.close()
        self.registration.finish(exit_code, signal)


def register(uk: Unikernel, options: InstanceOptions | None) -> MonitorInstance | None:
    """A foreground run without a usable state directory still runs, just unlisted."""
    options = options or InstanceOptions()
    try:
        return MonitorInstance(uk, options)
    except OSError as err:
        if options.detached or options.name or options.metrics:
            raise UsageError(f"cannot register the instance: {err}") from None
        log.debug("not registered in %s: %s", instances_dir(), err)
        return None
