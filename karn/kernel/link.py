"""A monitor's side of the process table (docs/design/processes.md, section 7.1).

Each guest process is a monitor process; the table lives in the first monitor
(coordinator.py). A Link is how a process asks it (new pids, wait, kill, groups) and how
the table's news reach the process: signals from other processes, SIGCHLD with the
child's exit, a vfork child's exec, a new parent after the old one died, the end of a
process it holds a pidfd to.

LocalLink serves the first monitor's own process by direct calls; RemoteLink serves
every other monitor over one SOCK_SEQPACKET socket to the first, on which a listener
thread reads replies and news. The socket's end of file means the first monitor is
gone, and with it the unikernel: the monitor ends at once (nothing is left running).
"""

from __future__ import annotations

import _socket as socket  # not socket.py (enums, selectors): the first fork imports this
import _thread
import json
import math
import os
import select
import struct
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

from karn import log
from karn.abi.errno import SyscallError
from karn.abi.signals import SI_USER, SIGCHLD
from karn.hints import TYPE_CHECKING, Any
from karn.kernel.blocking import Interrupted
from karn.kernel.proctable import Reaped, child_code
from karn.kernel.signals import SA_NOCLDSTOP, SA_NOCLDWAIT, SIG_IGN, SigInfo

if TYPE_CHECKING:
    from karn.kernel.process import Process, Task

MESSAGE_MAX = 1 << 16
LOST_MONITOR_STATUS = 128 + 9  # a monitor whose first monitor vanished ends as by SIGKILL


def send_message(sock: socket.socket, message: tuple, fds: list[int] | None = None) -> None:
    """One message: JSON (ints, strings, lists: nothing a peer could make run), and the
    fds passed with it."""
    data = json.dumps(message).encode()
    if fds:
        rights = struct.pack(f"{len(fds)}i", *fds)
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
    else:
        sock.sendall(data)


def receive_message(sock: socket.socket, max_fds: int) -> tuple[bytes, list[int]]:
    """One message's bytes and the fds passed with it (at most max_fds; any beyond are
    closed by the kernel)."""
    data, ancillary, _flags, _addr = sock.recvmsg(MESSAGE_MAX, socket.CMSG_LEN(4 * max_fds))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            whole = len(payload) - len(payload) % 4
            fds += struct.unpack(f"{whole // 4}i", payload[:whole])
    return data, fds


def decode_message(data: bytes) -> tuple:
    return tuple(json.loads(data))


