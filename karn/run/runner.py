"""Running a built guest: host signals forwarded to it, its plug-ins (debug session,
instance record, sandbox) attached in order, the first thread started, limits watched
until the process ends, then the plug-ins finished and a crash reported.

The plug-ins' modules are imported only when the config asks for them: a plain run loads
nothing of karn/debug, karn/instance or karn/sandbox before its guest runs.
"""

from __future__ import annotations

import gc
import os

from karn import log
from karn.abi.signals import SI_USER, signal_name
from karn.hints import TYPE_CHECKING
from karn.kernel import tty
from karn.kernel.process import Task
from karn.kernel.signals import SigInfo
from karn.platform.vcpu import install_kick_handler
from karn.policy import LimitWatch

if TYPE_CHECKING:
    import signal

    from karn.debug.crash import CrashReport
    from karn.debug.session import DebugSession
    from karn.run.guest import Guest, RunPlugin
else:  # the C module: `signal` makes enums of its names at import, ~0.5 ms of start-up
    import _signal as signal

FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)
# A foreground run appears in `karn ps` once it has run this long: short runs skip the
# ~15 ms of registering (imports, socket, files) that nobody could have used.
LISTED_AFTER = 0.05


def run(guest: Guest) -> int:
    """Run the guest to its end; the exit status a shell would see."""
    return Runner(guest).run()


def _collect_from_now() -> None:
    """Turn the cycle collector back on if start-up turned it off (karn/cli/main.py),
    leaving what start-up made (modules, the guest's set-up) out of its walks for good."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


class Runner:
    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.plugins: list[RunPlugin] = []  # attached, in order; finished in that order
        self.debug: DebugSession | None = None  # its syscall history goes in a crash report

    def run(self) -> int:
        """Start the main thread, wait for the process to end, report how it ended."""
        guest, config, proc = self.guest, self.guest.config, self.guest.process
        if config.debug is not None and config.debug.any():
            from karn.debug.session import DebugSession

            self.debug = DebugSession(config.debug)
            self._attach(self.debug)
        install_kick_handler()
        forwarded = {sig: signal.signal(sig, self._forward_signal)
                     for sig in FORWARDED_SIGNALS + tty.host_signals()}
        if config.instance is not None:  # -d, --name, --metrics: listed from the start
            from karn.instance.monitor import MonitorInstance

            self._attach(MonitorInstance(config.instance))
        try:
            if config.sandbox:  # after set-up, before the guest runs
                from karn.sandbox.jail import Jail

                self._attach(Jail())
            # the watch opens what it reads before the guest can use up the monitor's fds
            watch = LimitWatch(proc, config.policy, config.memory)
            proc.crash_reporter = self._report_forked_crash
            proc.limit_watch = watch  # forked monitors watch their own (kernel/fork.py)
            main = Task(proc, proc.pid, None)
            main.comm = os.path.basename(guest.image.execfn)[:15]  # a script's own name
            _collect_from_now()
            proc.start_task(main, {"rip": guest.image.rip, "rsp": guest.image.rsp}, 0)
            for plugin in self.plugins:
                plugin.started()
            if config.instance is None and not proc.done.wait(LISTED_AFTER):
                self._attach_unlisted()
            while not proc.done.wait(watch.tick):
                watch.check()
                if guest.time_page is not None:
                    guest.time_page.resync()  # at most once a second
        finally:
            # The guest has ended (or karn was asked twice): a further Ctrl-C or SIGTERM
            # must not cut the write-back, the trace summary or the instance's last record.
            for sig in forwarded:
                signal.signal(sig, signal.SIG_IGN)
            try:
                self._finish()
            finally:
                for sig, previous in forwarded.items():
                    signal.signal(sig, previous)
        if proc.internal_failure is not None:
            raise proc.internal_failure
        self._report_fatal_signal()
        return proc.exit_status if proc.exit_status is not None else 0

    def _finish(self) -> None:
        guest, proc = self.guest, self.guest.process
        if proc.link is not None:  # it forked: the other processes end before the run
            from karn.kernel.coordinator import LocalLink  # (their shared tmpfs goes)

            assert isinstance(proc.link, LocalLink)
            proc.link.coordinator.end_run()
        mm = guest.mm
        if mm.shared_files:  # dirty shared pages reach their files at exit
            from karn.kernel.sys_mm import write_back

            write_back(proc.mem, mm, 0, mm.region.user_end, forget=True)
        guest.machine.ended()
        guest.net.close()  # before a plug-in tells anyone the run ended: ports are free
        guest.fs.close()  # the shared tmpfs directory
        status = proc.exit_status
        if proc.internal_failure is not None or status is None:
            status = 125
        for plugin in self.plugins:
            plugin.finish(status, proc.fatal_signal)

    def _attach(self, plugin: RunPlugin) -> None:
        plugin.attach(self.guest)
        self.plugins.append(plugin)

    def _attach_unlisted(self) -> None:
        """A foreground run registers for `karn ps` late (it gets no started()); if the
        guest has used up the monitor's fds by then, the import itself fails, and the run
        goes on unlisted (as MonitorInstance.attach does when it cannot register)."""
        try:
            from karn.instance.monitor import MonitorInstance
            from karn.instance.options import InstanceOptions

            self._attach(MonitorInstance(InstanceOptions()))
        except OSError as err:
            log.debug("not registered: %s", err)

    def _forward_signal(self, signum: int, frame: object) -> None:
        """Host signals to karn (Ctrl-C, kill) go to the guest, as to a process."""
        proc = self.guest.process
        if proc.done.is_set():  # it has ended: the run is finishing, nothing to interrupt
            return
        if proc.exit_status is not None:  # asked twice: the guest is not leaving, stop now
            raise KeyboardInterrupt
        if tty.is_terminal_signal(signum):  # typed, or a resize: the foreground group's
            tty.deliver_terminal_signal(proc, signum)
            return
        proc.signal_process(SigInfo.from_sender(signum, SI_USER, 0))

    def _report_forked_crash(self) -> None:
        """A forked process's report, made in its own monitor (by this runner's copy
        there: the guest's memory and objects are the forked process's now); the
        syscall history is the first process's, so it is left out."""
        proc = self.guest.process
        self._report_fatal_signal(f"process {proc.pid} ({self.guest.program})")

    def _report_fatal_signal(self, label: str | None = None) -> None:
        proc, entry = self.guest.process, label or self.guest.program
        fault, snapshot = proc.crash_fault, proc.fatal_snapshot
        if fault is not None:
            from karn.debug.crash import classify

            self._report_crash(classify(fault), entry, label is None)
        elif snapshot is not None:
            from karn.debug.crash import signal_report

            self._report_crash(signal_report(proc.fatal_signal, snapshot.regs,
                                             snapshot.fs_base), entry, label is None)
        elif proc.fatal_core:
            name = signal_name(proc.fatal_signal)
            os.write(2, f"karn: {entry} terminated by {name}\n".encode())

    def _report_crash(self, report: CrashReport, entry: str, first: bool) -> None:
        from karn.debug.crash import CrashContext, format_report

        history = None
        if first and self.debug is not None:
            history = list(self.debug.history.records)
        symbolizer = self.guest.symbolizer()
        context = CrashContext(self.guest.mem, symbolizer, history)
        text = format_report(report, entry, symbolizer.symbolize, context)
        os.write(2, (text + "\n").encode())
