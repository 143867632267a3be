"""The contents of /proc files, each generated from the process when the guest opens it."""

from __future__ import annotations

import errno
import time

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING
from karn.kernel import caps

if TYPE_CHECKING:
    from karn.kernel.process import Process
    from karn.kernel.proctable import Entry

KERNEL_RELEASE = "6.1.0-karn"
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4


def generate(proc: Process, rel: tuple[str, ...]) -> bytes:
    """The file at rel (a root file, or one of the process's directory)."""
    name = rel[-1]
    if rel[0] == "sys":
        from karn.kernel.fs.procsys import read

        return read(proc, rel[1:])
    if len(rel) == 1:
        return _ROOT[name](proc)
    if len(rel) == 4 and rel[1] == "task":
        return task_file(proc, int(rel[2]), name)
    return _PID[name](proc)


def pid_entry(proc: Process, name: str) -> bytes:
    """A file of /proc/PID, or a link's target, for another process that asks (the
    process table forwards the question to this process's monitor)."""
    if name in _PID:
        return _PID[name](proc)
    if name in _PID_LINKS:
        return _PID_LINKS[name](proc).encode()
    raise SyscallError(errno.ENOENT)


def host_cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


def uptime(proc: Process) -> float:
    return time.monotonic() - proc.start_monotonic


def _comm(proc: Process) -> str:
    """The leader thread's name: set by execve (the file's name) or PR_SET_NAME."""
    leader = proc.tasks.get(proc.pid)
    if leader is None:
        return proc.config.exe_path.rsplit("/", 1)[-1][:15]
    return leader.comm.decode(errors="replace")


def _state(proc: Process) -> str:
    """State of /proc/PID/status: stopped by a job-control signal, or running."""
    return "T (stopped)" if proc.job_stop else "R (running)"


def maps(proc: Process) -> bytes:
    lines = []
    for vma in proc.mm.vmas():
        prot = vma.prot
        perms = (
            ("r" if prot & PROT_READ else "-")
            + ("w" if prot & PROT_WRITE else "-")
            + ("x" if prot & PROT_EXEC else "-")
            + ("s" if getattr(vma, "shared", False) else "p")
        )
        line = f"{vma.start:08x}-{vma.end:08x} {perms} {vma.offset:08x} 00:00 0"
        lines.append(f"{line:<72} {vma.name}" if vma.name else line)
    return "".join(line + "\n" for line in lines).encode()


def status(proc: Process, tid: int = 0) -> bytes:
    """/proc/PID/status, or /proc/PID/task/TID/status (the thread's name and id)."""
    ident = proc.identity
    size_kb = proc.mm.mapped_bytes // 1024
    name = _task_comm(proc, tid) if tid else _comm(proc)
    return (
        f"Name:\t{name}\nUmask:\t{proc.fs.umask:04o}\nState:\t{_state(proc)}\n"
        f"Tgid:\t{proc.pid}\nNgid:\t0\nPid:\t{tid or proc.pid}\nPPid:\t{proc.ppid}\n"
        f"TracerPid:\t0\n"
        f"Uid:\t{ident.uid}\t{ident.euid}\t{ident.suid}\t{ident.euid}\n"
        f"Gid:\t{ident.gid}\t{ident.egid}\t{ident.sgid}\t{ident.egid}\n"
        f"FDSize:\t{proc.fds.limit}\nGroups:\t{' '.join(map(str, ident.groups))} \n"
        f"VmPeak:\t{size_kb:8d} kB\nVmSize:\t{size_kb:8d} kB\nVmHWM:\t{size_kb:8d} kB\n"
        f"VmRSS:\t{size_kb:8d} kB\nThreads:\t{len(proc.tasks)}\n"
        f"SigQ:\t0/0\n{_signal_sets(proc, tid)}"
        f"CapInh:\t{ident.cap_inheritable:016x}\nCapPrm:\t{ident.cap_permitted:016x}\n"
        f"CapEff:\t{ident.cap_effective:016x}\nCapBnd:\t{caps.bounding(ident):016x}\n"
        f"CapAmb:\t{ident.cap_ambient:016x}\nNoNewPrivs:\t{int(proc.no_new_privs)}\n"
        f"Cpus_allowed_list:\t0-{proc.config.ncpus - 1}\n"
    ).encode()


def _signal_sets(proc: Process, tid: int) -> str:
    """status's signal lines: the thread's (the main thread's for /proc/PID) pending and
    blocked signals, the process's pending ones and its ignored and caught signals."""
    from karn.kernel.signals import SIG_DFL, SIG_IGN

    task = proc.tasks.get(tid or proc.pid) or next(iter(proc.tasks.values()), None)
    ignored = caught = 0
    for sig, action in enumerate(proc.actions[1:], 1):
        if action.handler == SIG_IGN:
            ignored |= 1 << (sig - 1)
        elif action.handler != SIG_DFL:
            caught |= 1 << (sig - 1)
    pending, blocked = (task.pending.mask, task.blocked) if task is not None else (0, 0)
    return (f"SigPnd:\t{pending:016x}\nShdPnd:\t{proc.pending.mask:016x}\n"
            f"SigBlk:\t{blocked:016x}\nSigIgn:\t{ignored:016x}\nSigCgt:\t{caught:016x}\n")


def _nul_list(items: list[bytes]) -> bytes:
    return b"".join(item + b"\0" for item in items)


def pid_stat(proc: Process, tid: int = 0) -> bytes:
    """/proc/PID/stat, or /proc/PID/task/TID/stat (the thread's id and name)."""
    vsize = proc.mm.mapped_bytes
    pgid, sid = _group_and_session(proc)
    name = _task_comm(proc, tid) if tid else _comm(proc)
    return _stat_line(tid or proc.pid, name, _state(proc)[0], proc.ppid, pgid, sid,
                      len(proc.tasks), vsize)


