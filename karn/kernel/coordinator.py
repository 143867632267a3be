"""The first monitor's process table server (docs/design/processes.md, section 7.1).

Made at the first fork of pid 1: the table (proctable.py) under one lock, a thread that
answers the other monitors' links, and LocalLink for pid 1's own calls. News for a
process go to its monitor's link (or straight to pid 1's Process). A link that reaches
end of file without its process having said how it ended is a monitor that died (the
host killed it): its process ends as by SIGKILL.

The first monitor ignores SIGCHLD at the host level (its forked monitors are reaped by
the host kernel; guest exit statuses travel over the links) and is made a child
subreaper, so monitors orphaned by an ending parent monitor are reaped here too.
"""

from __future__ import annotations

import _socket as socket
import _thread
import ctypes
import errno
import os
import select
import threading
import time

from karn import log
from karn.abi.errno import SyscallError
from karn.abi.signals import SI_KERNEL, SI_USER, SIGCONT, SIGHUP, SIGKILL
from karn.hints import TYPE_CHECKING, Any
from karn.kernel import tty
from karn.kernel.link import Link, decode_message, receive_message, send_message
from karn.kernel.proctable import ProcTable, signal_wstatus

if TYPE_CHECKING:
    import signal

    from karn.kernel.process import Process
else:  # the C module: `signal` makes enums of its names at import
    import _signal as signal

PR_SET_CHILD_SUBREAPER = 36
QUERY_TIMEOUT = 5.0  # seconds a monitor has to answer for one of its /proc files
END_TIMEOUT = 10.0  # seconds the other monitors have to end after pid 1


