"""The running monitor's side of an instance: its record, control socket and metrics."""

from __future__ import annotations

import errno

from karn import log
from karn.errors import UsageError
from karn.hints import TYPE_CHECKING
from karn.instance.paths import instances_dir
from karn.instance.registry import Registration

if TYPE_CHECKING:
    from karn.debug.control import ControlServer
    from karn.debug.metrics import MetricsServer
    from karn.instance.options import InstanceOptions
    from karn.run.guest import Guest

SOCKET_PATH_MAX = 107  # sockaddr_un.sun_path, minus the NUL


class MonitorInstance:
    """A RunPlugin (karn/run/guest.py): registered when attached, visible to `karn ps`
    while the guest runs, its record finished with the exit status."""

    def __init__(self, options: InstanceOptions) -> None:
        self.options = options
        self.metrics: MetricsServer | None = None
        self.control: ControlServer | None = None
        self.registration: Registration | None = None

    def attach(self, guest: Guest) -> None:
        """Register; a foreground run without a usable state directory runs unlisted."""
        options = self.options
        try:
            self._register(guest)
        except OSError as err:
            if options.detached or options.name or options.metrics:
                where = f": {err.filename}" if err.filename else ""
                raise UsageError(f"cannot register the instance: {err.strerror or err}{where}"
                                 ) from None
            log.debug("not registered in %s: %s", instances_dir(), err)

    def _register(self, guest: Guest) -> None:
        from karn.debug.control import ControlServer

        options = self.options
        if options.metrics is not None:  # first: a busy port fails before anything exists
            from karn.debug.metrics import MetricsServer

            self.metrics = MetricsServer(guest, options.metrics)
        config = guest.config
        registration = Registration(config.argv0 or config.program, config.args,
                                    options.name, options.detached, options.instance_id,
                                    [str(p) for p in config.publish], options.remove)
        try:
            if len(registration.socket_path) > SOCKET_PATH_MAX:  # attach() decides: fatal
                # only for a run that asked to be an instance (-d, --name, --metrics)
                raise OSError(errno.ENAMETOOLONG, "state directory path too long for a "
                              f"socket: {registration.directory} (set KARN_STATE_DIR)")
            self.control = ControlServer(guest, registration.socket_path)
        except BaseException:
            registration.discard()
            raise
        registration.publish()
        self.registration = registration

    def started(self) -> None:
        if self.registration is not None and self.options.on_started is not None:
            self.options.on_started()

    def finish(self, status: int, signal: int) -> None:
        if self.registration is None:
            return
        if self.control is not None:
            self.control.close()
        if self.metrics is not None:
            self.metrics.close()
        self.registration.finish(status, signal)
