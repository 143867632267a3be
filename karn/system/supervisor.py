"""The system supervisor: starts the partitions, runs the channels, guards, schedule and
health monitor, and answers `karn system status/down` on its control socket.

One thread runs everything event-driven (a selector over the rejection-report sockets,
the partitions' output pipes and pidfds, and the control socket); the cyclic schedule
has its own thread, because window boundaries must not wait for it. Messages never pass
through here: each channel is a shared-memory ring between the monitors (channels.py),
with a guard process in between when the channel has a guard (guardproc.py).
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable

from karn.errors import UsageError
from karn.hints import Protocol
from karn.system import schedule, state
from karn.system.channels import LOG_WINDOW, ChannelRun
from karn.system.description import SystemDescription
from karn.system.health import decide, describe_exit
from karn.system.partition import STOP_GRACE, PartitionProcess, guard_command, monitor_command

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
OUTPUT_CHUNK = 65536
OUTPUT_BURST = 16  # chunks per readiness event
GUARD_RESTART = 0.1  # seconds before a guard process that ended is started again


class HasFileno(Protocol):
    def fileno(self) -> int: ...


class PartitionRun:
    """A partition's life across restarts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = "starting"  # running, restarting, halted, stopped
        self.process: PartitionProcess | None = None
        self.restarts = 0
        self.last_exit: int | None = None
        self.started = 0.0
        self.pending_line = b""
        self.log: state.RotatingLog | None = None


