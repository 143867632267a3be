"""`karn daemon`: a resident karn that starts runs by forking itself.

Most of a `karn run`'s start-up is the interpreter importing karn (~150 modules); a run
itself, once imported, takes ~20 ms. The daemon imports everything a run needs once, then
for each `karn run` of its own user (karn/cli/daemon_client.py) forks a child that takes
the client's standard streams, working directory, environment, umask and resource limits,
starts a session of its own (the daemon's terminal signals are not the run's) and runs the
command line as an in-process `karn run` would. The client forwards its signals to that
child and exits with its status, which the daemon reports. A client that goes away kills
its run, as killing an in-process karn kills its guest.

It declines (the client then runs in-process) a run with a terminal (-t) or detached
(-d), and any run once karn's sources have changed since it started. The daemon itself
stays single-threaded (it forks) and unconfined; each run confines itself.
"""

from __future__ import annotations

import gc
import importlib
import os
import resource
import select
import signal
import socket
import sys
import time
import traceback

from karn.cli import daemon_client as wire
from karn.errors import KarnError, UsageError
from karn.hints import TYPE_CHECKING
from karn.instance.paths import daemon_socket

if TYPE_CHECKING:
    import argparse
    from types import SimpleNamespace

# What a run may import, imported once: the packages below, whole.
PRELOADED = ("karn.abi", "karn.cli.run", "karn.debug", "karn.image", "karn.instance",
             "karn.kernel", "karn.loader", "karn.platform", "karn.policy", "karn.run",
             "karn.sandbox")
CLIENT_TIMEOUT = 5.0  # seconds a connected client has to send its request
NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
CREDENTIALS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb",
               "NoNewPrivs", "Seccomp", "Seccomp_filters")
# limits under which an in-process run would have made its VM: one made ahead is not used
AHEAD_LIMITS = (resource.RLIMIT_AS, resource.RLIMIT_DATA, resource.RLIMIT_MEMLOCK)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "daemon",
        help="serve `karn run` from a resident, pre-imported karn (faster start-up)",
        description="Keep karn imported and start each `karn run` of this user by forking "
        "it: start-up without the interpreter's imports. Runs in the foreground until "
        "Ctrl-C or `karn daemon --stop`; `karn run` uses it while it runs (KARN_DAEMON=0 "
        "turns that off) and runs in-process otherwise, and for -t and -d runs.")
    p.add_argument("--stop", action="store_true", help="stop the running daemon")
    p.add_argument("--status", action="store_true", help="say whether a daemon is running")
    p.set_defaults(func=cmd_daemon)


def cmd_daemon(args: argparse.Namespace) -> int:
    path = daemon_socket()
    if args.stop or args.status:
        return _control(path, "stop" if args.stop else "status")
    return Daemon(path).serve()


def _control(path: str, what: str) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        print(f"no karn daemon at {path}")
        return 1 if what == "stop" else 3
    with sock:
        wire.send(sock, (what,))
        try:
            message, _ = wire.receive(sock)
        except (EOFError, OSError):
            raise KarnError(f"the daemon at {path} did not answer") from None
    _, pid, served, runs = message
    state = "stopping" if what == "stop" else "running"
    print(f"karn daemon pid {pid} at {path}: {state}; {served} runs served; "
          f"running: {' '.join(map(str, runs)) or 'none'}")
    return 0