class Coordinator:
    def __init__(self, proc: Process, pids_limit: int | None) -> None:
        self.proc = proc
        leader = proc.tasks.get(proc.pid)
        self.table = ProcTable(proc.pid, proc._next_tid, pids_limit,
                               leader.comm.decode(errors="replace") if leader else "")
        self.table.entries[proc.pid].threads = max(len(proc.tasks) - 1, 0)
        self.lock = threading.Lock()
        # epoll: a link registered while the server waits is seen by that wait, so a fork
        # need not wake the server (a thread hand-over on its critical path)
        self._epoll = select.epoll()  # the links' fds, to their (pid, socket)
        self._polled: dict[int, tuple[int, socket.socket]] = {}
        self._socks: dict[int, socket.socket] = {}  # pid -> its monitor's link
        self._ended: set[int] = set()  # processes that said how they ended
        self._watchers: dict[int, set[int]] = {}  # pid -> processes with a pidfd to it
        # /proc reads asked of other monitors: query id -> (answered, answer, of pid)
        self._queries: dict[int, tuple[threading.Event, list, int]] = {}
        self._next_query = 0
        _reap_host_children()
        # Not threading.Thread: its start() waits until the thread runs (a hand-over on the
        # first fork's critical path)
        _thread.start_new_thread(self._serve, ())

    # -- requests ----------------------------------------------------------------------

    def handle(self, caller: int, op: str, args: list) -> Any:
        """One request of process `caller`; news are sent after the lock is dropped."""
        if op == "proc_file":
            return self._proc_file(int(args[0]), str(args[1]))
        news: list[tuple[int, tuple]] = []
        with self.lock:
            result = self._handle(caller, op, args, news)
        for pid, message in news:
            self.send(pid, message)
        return result

    def _handle(self, caller: int, op: str, args: list, news: list) -> Any:
        table = self.table
        if op == "new_process":
            return table.new_process(caller, bool(args[0]))
        if op == "new_tid":
            return table.new_thread(caller)
        if op == "thread_ended":
            table.thread_ended(caller)
            return None
        if op == "forget":
            table.forget(caller, args[0])
            return None
        if op == "exit":
            self._ended.add(caller)
            self._exited(caller, args[0], news)
            self._unanswerable(caller)
            return None
        if op == "changed":  # a job-control stop (its signal) or continue (0)
            self._job_state(caller, args[0], news)
            return None
        if op == "exec":
            parent = table.execed(caller, str(args[0]) if args else "")
            if parent:
                news.append((parent, ("released", caller)))
            return None
        if op == "wait":
            return table.wait(caller, *args)
        if op == "reap":
            entry = table.entries.get(args[0])
            if entry is not None and entry.zombie and entry.ppid == caller:
                table.reap(args[0])
            return None
        if op == "kill":
            pid, signo = args
            targets = table.kill_targets(caller, pid)
            for target in targets:
                if signo == SIGCONT:  # first: the parent hears it before the child runs
                    self._continued(target, news)
                if target != caller and signo:
                    news.append((target, ("signal", 0, signo, SI_USER, caller)))
            return caller in targets
        if op == "tgkill":
            tgid, tid, signo, code = args
            if table.get(tgid).zombie:
                raise SyscallError(errno.ESRCH)
            if signo == SIGCONT:
                self._continued(tgid, news)
            if signo:
                news.append((tgid, ("signal", tid, signo, code, caller)))
            return None
        if op == "watch":  # a pidfd: news when it ends; True when it has ended already
            if table.get(args[0]).zombie:
                return True
            self._watchers.setdefault(args[0], set()).add(caller)
            return False
        if op == "pids":  # the processes, zombies included, for a listing of /proc
            return sorted(table.entries)
        if op == "answer":  # a monitor's content of one of its /proc files
            qid, ok, content = args
            waiting = self._queries.get(qid)
            if waiting is not None:
                waiting[1].append((ok, content))
                waiting[0].set()
            return None
        if op == "setpgid":
            table.setpgid(caller, *args)
            return None
        if op == "setsid":
            return table.setsid(caller)
        if op == "getpgid":
            return table.getpgid(caller, args[0])
        if op == "orphaned":  # whether the caller's process group is orphaned
            return table.orphaned_group(table.get(caller).pgid)
        if op == "getsid":
            return table.getsid(caller, args[0])
        if op == "tcgetpgrp":
            return tty.table_getpgrp(table, caller)
        if op == "tty_foreground":
            return tty.table_in_foreground(table, caller)
        if op == "tcsetpgrp":
            tty.table_setpgrp(table, caller, args[0])
            return None
        raise SyscallError(errno.EINVAL)

    def _job_state(self, pid: int, stop_signal: int, news: list) -> None:
        event = self.table.changed(pid, stop_signal)
        if event is not None:
            news.append((event.parent, ("child_state", event.child, event.wstatus)))

    def _continued(self, pid: int, news: list) -> None:
        """A SIGCONT sent: the process counts as continued from now, as Linux's kill
        marks it before returning (its monitor's own report comes later and finds it
        done), so the sender's wait with WCONTINUED sees it at once. Its news go before
        the signal's: the parent learns of the continue before anything the child does
        once it runs (its exit)."""
        self._job_state(pid, 0, news)

    def _exited(self, pid: int, wstatus: int, news: list) -> None:
        event, orphans = self.table.exited(pid, wstatus)
        for watcher in sorted(self._watchers.pop(pid, ())):
            news.append((watcher, ("exited", pid)))
        if event is not None:
            news.append((event.parent, ("child", event.child, event.wstatus)))
        for orphan in orphans:
            news.append((orphan, ("reparent", 1)))
            entry = self.table.entries.get(orphan)
            if entry is not None and entry.zombie:  # an orphaned zombie: init may reap it
                news.append((1, ("child", orphan, entry.wstatus)))
        for group in self.table.stranded_groups():
            for member in self.table.group_members(group):
                news.append((member, ("signal", 0, SIGHUP, SI_KERNEL, 0)))
                self._continued(member, news)
                news.append((member, ("signal", 0, SIGCONT, SI_KERNEL, 0)))

    def _proc_file(self, pid: int, name: str) -> str:
        """The content of /proc/PID/name (latin-1 text), asked of the monitor running
        PID: its own state says it best. ESRCH for a process that has ended or whose
        monitor does not answer in time (a wedged monitor must not wedge the asker)."""
        if pid == self.proc.pid:
            from karn.kernel.fs.procfiles import pid_entry

            return pid_entry(self.proc, name).decode("latin-1")
        with self.lock:
            entry = self.table.entries.get(pid)
            if entry is not None and entry.zombie:  # its monitor is gone: the table's word
                from karn.kernel.fs.procfiles import zombie_entry

                return zombie_entry(entry, name).decode("latin-1")
            if entry is None or pid not in self._socks:
                raise SyscallError(errno.ESRCH)
            self._next_query += 1
            qid = self._next_query
            box: list = []
            done = threading.Event()
            self._queries[qid] = (done, box, pid)
        try:
            self.send(pid, ("query", qid, name))
            done.wait(QUERY_TIMEOUT)
        finally:
            with self.lock:
                self._queries.pop(qid, None)
        if box:
            ok, content = box[0]
            if not ok:
                raise SyscallError(content)
            return content
        with self.lock:  # no answer: it ended meanwhile (its exit came after the
            entry = self.table.entries.get(pid)  # query went out), or it is wedged
            if entry is not None and entry.zombie:
                from karn.kernel.fs.procfiles import zombie_entry

                return zombie_entry(entry, name).decode("latin-1")
        raise SyscallError(errno.ESRCH)

    def _unanswerable(self, pid: int) -> None:
        """pid's monitor has ended: the /proc reads waiting for its answer look at the
        table again now (the process is a zombie) instead of at their timeout."""
        for done, _box, asked in list(self._queries.values()):
            if asked == pid:
                done.set()

    # -- links -------------------------------------------------------------------------

    def attach(self, pid: int, sock: socket.socket) -> None:
        sock.setblocking(False)
        with self.lock:
            self._socks[pid] = sock
        self._polled[sock.fileno()] = (pid, sock)
        self._epoll.register(sock.fileno(), select.EPOLLIN)

    def close_in_child(self) -> None:
        """In a forked monitor: close the server's sockets (copies of the first monitor's;
        a link kept open here would never reach end of file)."""
        for sock in list(self._socks.values()):
            sock.close()
        self._epoll.close()

    def end_run(self, timeout: float = END_TIMEOUT) -> bool:
        """pid 1 has ended, and every other process ends with it, as a pid namespace's
        when its init dies: each link is shut, so its monitor ends as by SIGKILL. Waits,
        up to timeout, until no forked monitor is left on the host (SIGCHLD is ignored:
        wait says ECHILD once the last child, adopted ones included, is gone), so nothing
        of the run outlives `karn run`, not even a zombie left to the host's init. True
        if none is left."""
        for sock in list(self._socks.values()):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # closed already
        deadline = time.monotonic() + timeout
        while True:
            try:  # waitid: the call the sandbox lets monitors reap with
                os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG)
            except ChildProcessError:
                return True
            except OSError as err:
                log.debug("process table: cannot wait for the forked monitors: %s", err)
                return False
            if time.monotonic() > deadline:
                log.warning("process table: forked monitors still running %g s after pid 1 "
                            "ended", timeout)
                return False
            time.sleep(0.002)

    def send(self, pid: int, message: tuple) -> None:
        if pid == self.proc.pid:
            link = self.proc.link
            assert link is not None  # the first process's, made with the coordinator
            link.deliver(message)
            return
        sock = self._socks.get(pid)
        if sock is None:
            return  # it has ended
        try:
            send_message(sock, message)
        except OSError as err:  # a wedged or dead monitor must not stop the server
            log.debug("process table: news for pid %d lost: %s", pid, err)

    def _serve(self) -> None:
        while True:
            for fd, _events in self._epoll.poll():
                polled = self._polled.get(fd)
                if polled is not None:
                    self._read(*polled)

    def _read(self, pid: int, sock: Any) -> None:
        try:
            data, fds = receive_message(sock, 1)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data:
            self._detach(pid, sock)
            return
        try:
            _kind, ident, op, args = decode_message(data)
            if op == "attach":
                self._attach_child(pid, args[0], fds)
                result: Any = None
            elif op == "proc_file":  # waits for another monitor: not on this thread
                threading.Thread(target=self._reply_later, args=(pid, sock, ident, op, args),
                                 name="karn-proc-query", daemon=True).start()
                return
            else:
                result = self.handle(pid, op, args)
            reply = ("reply", ident, True, result)
        except SyscallError as err:
            reply = ("reply", ident, False, err.errno)
        except (ValueError, TypeError, KeyError, IndexError) as err:
            # not what a karn monitor sends: that monitor is no longer running karn's code
            log.warning("process table: pid %d sent a malformed request (%s); ending it",
                        pid, err)
            for fd in fds:
                os.close(fd)
            self._detach(pid, sock)
            return
        if ident:
            try:
                send_message(sock, reply)
            except OSError as err:
                log.debug("process table: reply to pid %d lost: %s", pid, err)

    def _reply_later(self, pid: int, sock: Any, ident: int, op: str, args: list) -> None:
        try:
            reply = ("reply", ident, True, self.handle(pid, op, args))
        except SyscallError as err:
            reply = ("reply", ident, False, err.errno)
        except (ValueError, TypeError, IndexError):
            reply = ("reply", ident, False, errno.EINVAL)
        try:
            send_message(sock, reply)
        except OSError as err:
            log.debug("process table: reply to pid %d lost: %s", pid, err)

    def _attach_child(self, caller: int, pid: int, fds: list[int]) -> None:
        """A monitor hands over the link end of the child it is about to fork."""
        if len(fds) != 1:
            raise ValueError("an attach without exactly one fd")
        end = socket.socket(fileno=fds[0])
        with self.lock:
            entry = self.table.entries.get(pid)
            valid = entry is not None and entry.ppid == caller and pid not in self._socks
        if not valid:
            end.close()
            raise SyscallError(errno.EINVAL)
        self.attach(pid, end)

    def _detach(self, pid: int, sock: Any) -> None:
        self._epoll.unregister(sock.fileno())
        del self._polled[sock.fileno()]
        sock.close()
        news: list[tuple[int, tuple]] = []
        with self.lock:
            self._socks.pop(pid, None)
            if pid not in self._ended:  # its monitor died without a word
                self._exited(pid, signal_wstatus(SIGKILL, False), news)
            self._unanswerable(pid)
        for target, message in news:
            self.send(target, message)