class Link(ABC):
    """What a process asks the table, and what it does with the table's news."""

    def __init__(self, proc: Process) -> None:
        self.proc = proc
        self.generation = 0  # bumped by every child's change: waiters retry
        self.released: set[int] = set()  # vfork children that exec'd or exited
        self._waiting: set[Task] = set()
        self._lock = threading.Lock()
        self._exit_events: dict[int, int] = {}  # pid -> a host eventfd set when it ends

    @abstractmethod
    def call(self, op: str, *args: Any) -> Any:
        """A request to the table and its answer (SyscallError for an errno)."""

    @abstractmethod
    def notify(self, op: str, *args: Any) -> None:
        """A message that needs no answer."""

    def job_state(self, stop_signal: int) -> None:
        """This process stopped (by stop_signal) or continued (0): the table tells the
        parent."""
        self.notify("changed", stop_signal)

    @abstractmethod
    def attach_child(self, pid: int, end: socket.socket) -> None:
        """Give the table its end of a new child's link."""

    @abstractmethod
    def close_in_child(self) -> None:
        """In a forked child: drop every inherited fd of this link."""

    # -- news from the table --------------------------------------------------------------

    def deliver(self, message: tuple) -> None:
        kind = message[0]
        proc = self.proc
        if kind == "signal":
            _kind, tid, signo, code, sender = message
            info = SigInfo.from_sender(signo, code, sender)
            target = proc.tasks.get(tid) if tid else None
            if tid and target is None:
                return  # the thread has ended
            if target is None:
                proc.signal_process(info)
            else:
                proc.signal_thread(target, info)
        elif kind == "child":
            _kind, child, wstatus = message
            self._child_changed(child, wstatus)
        elif kind == "child_state":  # a child stopped or continued
            _kind, child, wstatus = message
            self._child_state(child, wstatus)
        elif kind == "released":
            with self._lock:
                self.released.add(message[1])
            self._wake_waiters()
        elif kind == "exited":
            with self._lock:
                event = self._exit_events.pop(message[1], None)
            if event is not None:
                os.eventfd_write(event, 1)
                os.close(event)
        elif kind == "query":  # another process reads one of this one's /proc files
            threading.Thread(target=self._answer, args=message[1:], name="karn-proc-answer",
                             daemon=True).start()
        elif kind == "reparent":
            proc.ppid = message[1]
            for task in list(proc.tasks.values()):  # prctl(PR_SET_PDEATHSIG)
                if task.pdeath_signal:
                    proc.signal_thread(task, SigInfo.from_sender(task.pdeath_signal,
                                                                 SI_USER, 0))

    def _child_changed(self, child: int, wstatus: int) -> None:
        proc = self.proc
        action = proc.actions[SIGCHLD]
        if action.handler == SIG_IGN or action.flags & SA_NOCLDWAIT:
            self.notify("reap", child)  # no zombie, as Linux's autoreap
        else:
            code, status = child_code(wstatus)
            fields = struct.pack("<iIi4xqq", child, 0, status, 0, 0)
            proc.signal_process(SigInfo(SIGCHLD, code, fields))
        with self._lock:
            self.released.add(child)  # an exited vfork child releases its parent too
        self._wake_waiters()

    def _child_state(self, child: int, wstatus: int) -> None:
        """SIGCHLD with CLD_STOPPED or CLD_CONTINUED, unless the handler asked for
        none (SA_NOCLDSTOP); a waiter with WUNTRACED/WCONTINUED looks again."""
        if not self.proc.actions[SIGCHLD].flags & SA_NOCLDSTOP:
            code, status = child_code(wstatus)
            fields = struct.pack("<iIi4xqq", child, 0, status, 0, 0)
            self.proc.signal_process(SigInfo(SIGCHLD, code, fields))
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        with self._lock:
            self.generation += 1
            waiting = list(self._waiting)
        for task in waiting:
            task.waker.wake()

    def _answer(self, qid: int, name: str) -> None:
        """The content of this process's /proc/PID/name, for the table (on a thread of
        its own: reading the state may wait for locks a syscall holds while it waits for
        the listener)."""
        from karn.kernel.fs.procfiles import pid_entry

        try:
            answer = [qid, True, pid_entry(self.proc, name).decode("latin-1")]
        except SyscallError as err:
            answer = [qid, False, err.errno]
        self.notify("answer", *answer)

    def exit_event(self, pid: int) -> int:
        """A host fd (an eventfd of its own) readable once process `pid` has ended, for
        a pidfd; ESRCH when the table no longer has it (reaped)."""
        with self._lock:
            event = self._exit_events.get(pid)
            made = event is None
            if event is None:  # made before asking: the news may come before the answer
                event = self._exit_events[pid] = os.eventfd(0, os.EFD_CLOEXEC
                                                            | os.EFD_NONBLOCK)
            mine = os.dup(event)
        try:
            ended = self.call("watch", pid)
        except SyscallError:
            os.close(mine)
            if made:  # no such process: keep nothing for it (a guest may try every pid)
                with self._lock:
                    if self._exit_events.get(pid) == event:
                        del self._exit_events[pid]
                        os.close(event)
            raise
        if ended:
            os.eventfd_write(mine, 1)
        return mine

    # -- blocking on the table ------------------------------------------------------------

    def wait_child(self, task: Task, idtype: int, ident: int, options: int,
                   block: bool) -> Reaped | None:
        """wait4/waitid's search, blocking (interruptibly) until a child matches."""
        with self._lock:
            self._waiting.add(task)
        try:
            while True:
                seen = self.generation
                found = self.call("wait", idtype, ident, options)
                if found is not None:
                    return Reaped(*found)
                if not block:
                    return None
                while self.generation == seen:
                    if task.signal_pending():
                        raise Interrupted
                    task.waker.wait(None)
        finally:
            with self._lock:
                self._waiting.discard(task)

    def wait_released(self, task: Task, child: int) -> None:
        """A vfork parent waits until its child execs or exits (only SIGKILL and the
        process's end cut the wait short, as Linux's)."""
        with self._lock:
            self._waiting.add(task)
        try:
            while True:
                with self._lock:
                    if child in self.released:
                        self.released.discard(child)
                        return
                if task.exit_requested or self.proc.exit_status is not None:
                    return
                task.waker.wait(None)
        finally:
            with self._lock:
                self._waiting.discard(task)