class Daemon:
    def __init__(self, path: str) -> None:
        self.path = path
        self.runs: dict[int, socket.socket] = {}  # run pid -> its client's connection
        # connections accepted whose request has not come yet: fd -> (it, deadline)
        self.pending: dict[int, tuple[socket.socket, float]] = {}
        self.spare: tuple[int, socket.socket] | None = None  # a forked child waiting
        self.stopping = False
        self.served = 0
        self.sources: list[tuple[str, int, int]] = []  # karn's, as imported
        self.wake = (-1, -1)  # the signal wake-up pipe
        self.listener = self._listen()

    def _listen(self) -> socket.socket:
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        except OSError as err:
            raise KarnError(f"cannot make {os.path.dirname(self.path)}: {err.strerror}"
                            ) from None
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(self.path)
            raise UsageError(f"a karn daemon already serves {self.path}")
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        except OSError as err:  # (a path too long for a socket has no strerror)
            raise KarnError(f"cannot listen at {self.path}: {err.strerror or err}") from None
        finally:
            probe.close()
        try:
            os.unlink(self.path)  # a stale socket: nobody listens
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)  # the socket is the user's alone
        try:
            listener.bind(self.path)
        except OSError as err:  # (a path too long for a socket has no strerror)
            raise KarnError(f"cannot listen at {self.path}: {err.strerror or err}") from None
        finally:
            os.umask(old)
        listener.listen(64)
        return listener

    def serve(self) -> int:
        self._preload()
        wake_r, wake_w = self.wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # (wakes the poll)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        sys.stderr.write(f"karn: daemon pid {os.getpid()} serving `karn run` at {self.path}\n")
        try:
            self.spare = self._fork_spare()
            self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(-1)
            os.close(wake_r)
            os.close(wake_w)
            self._close_listener()
        return 0

    def _stop(self, *_: object) -> None:
        self.stopping = True

    def _preload(self) -> None:
        for name in _modules_of(PRELOADED):
            try:
                importlib.import_module(name)
            except Exception:  # an optional part's dependency missing: imported lazily
                pass
        for module in list(sys.modules.values()):
            source = getattr(module, "__file__", None) or ""
            if module.__name__.startswith("karn") and source.endswith(".py"):
                st = os.stat(source)
                self.sources.append((source, st.st_mtime_ns, st.st_size))
        gc.collect()
        gc.freeze()  # the runs' copies of these objects stay shared

    def _loop(self, wake: int) -> None:
        poller = select.poll()
        poller.register(self.listener, select.POLLIN)
        poller.register(wake, select.POLLIN)
        accepting = True
        while True:
            if accepting and self.stopping:  # no new runs; the ones going may end
                accepting = False
                poller.unregister(self.listener)
                self._close_listener()
                if self.spare is not None:
                    self.spare[1].close()  # it ends at this end of its channel
                    self.spare = None
                for conn, _ in self.pending.values():  # they go in-process
                    poller.unregister(conn)
                    conn.close()
                self.pending.clear()
            if not accepting and not self.runs:
                return  # (checked before waiting: nothing may come to wake the poll)
            for fd, _ in poller.poll(self._time_left(poller)):
                if fd == wake:
                    os.read(wake, 4096)
                    self._reap(poller)
                elif accepting and fd == self.listener.fileno():
                    self._accept(poller)
                elif fd in self.pending:
                    conn = self.pending.pop(fd)[0]
                    poller.unregister(conn)
                    self._request(conn, poller)
                else:
                    self._client_left(fd, poller)

    def _time_left(self, poller: select.poll) -> int | None:
        """Milliseconds to the next pending client's deadline (None: none pending); those
        past it are dropped (the client goes in-process when its own wait ends)."""
        now = time.monotonic()
        for fd, (conn, deadline) in list(self.pending.items()):
            if deadline <= now:
                del self.pending[fd]
                poller.unregister(conn)
                conn.close()
        if not self.pending:
            return None
        return max(1, int((min(d for _, d in self.pending.values()) - now) * 1000) + 1)

    def _close_listener(self) -> None:
        if self.listener.fileno() >= 0:
            self.listener.close()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _fork_spare(self) -> tuple[int, socket.socket] | None:
        """A child forked ahead of the next run: forking and its first page faults are
        not in a run's start-up. None if the host refuses (no fds, no processes left):
        the runs asked for meanwhile go in-process."""
        try:
            ours, its = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as err:
            sys.stderr.write(f"karn: daemon: cannot make a spare: {err.strerror}\n")
            return None
        try:
            pid = os.fork()
        except OSError as err:
            sys.stderr.write(f"karn: daemon: cannot fork a spare: {err.strerror}\n")
            ours.close()
            its.close()
            return None
        if pid == 0:
            ours.close()
            self._child(its)
        its.close()
        return pid, ours

    def _accept(self, poller: select.poll) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:  # (out of fds: the client waits, or its connect fails)
            return
        if wire.peer(conn)[1] != os.geteuid():
            conn.close()
            return
        # its request is read once it has come: a client that connects and sends nothing
        # holds up no other (the loop is single-threaded)
        self.pending[conn.fileno()] = (conn, time.monotonic() + CLIENT_TIMEOUT)
        poller.register(conn, select.POLLIN)

    def _request(self, conn: socket.socket, poller: select.poll) -> None:
        """A client's request has begun to arrive: take it (the rest within
        CLIENT_TIMEOUT) and answer, serve or decline it."""
        conn.settimeout(CLIENT_TIMEOUT)
        try:
            message, fds = wire.receive(conn)
        except (EOFError, OSError):
            conn.close()
            return
        try:
            if message[0] in ("stop", "status"):
                self.stopping = self.stopping or message[0] == "stop"
                _answer(conn, ("daemon", os.getpid(), self.served, sorted(self.runs)))
                conn.close()
            elif message[0] == "run" and len(fds) == 4:
                if self.spare is None:  # runs at once: the spare is taken
                    self.spare = self._fork_spare()
                if self.spare is None:
                    conn.close()  # the client runs in-process
                else:
                    self._hand_over(conn, message, fds, poller)
            else:
                conn.close()
        finally:
            for fd in fds:  # before the next spare is forked: the client's, not its
                os.close(fd)

    def _hand_over(self, conn: socket.socket, message: tuple, fds: list[int],
                   poller: select.poll) -> None:
        assert self.spare is not None
        (pid, channel), self.spare = self.spare, None
        conn.settimeout(None)  # blocking before it is shared: O_NONBLOCK is the file's
        try:
            wire.send(channel, message, (*fds, conn.fileno()))
        except OSError:
            os.kill(pid, signal.SIGKILL)  # (reaped later; a new spare then)
            conn.close()
            return
        finally:
            channel.close()
        self.served += 1
        self.runs[pid] = conn
        poller.register(conn, select.POLLRDHUP)  # its end only: what it sends is the run's
        if not _answer(conn, ("pid", pid)):
            os.kill(pid, signal.SIGKILL)  # the client went away already

    def _reap(self, poller: select.poll) -> None:
        lost_spare = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if self.spare is not None and pid == self.spare[0]:  # died waiting: the
                self.spare[1].close()  # next run forks one (not at once: it might die
                self.spare = None  # again at once, and again)
                lost_spare = True
            conn = self.runs.pop(pid, None)
            if conn is not None:
                code = os.waitstatus_to_exitcode(status)  # (the run said it, unless killed)
                _answer(conn, ("exit", code) if code >= 0 else ("signal", -code))
                poller.unregister(conn)
                conn.close()
        # The next run's spare, made once this one has ended (not beside a run, whose
        # start-up it would slow on a small host) or at once if none is going.
        if self.spare is None and not (self.stopping or self.runs or lost_spare):
            self.spare = self._fork_spare()

    def _client_left(self, fd: int, poller: select.poll) -> None:
        """The client's end hung up (what it sends goes to the run): it has the status the
        run sent, or went away, and the run ends with it."""
        for pid, conn in self.runs.items():
            if conn.fileno() == fd:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                poller.unregister(conn)
                conn.close()
                del self.runs[pid]  # reaped later, as any child
                return

    def _child(self, channel: socket.socket) -> None:
        """The spare, then the run it is given: never returns."""
        status, conn = 1, None
        try:
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self.listener.close()
            for other in self.runs.values():
                other.close()
            # Only the streams and the channel: not the wake-up pipe, not what the daemon
            # inherited, nor a request's descriptors the daemon held when it forked this.
            os.closerange(3, channel.fileno())
            os.closerange(channel.fileno() + 1, os.sysconf("SC_OPEN_MAX"))
            os.setsid()
            _make_ahead()
            try:
                message, fds = wire.receive(channel)
            except (EOFError, OSError):
                status = 0  # the daemon stops
                return
            channel.close()
            conn = socket.socket(fileno=fds.pop())
            conn.settimeout(None)  # (Python takes a non-blocking fd's mode as timeout 0)
            status = self._run(conn, message, fds)
        except SystemExit as leaving:  # argparse's usage errors, --help
            code = leaving.code
            status = code if isinstance(code, int) else 0 if code is None else 1
        except KeyboardInterrupt:  # a Ctrl-C the client passed on before main's handling
            sys.stderr.write("karn: interrupted\n")
            status = 130
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
                if conn is not None:
                    _answer(conn, ("exit", status))
            finally:
                os._exit(status)

    def _run(self, conn: socket.socket, message: tuple, fds: list[int]) -> int:
        _, identity, argv0, argv, env, umask, limits, (nice, cpus) = message
        for target, fd in enumerate(fds[:3]):  # first: what follows speaks there
            os.dup2(fd, target)
        os.fchdir(fds[3])
        for fd in fds:
            os.close(fd)
        if tuple(identity) != wire.identity():
            return _decline(conn, "the daemon runs another karn or Python: running here")
        stale = [path for path, mtime, size in self.sources if _changed(path, mtime, size)]
        if stale:
            return _decline(conn, f"karn changed since the daemon started ({stale[0]}): "
                            "running here; restart it (karn daemon --stop; karn daemon)")
        different = _unlike(wire.peer(conn)[0])
        if different:
            return _decline(conn, f"this process's {different} differ from the daemon's: "
                            "running here")
        kvm_device = os.environ.get("KARN_KVM_DEVICE")
        os.environ.clear()
        os.environ.update(env)
        os.umask(umask)
        for which, (soft, hard) in limits:
            try:
                resource.setrlimit(which, (soft, hard))
            except (ValueError, OSError):
                return _decline(conn, f"the daemon cannot give its runs resource limit "
                                f"{which} {(soft, hard)}: running here")
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
            os.sched_setaffinity(0, cpus)
        except OSError:
            return _decline(conn, f"the daemon cannot give its runs nice {nice} or CPUs "
                            f"{cpus}: running here")
        if env.get("KARN_KVM_DEVICE") != kvm_device or any(
                resource.getrlimit(which)[0] != resource.RLIM_INFINITY for which in AHEAD_LIMITS):
            from karn.run.vmstart import discard_ahead

            discard_ahead()  # made for another device, or beyond the run's limits
        try:  # nothing has run yet: without its word, the client runs it in-process
            if wire.receive(conn)[0] != ("go",):
                return _decline(conn, "no go", tell=False)
        except (EOFError, OSError):
            return _decline(conn, "no go", tell=False)  # (a client that left hears none)
        sys.argv = [argv0, *argv]

        def vet(args: argparse.Namespace | SimpleNamespace) -> None:
            if args.command != "run" or args.tty or args.detach:
                os._exit(_decline(conn, "a terminal or detached run", tell=False))

        def leaving(status: int) -> None:  # before the run's own teardown
            _answer(conn, ("exit", status))

        from karn.cli.main import main

        return main(argv, vet, leaving)


