"""/proc: the few files real programs read, generated from the monitor's own state; the
directories of the other guest processes from theirs, asked through the process table
(coordinator.py)."""

from __future__ import annotations

import errno
import itertools
import time

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING
from karn.kernel.blocking import WouldBlock, waits_forbidden
from karn.kernel.fs.constants import (
    DT_DIR,
    DT_LNK,
    DT_REG,
    O_ACCMODE,
    O_OPEN_ONLY,
    PROC_SUPER_MAGIC,
    S_IFDIR,
    S_IFLNK,
    S_IFREG,
    ST_VALID,
    OFlag,
)
from karn.kernel.fs.file import DirEntry, DirListFile, OpenFile, SyntheticFile
from karn.kernel.fs.filesystem import Filesystem, Rel
from karn.kernel.fs.stat import Stat, StatFs

if TYPE_CHECKING:
    from karn.kernel.fs.procsys import Tree, Value
    from karn.kernel.process import Process

ROOT_FILES = ("cpuinfo", "meminfo", "uptime", "version", "filesystems", "stat", "loadavg")
ROOT_LINKS = ("self", "thread-self", "mounts")
PID_FILES = ("maps", "status", "cmdline", "environ", "stat", "statm", "mounts", "comm")
PID_LINKS = ("exe", "cwd", "root")
TASK_FILES = ("status", "stat", "comm")  # of /proc/PID/task/TID, for each thread


def _sys_lookup(rel: Rel) -> Tree | Value:
    """/proc/sys's tree, imported on the first look at it (most guests never look)."""
    from karn.kernel.fs.procsys import lookup

    return lookup(rel)


