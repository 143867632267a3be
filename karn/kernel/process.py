"""The guest process and its tasks: the state syscall handlers work on.

Handlers hold no state of their own; everything lives here or in the subsystems these
objects point to (address space, fd table, filesystem context).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Protocol

from karn.kernel.limits import default_rlimits

if TYPE_CHECKING:
    from karn.kernel.fs.context import FsContext
    from karn.kernel.fs.fdtable import FdTable
    from karn.kernel.guestmem import GuestMemory
    from karn.kernel.mm import AddressSpace


class Cpu(Protocol):
    """What the kernel may ask of the vCPU a task runs on."""

    def get_fs_base(self) -> int: ...

    def set_fs_base(self, value: int) -> None: ...

    def get_gs_base(self) -> int: ...

    def set_gs_base(self, value: int) -> None: ...


class Identity:
    __slots__ = ("uid", "gid", "euid", "egid")

    def __init__(self, uid: int = 0, gid: int = 0, euid: int = 0, egid: int = 0) -> None:
        self.uid = uid
        self.gid = gid
        self.euid = euid
        self.egid = egid


class KernelConfig:
    """Guest-visible settings fixed at start."""

    __slots__ = ("hostname", "argv", "envp", "exe_path", "memory_limit", "ncpus")

    def __init__(
        self,
        hostname: str = "karn",
        argv: list[bytes] | None = None,
        envp: list[bytes] | None = None,
        exe_path: str = "/",  # guest path of the main program, for /proc/self/exe
        memory_limit: int = 512 << 20,
        ncpus: int = 1,
    ) -> None:
        self.hostname = hostname
        self.argv = [] if argv is None else argv
        self.envp = [] if envp is None else envp
        self.exe_path = exe_path
        self.memory_limit = memory_limit
        self.ncpus = ncpus


class ProcessExit(Exception):
    """Raised by exit/exit_group (or a fatal signal) to end the run loop."""

    def __init__(self, status: int, signal: int = 0) -> None:
        super().__init__(status)
        self.status = status
        self.signal = signal


class Process:
    pid = 1
    ppid = 0

    def __init__(
        self,
        mem: GuestMemory,
        mm: AddressSpace,
        fs: FsContext,
        fds: FdTable,
        config: KernelConfig,
    ) -> None:
        self.mem = mem
        self.mm = mm
        self.fs = fs
        self.fds = fds
        self.config = config
        self.identity = Identity()
        self.tasks: dict[int, Task] = {}
        self.rlimits = default_rlimits(config.memory_limit)
        self.start_monotonic = time.monotonic()
        self.dumpable = 1
        self.no_new_privs = False


class Task:
    """One guest thread."""

    def __init__(self, process: Process, tid: int, cpu: Cpu) -> None:
        self.process = process
        self.mem = process.mem
        self.tid = tid
        self.cpu = cpu
        self.clear_child_tid = 0
        self.robust_list = 0
        self.robust_list_len = 0
        self.comm = os.path.basename(process.config.exe_path).encode()[:15]
        process.tasks[tid] = self