def _unlike(pid: int) -> str:
    """What of process `pid`'s confinement differs from this one's: its namespaces, ids,
    capabilities, no_new_privs or seccomp (a run the daemon forks has the daemon's, so a
    process confined more than it must not get one); '' if nothing does."""
    try:
        for ns in NAMESPACES:
            if os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"):
                return "namespaces"
        if _credentials(pid) != _credentials("self"):
            return "ids, capabilities or seccomp filters"
    except OSError:
        return "namespaces (unreadable)"
    return ""


def _credentials(pid: int | str) -> list[str]:
    with open(f"/proc/{pid}/status") as f:
        return [line for line in f if line.split(":", 1)[0] in CREDENTIALS]


def _make_ahead() -> None:
    """While the spare waits: what a run of the default size will need first."""
    from karn.run.config import DEFAULT_MEMORY
    from karn.run.vmstart import make_ahead
    from karn.sandbox import seccomp
    from karn.sandbox.privileges import prepare_private_network_ahead

    try:
        make_ahead(DEFAULT_MEMORY)
        prepare_private_network_ahead()
        seccomp.compile_ahead()
    except Exception:  # noqa: BLE001 - only a head start: the run meets it and says so
        pass


def _modules_of(packages: tuple[str, ...]) -> list[str]:
    """The modules of these packages and of every directory below them (some have no
    __init__.py, which pkgutil would not walk)."""
    karn_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    names = []
    for package in packages:
        path = os.path.join(os.path.dirname(karn_dir), *package.split("."))
        if os.path.isfile(f"{path}.py"):
            names.append(package)
        for directory, subdirs, files in os.walk(path):
            subdirs[:] = [d for d in subdirs if d != "__pycache__"]
            prefix = os.path.relpath(directory, os.path.dirname(karn_dir)).replace("/", ".")
            names += [prefix if f == "__init__.py" else f"{prefix}.{f[:-3]}"
                      for f in sorted(files) if f.endswith(".py")]
    return names


def _changed(path: str, mtime: int, size: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return True
    return (st.st_mtime_ns, st.st_size) != (mtime, size)


def _decline(conn: socket.socket, why: str, tell: bool = True) -> int:
    """The client runs in-process instead; `tell`: it says why (a reason to act on)."""
    _answer(conn, ("declined", why, tell))
    conn.close()  # (no exit message after it)
    return 0


def _answer(conn: socket.socket, message: tuple) -> bool:
    try:
        wire.send(conn, message)
        return True
    except OSError:
        return False