class Supervisor:
    def __init__(self, system: SystemDescription, echo: bool) -> None:
        self.system = system
        self.echo = echo  # foreground: partition output also on our stdout, prefixed
        self.dir = state.system_dir(system.name)
        self.sel = selectors.DefaultSelector()
        self.watched: dict[int, tuple[object, int, Callable[[int], None]]] = {}
        self.timers: list[tuple[float, int, Callable[[], None]]] = []
        self.timer_seq = 0
        self.parts = {name: PartitionRun(name) for name in system.partitions}
        self.channels = [ChannelRun(ch, self.event) for ch in system.channels]
        self.by_port: dict[tuple[str, str], ChannelRun] = {}
        for ch in self.channels:
            self.by_port[(ch.desc.source.partition, ch.desc.source.name)] = ch
            self.by_port[(ch.desc.dest.partition, ch.desc.dest.name)] = ch
        self.on_reports = {ch.name: self._reports_handler(ch) for ch in self.channels}
        self.guards: dict[str, PartitionProcess | None] = {
            ch.name: None for ch in self.channels if ch.guarded}
        self.cyclic: schedule.CyclicScheduler | None = None
        self.stopping = False
        self.failed = False  # the health monitor stopped the system, or a partition failed
        self.started = time.time()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.events: state.RotatingLog | None = None
        self.control: socket.socket | None = None
        self.realtime = False  # nice < 0 and real-time policies allowed (root, CAP_SYS_NICE)

    # -- set-up ------------------------------------------------------------------------
    def prepare(self) -> None:
        """State directory and control socket; errors before anything starts."""
        if state.is_running(self.system.name):
            raise UsageError(f"system {self.system.name} is already running")
        if self.system.schedule.policy == "priority":
            top = max(p.priority for p in self.system.partitions.values())
            schedule.raise_self(top + 1)  # fails here, clearly, without CAP_SYS_NICE
        os.makedirs(os.path.join(self.dir, state.LOGS), mode=0o700, exist_ok=True)
        for old in (state.STATUS, state.SOCKET):
            try:
                os.unlink(os.path.join(self.dir, old))
            except FileNotFoundError:
                pass
        self.events = state.RotatingLog(os.path.join(self.dir, state.EVENTS), state.EVENTS_MAX)
        for run in self.parts.values():
            run.log = state.RotatingLog(os.path.join(self.dir, state.LOGS, f"{run.name}.log"),
                                        state.PARTITION_LOG_MAX)
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.control.bind(os.path.join(self.dir, state.SOCKET))
        self.control.listen(16)
        self.control.setblocking(False)
        self._watch(self.control, READ, self._accept)
        self._watch(self.wake_r, READ, lambda _m: self._drain_wake())
        self.realtime = schedule.may_use_fifo()
        from karn.instance.registry import process_start_time

        meta = {"name": self.system.name, "file": self.system.path, "pid": os.getpid(),
                "pid_start": process_start_time(os.getpid()), "started": self.started}
        with open(os.path.join(self.dir, state.META), "w") as f:
            json.dump(meta, f)

    def event(self, text: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n"
        if self.events is not None:
            self.events.write(line.encode())
        if self.echo:
            sys.stderr.write(f"karn system: {text}\n")
            sys.stderr.flush()

    # -- the loop ----------------------------------------------------------------------
    def run(self, on_ready: Callable[[], None] | None = None) -> int:
        """Start every partition, serve until the system stops; the exit status."""
        for ch in self.channels:
            if ch.guarded:
                self._start_guard(ch)
        for name in self.parts:
            self._start(name)
        if self.system.schedule.policy == "cyclic":
            pinned = {c for p in self.system.partitions.values() for c in p.affinity}
            self.cyclic = schedule.CyclicScheduler(self.system.schedule, self._pid_of,
                                                   pinned, self.event)
            self.cyclic.start()
        self.event(f"system {self.system.name} up ({len(self.parts)} partitions, "
                   f"{self.system.schedule.policy} schedule)")
        self._after(LOG_WINDOW, self._summarise)
        if on_ready is not None:
            on_ready()
        try:
            while not self.stopping:
                self._step()
        finally:
            self._shutdown()
        return 1 if self.failed else 0

    def request_stop(self) -> None:
        """From a signal handler or the control socket: stop after this step."""
        self.stopping = True
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def _drain_wake(self) -> None:
        try:
            os.read(self.wake_r, 4096)
        except OSError:
            pass

    def _step(self) -> None:
        timeout = None
        if self.timers:
            timeout = max(0.0, self.timers[0][0] - time.monotonic())
        for key, mask in self.sel.select(timeout):
            entry = self.watched.get(key.fd)
            if entry is not None:
                entry[2](mask)
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, callback = heapq.heappop(self.timers)
            callback()

    def _summarise(self) -> None:
        """Rejections left out of the event log, each second."""
        for ch in self.channels:
            ch.summarise()
        self._after(LOG_WINDOW, self._summarise)

    def _after(self, delay_s: float, callback: Callable[[], None]) -> None:
        self.timer_seq += 1
        heapq.heappush(self.timers, (time.monotonic() + delay_s, self.timer_seq, callback))

    def _watch(self, obj: int | HasFileno, events: int, callback: Callable[[int], None]
               ) -> None:
        fd = obj if isinstance(obj, int) else obj.fileno()
        old = self.watched.get(fd)
        if old is not None and old[1] == events and old[2] is callback:
            return
        if not events:
            if old is not None:
                self.sel.unregister(fd)
                del self.watched[fd]
            return
        if old is None:
            self.sel.register(fd, events)
        else:
            self.sel.modify(fd, events)
        self.watched[fd] = (obj, events, callback)

    def _unwatch(self, obj: int | HasFileno) -> None:
        self._watch(obj, 0, lambda _m: None)

    # -- partitions --------------------------------------------------------------------
    def _pid_of(self, name: str) -> int | None:
        process = self.parts[name].process
        return process.pid if process is not None else None

    def _start(self, name: str) -> None:
        run = self.parts[name]
        part = self.system.partitions[name]
        specs, fds, socks, theirs = [], [], {}, []
        for port in part.ports.values():
            report = -1
            if port.direction == "in":  # the receiver reports rejections on a socket
                mine, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                mine.setblocking(False)
                socks[port.name], report = mine, other.fileno()
                theirs.append(other)
            spec, port_fds = self.by_port[(name, port.name)].endpoint(port, report)
            specs.append(spec)
            fds += port_fds
        try:
            process = PartitionProcess(monitor_command(part, specs), fds,
                                       os.path.dirname(self.system.path), socks)
        except OSError as err:
            self.event(f"partition {name}: cannot start: {err}")
            self._halt(run, failed=True)
            return
        finally:
            for sock in theirs:
                sock.close()
        run.process, run.state, run.started = process, "running", time.time()
        if part.affinity:
            schedule.set_affinity(process.pid, part.affinity)
        policy = self.system.schedule.policy
        if policy == "priority":
            schedule.set_realtime(process.pid, part.priority)
        elif policy == "cyclic" and self.realtime:
            schedule.set_nice(process.pid, schedule.WINDOW_NICE)  # owns its windows
        for port_name, sock in process.socks.items():
            ch = self.by_port[(name, port_name)]
            if not ch.guarded:  # else the guard process is the one that rejects
                ch.reports = sock
                self._watch(sock, READ, self.on_reports[ch.name])
        self._watch(process.output, READ, lambda _m: self._output(run))
        self._watch(process.pidfd, READ, lambda _m: self._exited(run))
        self.event(f"partition {name} started (pid {process.pid})")

    def _reports_handler(self, ch: ChannelRun) -> Callable[[int], None]:
        def handle(_mask: int) -> None:
            sock = ch.reports
            assert sock is not None  # watched only while attached
            if not ch.reports_readable():
                self._unwatch(sock)
                ch.reports = None
        return handle

    def _start_guard(self, ch: ChannelRun) -> None:
        """The guard process of a guarded channel; started again whenever it ends."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        mine.setblocking(False)
        into, out, fds = ch.guard_ends(theirs.fileno())
        try:
            process = PartitionProcess(guard_command(into, out), fds,
                                       os.path.dirname(self.system.path), {"": mine})
        except OSError as err:
            mine.close()
            self.event(f"channel {ch.name}: cannot start its guard process: {err}")
            return
        finally:
            theirs.close()
        self.guards[ch.name] = process
        if self.system.schedule.policy == "priority":  # beside the supervisor, above all
            schedule.set_realtime(process.pid, max(
                p.priority for p in self.system.partitions.values()) + 1)
        ch.reports = mine
        self._watch(mine, READ, self.on_reports[ch.name])
        self._watch(process.output, READ, lambda _m: self._guard_output(ch, process))
        self._watch(process.pidfd, READ, lambda _m: self._guard_exited(ch, process))

    def _guard_output(self, ch: ChannelRun, process: PartitionProcess) -> None:
        """What a guard process writes (only errors) goes to the event log, bounded."""
        try:
            data = os.read(process.output, OUTPUT_CHUNK)
        except OSError:
            data = b""
        if not data:
            self._unwatch(process.output)
            return
        for line in data.decode(errors="replace").splitlines()[-20:]:
            self.event(f"channel {ch.name}: guard process: {line[:400]}")

    def _guard_exited(self, ch: ChannelRun, process: PartitionProcess) -> None:
        status = process.proc.wait()
        self._release_guard(ch, process)
        if not self.stopping:
            self.event(f"channel {ch.name}: guard process {describe_exit(status)}; "
                       f"restarting it")
            self._after(GUARD_RESTART, lambda: None if self.stopping else self._start_guard(ch))

    def _release_guard(self, ch: ChannelRun, process: PartitionProcess) -> None:
        self._close_process(process, [(process.socks[""], ch)])
        self.guards[ch.name] = None

    def _close_process(self, process: PartitionProcess,
                       reporters: list[tuple[socket.socket, ChannelRun]]) -> None:
        """An ended partition or guard process: the last rejection reports on its sockets
        read, its fds no longer watched, its handles closed."""
        for sock, ch in reporters:
            if ch.reports is sock:
                ch.reports_readable()  # its last reports
                self._unwatch(sock)
                ch.reports = None
        for fd in (process.output, process.pidfd):
            if fd >= 0:
                self._unwatch(fd)
        process.close()

    def _output(self, run: PartitionRun, drain: bool = False) -> None:
        """Copy what the partition wrote to its log (and our stdout, in the foreground):
        a bounded amount per event, so a chatty partition cannot hold up the channels;
        everything (drain) once it has ended."""
        process = run.process
        if process is None or process.output < 0:
            return
        for _ in itertools.count() if drain else range(OUTPUT_BURST):
            try:
                data = os.read(process.output, OUTPUT_CHUNK)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._unwatch(process.output)
                return
            self._copy_output(run, data)

    def _copy_output(self, run: PartitionRun, data: bytes) -> None:
        assert run.log is not None
        run.log.write(data)
        if self.echo:
            text = run.pending_line + data
            *lines, run.pending_line = text.split(b"\n")
            for line in lines:
                sys.stdout.buffer.write(f"{run.name} | ".encode() + line + b"\n")
            sys.stdout.flush()

    def _exited(self, run: PartitionRun) -> None:
        process = run.process
        assert process is not None
        self._output(run, drain=True)  # what it wrote last
        status = process.proc.wait()
        run.last_exit = status
        self._release(run)
        if self.stopping:
            return
        decision = decide(self.system.partitions[run.name].health, status, run.restarts)
        self.event(f"partition {run.name} {decision.reason}: {decision.action}")
        if decision.action == "restart":
            run.state = "restarting"
            run.restarts += 1
            self._after(decision.delay_ms / 1000, lambda: self._restart(run))
        elif decision.action == "halt":
            self._halt(run, failed=status != 0)
        else:
            self.event(f"health monitor: stopping system {self.system.name} "
                       f"(partition {run.name} {describe_exit(status)})")
            self.failed = self.failed or status != 0
            self.request_stop()

    def _restart(self, run: PartitionRun) -> None:
        if not self.stopping and run.state == "restarting":
            self._start(run.name)

    def _halt(self, run: PartitionRun, failed: bool) -> None:
        run.state = "halted"
        self.failed = self.failed or failed
        if all(r.state in ("halted", "stopped") for r in self.parts.values()):
            self.event(f"every partition has ended: system {self.system.name} stops")
            self.request_stop()

    def _release(self, run: PartitionRun) -> None:
        """Detach a partition's ports from their channels and close its process handles."""
        process = run.process
        if process is None:
            return
        self._close_process(process, [(sock, self.by_port[(run.name, port)])
                                      for port, sock in process.socks.items()])
        run.process = None

    # -- control -----------------------------------------------------------------------
    def _accept(self, _mask: int) -> None:
        assert self.control is not None
        try:
            conn, _ = self.control.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        buf = bytearray()

        def readable(_m: int) -> None:
            try:
                chunk = conn.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            buf.extend(chunk)
            if chunk and b"\n" not in buf and len(buf) < 65536:
                return
            self._unwatch(conn)
            self._answer(conn, bytes(buf))

        self._watch(conn, READ, readable)

    def _answer(self, conn: socket.socket, data: bytes) -> None:
        try:
            op = json.loads(data or b"{}").get("op")
        except (ValueError, AttributeError):
            op = None
        if op == "status":
            reply = self.status()
        elif op == "down":
            reply = {"ok": True}
            self.event("down requested")
            self.request_stop()
        else:
            reply = {"error": f"unknown request {op!r}"}
        try:
            conn.setblocking(True)
            conn.settimeout(2)
            conn.sendall(json.dumps(reply).encode() + b"\n")
        except OSError:
            pass
        conn.close()

    def by_name(self, name: str) -> ChannelRun:
        return next(ch for ch in self.channels if ch.name == name)

    def status(self) -> dict:
        parts = []
        for run in self.parts.values():
            parts.append({"name": run.name, "state": run.state, "restarts": run.restarts,
                          "pid": run.process.pid if run.process else None,
                          "started": run.started or None, "last_exit": run.last_exit})
        out: dict[str, object] = {"name": self.system.name, "file": self.system.path,
               "state": "stopping" if self.stopping else "running", "pid": os.getpid(),
               "schedule": self.system.schedule.policy, "uptime": time.time() - self.started,
               "partitions": parts, "channels": [ch.counters() for ch in self.channels]}
        if self.cyclic is not None:
            out["cyclic"] = self.cyclic.stats()
        return out

    # -- shutdown ----------------------------------------------------------------------
    def _shutdown(self) -> None:
        self.stopping = True
        if self.cyclic is not None:
            self.cyclic.stop()
        live = [(r, r.process) for r in self.parts.values() if r.process is not None]
        guards = [(self.by_name(n), p) for n, p in self.guards.items() if p is not None]
        for _, process in live + guards:
            process.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for run, process in live:
            try:
                process.proc.wait(max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - TimeoutExpired: it did not stop in time
                process.kill()
                process.proc.wait()
            self._output(run, drain=True)
            run.last_exit = process.proc.returncode
            self._release(run)
        for ch, process in guards:
            try:
                process.proc.wait(max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 - TimeoutExpired: it did not stop in time
                process.kill()
                process.proc.wait()
            self._release_guard(ch, process)
        for run in self.parts.values():
            if run.state != "halted":
                run.state = "stopped"
        for ch in self.channels:
            ch.summarise(ended=True)
        final = self.status()
        final["state"] = "stopped"
        with open(os.path.join(self.dir, state.STATUS), "w") as f:
            json.dump(final, f)
        self.event(f"system {self.system.name} down")
        meta_path = os.path.join(self.dir, state.META)
        meta = state.read_json(meta_path) or {}
        meta["stopped"] = time.time()
        with open(meta_path, "w") as f:
            json.dump(meta, f)
        for ch in self.channels:
            ch.close()
        if self.control is not None:
            self.control.close()
            try:
                os.unlink(os.path.join(self.dir, state.SOCKET))
            except FileNotFoundError:
                pass


def serve(system: SystemDescription, echo: bool,
          on_ready: Callable[[], None] | None = None) -> int:
    """Run a system until it stops; SIGINT/SIGTERM/SIGHUP stop it in order."""
    sup = Supervisor(system, echo)
    sup.prepare()
    previous = {sig: signal.signal(sig, lambda *_: sup.request_stop())
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        return sup.run(on_ready)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
