"""The unikernel's process table: pids, parents, groups and sessions, zombies and their
exit statuses, with Linux's rules (docs/design/processes.md, section 7.2).

Pure data: no sockets, no threads. The coordinator (coordinator.py) owns the one table of
a unikernel, in the first monitor, and turns what the methods return into messages.
Pids and tids come from one counter, as in a Linux pid namespace, and are not reused.
"""

from __future__ import annotations

import errno

from karn.abi.errno import SyscallError
from karn.abi.signals import SIGCONT
from karn.hints import NamedTuple

# wait options (include/uapi/linux/wait.h)
WNOHANG = 0x1
WUNTRACED = 0x2
WSTOPPED = WUNTRACED
WEXITED = 0x4
WCONTINUED = 0x8
WNOWAIT = 0x01000000
WNOTHREAD = 0x20000000
WALL = 0x40000000
WCLONE = 0x80000000
# waitid idtypes
P_ALL, P_PID, P_PGID = 0, 1, 2
# SIGCHLD's si_code
CLD_EXITED, CLD_KILLED, CLD_DUMPED, CLD_STOPPED, CLD_CONTINUED = 1, 2, 3, 5, 6
INIT = 1
CONTINUED_WSTATUS = 0xFFFF  # WIFCONTINUED


def exit_wstatus(code: int) -> int:
    return (code & 0xFF) << 8


def signal_wstatus(sig: int, core: bool) -> int:
    return (sig & 0x7F) | (0x80 if core else 0)


def stopped_wstatus(sig: int) -> int:
    """WIFSTOPPED, WSTOPSIG = sig."""
    return ((sig & 0xFF) << 8) | 0x7F


def child_code(wstatus: int) -> tuple[int, int]:
    """(si_code, si_status) of SIGCHLD and waitid for a wait status word."""
    if wstatus == CONTINUED_WSTATUS:
        return CLD_CONTINUED, SIGCONT
    sig = wstatus & 0x7F
    if sig == 0x7F:
        return CLD_STOPPED, (wstatus >> 8) & 0xFF
    if sig == 0:
        return CLD_EXITED, (wstatus >> 8) & 0xFF
    return (CLD_DUMPED if wstatus & 0x80 else CLD_KILLED), sig


class Entry:
    __slots__ = ("pid", "ppid", "pgid", "sid", "zombie", "wstatus", "children", "execed",
                 "vfork_parent", "threads", "stopped", "report", "comm")

    def __init__(self, pid: int, ppid: int, pgid: int, sid: int) -> None:
        self.pid = pid
        self.ppid = ppid
        self.pgid = pgid
        self.sid = sid
        self.zombie = False
        self.wstatus = 0
        self.children: set[int] = set()
        self.execed = False  # setpgid on a child that has exec'd: EACCES
        self.vfork_parent = 0  # a vfork parent waits until this child execs or exits
        self.threads = 0  # threads besides the first, counted by --pids-limit
        self.stopped = 0  # the signal that stopped it (job control); 0: running
        self.report = 0  # a stop or continue not yet waited for (its wait status); 0: none
        self.comm = ""  # its name (the parent's, then its program's at execve): a zombie's


class Reaped(NamedTuple):
    pid: int
    wstatus: int


class ChildEvent(NamedTuple):
    """What an exit tells the parent: SIGCHLD's fields, and whom to wake."""

    parent: int
    child: int
    wstatus: int