class ProcFs(Filesystem):
    fstype = "proc"

    def __init__(self) -> None:
        super().__init__()
        self.process: Process | None = None
        self._inos: dict[Rel, int] = {}
        self._next = itertools.count(2)

    def bind(self, process: Process) -> None:
        self.process = process

    def _proc(self) -> Process:
        if self.process is None:
            raise SyscallError(errno.ENOENT)  # no process yet (e.g. while loading)
        return self.process

    def _ino(self, rel: Rel) -> int:
        if rel not in self._inos:
            self._inos[rel] = next(self._next)
        return self._inos[rel]

    # -- the tree ----------------------------------------------------------------------
    def _kind(self, rel: Rel) -> str:
        """'dir', 'file' or 'link' for rel; ENOENT/ENOTDIR like a lookup."""
        if not rel:
            return "dir"
        head = rel[0]
        pid = str(self.process.pid) if self.process else None
        if head == "sys":
            return "dir" if isinstance(_sys_lookup(rel[1:]), dict) else "file"
        if len(rel) == 1:
            if head in ROOT_FILES:
                return "file"
            if head in ROOT_LINKS and pid:
                return "link"
            if head == pid or self._other_pid(head):
                return "dir"
            raise SyscallError(errno.ENOENT)
        if head in ROOT_FILES:
            raise SyscallError(errno.ENOTDIR)
        if head != pid:
            return self._other_kind(rel)
        sub = rel[1]
        if len(rel) == 2:
            if sub in PID_FILES:
                return "file"
            if sub in PID_LINKS:
                return "link"
            if sub in ("fd", "task"):
                return "dir"
            raise SyscallError(errno.ENOENT)
        if sub == "task":
            return self._task_kind(rel)
        if sub != "fd":
            raise SyscallError(errno.ENOTDIR if sub in PID_FILES else errno.ENOENT)
        if len(rel) == 3 and rel[2].isdigit() and self._fd(rel) is not None:
            return "link"
        raise SyscallError(errno.ENOENT)

    def _task_kind(self, rel: Rel) -> str:
        """/proc/PID/task/TID/... of this process: a directory per thread."""
        tid = rel[2]
        if not tid.isdigit() or int(tid) not in self._proc().tasks:
            raise SyscallError(errno.ENOENT)
        if len(rel) == 3:
            return "dir"
        if len(rel) == 4 and rel[3] in TASK_FILES:
            return "file"
        raise SyscallError(errno.ENOENT)

    # -- other processes: their monitors answer, through the process table ------------
    def _other_pids(self) -> list[int]:
        """The other live guest processes (none before the first fork)."""
        proc = self.process
        if proc is None or proc.link is None:
            return []
        return [pid for pid in proc.link.call("pids") if pid != proc.pid]

    def _other_pid(self, name: str) -> int | None:
        if not name.isdigit() or int(name) not in self._other_pids():
            return None
        return int(name)

    def _other_kind(self, rel: Rel) -> str:
        """/proc/PID/... of another process: its files and links (not its fd/)."""
        if self._other_pid(rel[0]) is None:
            raise SyscallError(errno.ENOENT)
        sub = rel[1]
        if len(rel) == 2 and sub in PID_FILES:
            return "file"
        if len(rel) == 2 and sub in PID_LINKS:
            return "link"
        raise SyscallError(errno.ENOTDIR if sub in PID_FILES else errno.ENOENT)

    def _other_entry(self, rel: Rel) -> bytes:
        """The file's content, or the link's target, from the process's own monitor."""
        link = self._proc().link
        assert link is not None  # there are other processes only with the table
        try:
            return str(link.call("proc_file", int(rel[0]), rel[1])).encode("latin-1")
        except SyscallError as err:
            if err.errno == errno.ESRCH:  # it ended meanwhile: its directory is gone
                raise SyscallError(errno.ENOENT) from None
            raise

    def _own(self, rel: Rel) -> bool:
        return self.process is not None and rel[0] == str(self.process.pid)

    def _fd(self, rel: Rel) -> OpenFile | None:
        try:
            return self._proc().fds.get(int(rel[2]))
        except SyscallError:
            return None

    def _children(self, rel: Rel) -> list[DirEntry]:
        proc = self.process
        if rel and rel[0] == "sys":
            tree = _sys_lookup(rel[1:])
            assert isinstance(tree, dict)
            names = [(n, DT_DIR if isinstance(v, dict) else DT_REG) for n, v in tree.items()]
        elif not rel:
            names = [(n, DT_REG) for n in ROOT_FILES] + [("sys", DT_DIR)]
            if proc is not None:
                names += [(n, DT_LNK) for n in ROOT_LINKS]
                pids = sorted([proc.pid, *self._other_pids()])  # in pid order, as Linux
                names += [(str(pid), DT_DIR) for pid in pids]
        elif len(rel) == 1:
            names = [(n, DT_REG) for n in PID_FILES] + [(n, DT_LNK) for n in PID_LINKS]
            if self._own(rel):
                names += [("fd", DT_DIR), ("task", DT_DIR)]
        elif rel[1] == "task":
            names = [(str(tid), DT_DIR) for tid in sorted(self._proc().tasks)] \
                if len(rel) == 2 else [(n, DT_REG) for n in TASK_FILES]
        else:
            names = [(str(fd), DT_LNK) for fd in self._proc().fds.fds()]
        return [DirEntry(n, self._ino(rel + (n,)), dt) for n, dt in names]

    def lstat(self, rel: Rel) -> Stat:
        kind = self._kind(rel)
        t = time.time_ns()
        mode = {"dir": S_IFDIR | 0o555, "file": S_IFREG | 0o444, "link": S_IFLNK | 0o777}[kind]
        return Stat(
            mode=mode,
            ino=self._ino(rel),
            dev=self.dev,
            nlink=2 if kind == "dir" else 1,
            atime_ns=t,
            mtime_ns=t,
            ctime_ns=t,
        )

    def readlink(self, rel: Rel) -> str:
        if self._kind(rel) != "link":
            raise SyscallError(errno.EINVAL)
        proc = self._proc()
        name = rel[-1]
        if len(rel) == 1:
            return {
                "self": str(proc.pid),
                "thread-self": f"{proc.pid}/task/{proc.pid}",
                "mounts": "self/mounts",
            }[name]
        if len(rel) == 3:
            file = self._fd(rel)
            return file.link_name() if file else ""
        if not self._own(rel):
            if waits_forbidden():  # the fast server: as open's, the exit path asks
                raise WouldBlock
            return self._other_entry(rel).decode("latin-1")
        return {"exe": proc.config.exe_path, "cwd": proc.fs.cwd, "root": "/"}[name]

    def magic_link(self, rel: Rel) -> OpenFile | None:
        if len(rel) == 3 and rel[1] == "fd" and self._kind(rel) == "link":
            return self._fd(rel)
        return None

    def open(self, rel: Rel, flags: int, mode: int, path: str) -> OpenFile:
        kind = self._kind(rel)
        kept = flags & ~O_OPEN_ONLY
        if flags & OFlag.CREAT and flags & OFlag.EXCL:
            raise SyscallError(errno.EEXIST)
        if (flags & O_ACCMODE) != OFlag.RDONLY:
            raise SyscallError(errno.EISDIR if kind == "dir" else errno.EACCES)
        if kind == "dir":
            if len(rel) == 1 and rel[0].isdigit():
                return ProcPidDir(path, kept, self._children(rel), self.lstat(rel),
                                  int(rel[0]))
            return DirListFile(path, kept, self._children(rel), self.lstat(rel))
        if kind == "link":
            raise SyscallError(errno.ELOOP)
        if flags & OFlag.DIRECTORY:
            raise SyscallError(errno.ENOTDIR)
        # Loaded at the first /proc read: most programs make none.
        from karn.kernel.fs.procfiles import generate

        if len(rel) == 2 and rel[0] != "sys" and not self._own(rel):
            if waits_forbidden():  # the fast server: the other process's monitor may be
                raise WouldBlock  # slow to answer; the exit path asks it
            content = self._other_entry(rel)
        else:
            content = generate(self._proc(), rel)
        return SyntheticFile(path, kept, content, self._ino(rel), self.dev)

    def statfs(self) -> StatFs:
        return StatFs(PROC_SUPER_MAGIC, flags=ST_VALID)


class ProcPidDir(DirListFile):
    """/proc/PID opened as a directory: pidfd_send_signal takes it as a pidfd, as Linux
    does (CPython's test_signal sends itself SIGINT through /proc/<its pid>)."""

    def __init__(self, path: str, flags: int, entries: list[DirEntry], st: Stat,
                 pid: int) -> None:
        super().__init__(path, flags, entries, st)
        self.pid = pid

    def reopen(self, flags: int) -> OpenFile:
        return ProcPidDir(self.path, flags, self.list_dir(), self.stat(), self.pid)