class RemoteLink(Link):
    """A monitor's link to the first monitor."""

    def __init__(self, proc: Process, sock: socket.socket) -> None:
        super().__init__(proc)
        self.sock = sock
        self._send_lock = threading.Lock()
        self._replies: dict[int, tuple[threading.Event, list]] = {}
        self._next_id = 0

    def start(self, tend: Callable[[], float] | None = None, first: float = 0.0) -> None:
        """The listener; `tend` (the monitor's housekeeping: one round, then the seconds
        to the next) runs on it `first` seconds from now and then as often as it asks,
        until the process has ended: one thread fewer to start on each fork's critical
        path."""
        # Not threading.Thread: its start() waits until the thread runs, 1.5-2.5 ms of each
        # fork's critical path on a busy host (docs/design/processes.md 3.3)
        _thread.start_new_thread(self._listen, (tend, time.monotonic() + first))

    def _request(self, op: str, args: tuple, fds: list[int] | None = None) -> Any:
        done = threading.Event()
        box: list = []
        with self._send_lock:
            self._next_id += 1
            ident = self._next_id
            self._replies[ident] = (done, box)
            self._send(("call", ident, op, args), fds)
        done.wait()
        ok, value = box[0]
        if not ok:
            raise SyscallError(value)
        return value

    def call(self, op: str, *args: Any) -> Any:
        return self._request(op, args)

    def notify(self, op: str, *args: Any) -> None:
        with self._send_lock:
            self._send(("call", 0, op, args))

    def _send(self, message: tuple, fds: list[int] | None = None) -> None:
        try:
            send_message(self.sock, message, fds)
        except ConnectionError:  # the first monitor is gone: the unikernel has ended, and
            os._exit(LOST_MONITOR_STATUS)  # this process with it (as the listener's EOF)

    def attach_child(self, pid: int, end: socket.socket) -> None:
        self._request("attach", (pid,), [end.fileno()])

    def close_in_child(self) -> None:
        self.sock.close()

    def _listen(self, tend: Callable[[], float] | None, due: float) -> None:
        """Replies and news from the table; tend's rounds, each when `due` (monotonic)."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        while True:
            if tend is not None:
                if time.monotonic() >= due:
                    if self.proc.done.is_set():
                        tend = None
                        continue
                    try:
                        due = time.monotonic() + tend()
                    except Exception as err:  # a monitor bug: the link must go on
                        log.warning("process %d: housekeeping stopped: %r", self.proc.pid, err)
                        tend = None
                        continue
                wait = max(0.0, due - time.monotonic())
                if not poller.poll(math.ceil(wait * 1000)):
                    continue
            try:
                data = self.sock.recv(MESSAGE_MAX)
            except OSError:
                data = b""
            if not data:
                os._exit(LOST_MONITOR_STATUS)  # the unikernel has ended
            message = decode_message(data)
            if message[0] == "reply":
                _kind, ident, ok, value = message
                done, box = self._replies.pop(ident)
                box.append((ok, value))
                done.set()
            else:
                self.deliver(message)