class ProcTable:
    def __init__(self, first_pid: int = INIT, next_pid: int = INIT + 1,
                 pids_limit: int | None = None, comm: str = "") -> None:
        self.entries: dict[int, Entry] = {first_pid: Entry(first_pid, 0, first_pid, first_pid)}
        self.entries[first_pid].comm = comm
        self.next_pid = next_pid
        self.pids_limit = pids_limit
        self._groups_at_risk: set[int] = set()  # exited(): groups it may orphan

    def get(self, pid: int) -> Entry:
        entry = self.entries.get(pid)
        if entry is None:
            raise SyscallError(errno.ESRCH)
        return entry

    def live(self) -> list[Entry]:
        return [e for e in self.entries.values() if not e.zombie]

    # -- creation and exit --------------------------------------------------------------

    def _next(self) -> int:
        tid = self.next_pid
        self.next_pid += 1
        return tid

    def _check_limit(self) -> None:
        """--pids-limit counts tasks as a pids cgroup does: every thread of every process,
        zombies included until reaped."""
        if self.pids_limit is None:
            return
        tasks = sum(1 + e.threads for e in self.entries.values())
        if tasks >= self.pids_limit:
            raise SyscallError(errno.EAGAIN)

    def new_thread(self, pid: int) -> int:
        """A tid for a new thread of process `pid`."""
        owner = self.get(pid)
        self._check_limit()
        owner.threads += 1
        return self._next()

    def thread_ended(self, pid: int) -> None:
        entry = self.entries.get(pid)
        if entry is not None and entry.threads > 0:
            entry.threads -= 1

    def new_process(self, parent: int, vfork: bool = False) -> int:
        """A pid for a child of `parent`, in its group and session; EAGAIN past the limit."""
        owner = self.get(parent)
        self._check_limit()
        pid = self._next()
        entry = Entry(pid, parent, owner.pgid, owner.sid)
        entry.vfork_parent = parent if vfork else 0
        entry.comm = owner.comm
        self.entries[pid] = entry
        owner.children.add(pid)
        return pid

    def forget(self, parent: int, pid: int) -> None:
        """A child of `parent` that never started (the host fork failed)."""
        entry = self.entries.get(pid)
        if entry is None or entry.ppid != parent:
            raise SyscallError(errno.ESRCH)
        self.reap(pid)

    def exited(self, pid: int, wstatus: int) -> tuple[ChildEvent | None, list[int]]:
        """The process ended: a zombie until its parent waits. Its children go to init.
        Returns the parent's event (None if it has none) and the reparented pids."""
        entry = self.entries.get(pid)
        if entry is None or entry.zombie:
            return None, []
        self._groups_at_risk = {entry.pgid, *(self.entries[c].pgid for c in entry.children)}
        self._groups_at_risk -= {g for g in self._groups_at_risk if self.orphaned_group(g)}
        entry.zombie = True
        entry.wstatus = wstatus
        entry.threads = 0
        entry.stopped = entry.report = 0
        orphans = sorted(entry.children)
        init = self.entries.get(INIT)
        for child in orphans:
            self.entries[child].ppid = INIT
            if init is not None and child != INIT:
                init.children.add(child)
        entry.children.clear()
        if entry.ppid not in self.entries:
            self.entries.pop(pid)  # nobody can wait for it
            return None, orphans
        return ChildEvent(entry.ppid, pid, wstatus), orphans

    def stranded_groups(self) -> list[int]:
        """After exited(): the groups its end orphaned that hold a stopped process. Linux
        sends them SIGHUP and SIGCONT (POSIX), as nobody in their session could continue
        them."""
        groups, self._groups_at_risk = self._groups_at_risk, set()
        return sorted(g for g in groups if self.orphaned_group(g) and any(
            e.pgid == g and e.stopped and not e.zombie for e in self.entries.values()))

    def group_members(self, pgid: int) -> list[int]:
        return sorted(e.pid for e in self.entries.values() if e.pgid == pgid and not e.zombie)

    def changed(self, pid: int, stop_signal: int) -> ChildEvent | None:
        """The process stopped (by stop_signal) or continued (0): the parent's wait
        with WUNTRACED or WCONTINUED reports it once, the latest change only."""
        entry = self.entries.get(pid)
        if entry is None or entry.zombie or bool(entry.stopped) == bool(stop_signal):
            return None
        entry.stopped = stop_signal
        entry.report = stopped_wstatus(stop_signal) if stop_signal else CONTINUED_WSTATUS
        if entry.ppid not in self.entries:
            return None
        return ChildEvent(entry.ppid, pid, entry.report)

    def execed(self, pid: int, comm: str) -> int:
        """The process exec'd (comm: its new name); returns its vfork parent to release
        (0: none)."""
        entry = self.get(pid)
        entry.execed = True
        entry.comm = comm
        parent, entry.vfork_parent = entry.vfork_parent, 0
        return parent

    # -- waiting ------------------------------------------------------------------------

    def wait(self, parent: int, idtype: int, ident: int, options: int) -> Reaped | None:
        """A child matching (idtype, ident) with something to report, as Linux checks
        each in turn: its end (WEXITED; reaped unless WNOWAIT), a stop (WSTOPPED) or a
        continue (WCONTINUED) not yet reported. None when some child matches but has
        nothing to report; ECHILD when none matches."""
        owner = self.get(parent)
        if options & WCLONE and not options & WALL:
            raise SyscallError(errno.ECHILD)  # every child here signals SIGCHLD at exit
        matching = [self.entries[c] for c in sorted(owner.children)
                    if self._matches(self.entries[c], owner, idtype, ident)]
        if not matching:
            raise SyscallError(errno.ECHILD)
        for child in matching:
            if child.zombie:
                if not options & WEXITED:
                    continue
                if not options & WNOWAIT:
                    self.reap(child.pid)
                return Reaped(child.pid, child.wstatus)
            wanted = WSTOPPED if child.stopped else WCONTINUED
            if child.report and options & wanted:
                report = child.report
                if not options & WNOWAIT:
                    child.report = 0
                return Reaped(child.pid, report)
        return None

    @staticmethod
    def _matches(child: Entry, owner: Entry, idtype: int, ident: int) -> bool:
        if idtype == P_ALL:
            return True
        if idtype == P_PID:
            return child.pid == ident
        if idtype == P_PGID:
            return child.pgid == (ident or owner.pgid)
        return False

    def reap(self, pid: int) -> None:
        entry = self.entries.pop(pid, None)
        if entry is not None and entry.ppid in self.entries:
            self.entries[entry.ppid].children.discard(pid)

    # -- signals ------------------------------------------------------------------------

    def kill_targets(self, sender: int, pid: int) -> list[int]:
        """The processes kill(pid) reaches, as Linux resolves it; ESRCH when none."""
        me = self.get(sender)
        if pid > 0:
            targets = [pid] if pid in self.entries else []
        elif pid == -1:  # every process but init and the caller
            targets = [e.pid for e in self.entries.values()
                       if e.pid not in (INIT, sender) and not e.zombie]
        else:
            group = me.pgid if pid == 0 else -pid
            targets = [e.pid for e in self.entries.values() if e.pgid == group]
        if not targets:
            raise SyscallError(errno.ESRCH)
        return [t for t in targets if not self.entries[t].zombie]

    # -- groups and sessions -------------------------------------------------------------

    def orphaned_group(self, pgid: int) -> bool:
        """POSIX's orphaned process group: no member has a parent in another group of
        its session. The first process's parent, outside the guest, counts as one (karn
        is started from a shell), so pid 1's group is never orphaned."""
        for entry in self.entries.values():
            if entry.pgid != pgid or entry.zombie:
                continue
            parent = self.entries.get(entry.ppid)
            if entry.ppid == 0 or (parent is not None and parent.pgid != pgid
                                   and parent.sid == entry.sid):
                return False
        return True

    def setpgid(self, caller: int, pid: int, pgid: int) -> None:
        me = self.get(caller)
        pid = pid or caller
        target = self.get(pid)
        if pid != caller:
            if target.ppid != caller:
                raise SyscallError(errno.ESRCH)
            if target.sid != me.sid:
                raise SyscallError(errno.EPERM)
            if target.execed:
                raise SyscallError(errno.EACCES)
        pgid = pgid or pid
        if pgid < 0:
            raise SyscallError(errno.EINVAL)
        if target.sid == target.pid:
            raise SyscallError(errno.EPERM)  # a session leader stays in its group
        if pgid != pid and not any(e.pgid == pgid and e.sid == me.sid
                                   for e in self.entries.values()):
            raise SyscallError(errno.EPERM)
        target.pgid = pgid

    def setsid(self, caller: int) -> int:
        me = self.get(caller)
        if any(e.pgid == caller for e in self.entries.values()):
            raise SyscallError(errno.EPERM)  # already leads a group
        me.sid = me.pgid = caller
        return caller

    def getpgid(self, caller: int, pid: int) -> int:
        return self.get(pid or caller).pgid

    def getsid(self, caller: int, pid: int) -> int:
        return self.get(pid or caller).sid