def _task_comm(proc: Process, tid: int) -> str:
    task = proc.tasks.get(tid)
    if task is None:
        raise SyscallError(errno.ENOENT)  # the thread ended
    return task.comm.decode(errors="replace")


def task_file(proc: Process, tid: int, name: str) -> bytes:
    """A file of /proc/PID/task/TID: the thread's own status, stat and name."""
    if name == "status":
        return status(proc, tid)
    if name == "stat":
        return pid_stat(proc, tid)
    return (_task_comm(proc, tid) + "\n").encode()


def _group_and_session(proc: Process) -> tuple[int, int]:
    """Its process group and session, the table's (alone, pid 1 leads both)."""
    link = proc.link
    if link is None:
        return proc.pid, proc.pid
    try:
        return link.call("getpgid", 0), link.call("getsid", 0)
    except SyscallError:  # the table is gone: the run is ending
        return proc.pid, proc.pid


def _stat_line(pid: int, comm: str, state: str, ppid: int, pgid: int, sid: int,
               threads: int, vsize: int) -> bytes:
    fields = (
        [str(pid), f"({comm})", state, str(ppid), str(pgid), str(sid), "0", "-1", "4194304"]
        + ["0"] * 10
        + [str(threads), "0", "0", str(vsize), str(vsize // 4096)]
    )
    fields += ["0"] * (52 - len(fields))
    return (" ".join(fields) + "\n").encode()


def zombie_entry(entry: Entry, name: str) -> bytes:
    """A file of /proc/PID for a process that has ended and not been waited for: its
    monitor is gone, so the process table's entry says it all (state Z, no memory, no
    command line, as Linux's zombie); its links do not resolve (ENOENT)."""
    if name == "stat":
        return _stat_line(entry.pid, entry.comm, "Z", entry.ppid, entry.pgid, entry.sid, 1, 0)
    if name == "status":
        return (f"Name:\t{entry.comm}\nState:\tZ (zombie)\nTgid:\t{entry.pid}\nNgid:\t0\n"
                f"Pid:\t{entry.pid}\nPPid:\t{entry.ppid}\nThreads:\t1\n").encode()
    if name == "comm":
        return (entry.comm + "\n").encode()
    if name == "statm":
        return b"0 0 0 0 0 0 0\n"
    if name in _PID:
        return b""
    raise SyscallError(errno.ENOENT)


def statm(proc: Process) -> bytes:
    pages = proc.mm.mapped_bytes // 4096
    return f"{pages} {pages} 0 0 0 {pages} 0\n".encode()


def mounts(proc: Process) -> bytes:
    out = []
    for path, mfs in proc.fs.vfs.mount_list():
        opts = "ro" if mfs.readonly else "rw"
        out.append(f"{mfs.fstype} {path} {mfs.fstype} {opts},relatime 0 0\n")
    return "".join(out).encode()


def cpuinfo(proc: Process) -> bytes:
    blocks = [b for b in host_cpuinfo().split("\n\n") if b.strip()]
    if not blocks:
        return b""
    out = []
    for i in range(proc.config.ncpus):
        lines = blocks[min(i, len(blocks) - 1)].splitlines()
        renumbered = [f"processor\t: {i}" if ln.startswith("processor") else ln for ln in lines]
        out.append("\n".join(renumbered) + "\n\n")
    return "".join(out).encode()


def meminfo(proc: Process) -> bytes:
    total = proc.config.memory_limit // 1024
    free = max(0, total - proc.mm.mapped_bytes // 1024)
    rows = [
        ("MemTotal", total),
        ("MemFree", free),
        ("MemAvailable", free),
        ("Buffers", 0),
        ("Cached", 0),
        ("SwapCached", 0),
        ("Active", total - free),
        ("Inactive", 0),
        ("SwapTotal", 0),
        ("SwapFree", 0),
        ("Shmem", 0),
        ("CommitLimit", total),
        ("Committed_AS", total - free),
    ]
    return "".join(f"{k + ':':<16}{v:8d} kB\n" for k, v in rows).encode()


def stat(proc: Process) -> bytes:
    cpus = "".join(f"cpu{i} 0 0 0 0 0 0 0 0 0 0\n" for i in range(proc.config.ncpus))
    boot = int(time.time() - uptime(proc))
    return (
        f"cpu  0 0 0 0 0 0 0 0 0 0\n{cpus}intr 0\nctxt 0\nbtime {boot}\n"
        f"processes 1\nprocs_running 1\nprocs_blocked 0\n"
    ).encode()


_ROOT = {
    "cpuinfo": cpuinfo,
    "meminfo": meminfo,
    "uptime": lambda p: f"{uptime(p):.2f} 0.00\n".encode(),
    "version": lambda p: f"Linux version {KERNEL_RELEASE} (karn) #1 SMP\n".encode(),
    "filesystems": lambda p: b"nodev\ttmpfs\nnodev\tproc\nnodev\tdevtmpfs\n\text4\n",
    "stat": stat,
    "loadavg": lambda p: f"0.00 0.00 0.00 1/{len(p.tasks)} {p.pid}\n".encode(),
}
_PID = {
    "maps": maps,
    "status": status,
    "cmdline": lambda p: _nul_list(p.config.argv),
    "environ": lambda p: _nul_list(p.config.envp),
    "stat": pid_stat,
    "statm": statm,
    "mounts": mounts,
    "comm": lambda p: (_comm(p) + "\n").encode(),
}
_PID_LINKS = {
    "exe": lambda p: p.config.exe_path,
    "cwd": lambda p: p.fs.cwd,
    "root": lambda p: "/",
}