class LocalLink(Link):
    """pid 1's link: calls on the coordinator in its own monitor."""

    def __init__(self, proc: Process, coordinator: Coordinator) -> None:
        super().__init__(proc)
        self.coordinator = coordinator

    def call(self, op: str, *args: Any) -> Any:
        return self.coordinator.handle(self.proc.pid, op, list(args))

    def notify(self, op: str, *args: Any) -> None:
        self.coordinator.handle(self.proc.pid, op, list(args))

    def attach_child(self, pid: int, end: socket.socket) -> None:
        self.coordinator.attach(pid, socket.socket(fileno=end.detach()))

    def close_in_child(self) -> None:
        self.coordinator.close_in_child()


def start_coordinator(proc: Process, pids_limit: int | None) -> LocalLink:
    return LocalLink(proc, Coordinator(proc, pids_limit))


def _reap_host_children() -> None:
    """Forked monitors are reaped by the host kernel (SIGCHLD ignored: no host zombies);
    as a subreaper, this monitor also adopts monitors whose parent monitor ended."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
    libc.signal.restype = ctypes.c_void_p
    libc.signal(signal.SIGCHLD, ctypes.c_void_p(1))  # SIG_IGN
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.debug("process table: not a child subreaper (errno %d)", ctypes.get_errno())
