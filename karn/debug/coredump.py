"""`--core-dump DIR`: an ELF core file of a crashed guest that gdb opens with the program.

Layout as Linux writes it: one PT_NOTE (NT_PRSTATUS and NT_FPREGSET per thread, the
crashing thread first; NT_PRPSINFO, NT_AUXV, NT_FILE) and a PT_LOAD per mapping with its
contents. gdb finds the shared libraries itself through the auxv and the dynamic linker's
r_debug in the dumped memory, at the same paths as on the host.
"""

from __future__ import annotations

import os
import struct

from karn import log
from karn.abi.errno import SyscallError
from karn.abi.signals import SIGSEGV
from karn.debug.objects import read_auxv
from karn.debug.observe import BaseObserver
from karn.hints import TYPE_CHECKING

if TYPE_CHECKING:
    from karn.abi.faults import GuestFault
    from karn.kernel.process import Task
    from karn.run.guest import Guest

ET_CORE, EM_X86_64, PT_LOAD, PT_NOTE = 4, 62, 1, 4
NT_PRSTATUS, NT_FPREGSET, NT_PRPSINFO, NT_AUXV, NT_FILE = 1, 2, 3, 6, 0x46494C45
PAGE = 4096
MAX_SEGMENT = 1 << 30  # larger mappings are listed without contents
USER_REGS = ("r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs "
             "eflags rsp ss fs_base gs_base ds es fs gs").split()


class ThreadState:
    __slots__ = ("tid", "regs", "fs_base", "fpu")

    def __init__(self, tid: int, regs: dict[str, int], fs_base: int, fpu: bytes) -> None:
        self.tid, self.regs, self.fs_base, self.fpu = tid, regs, fs_base, fpu


class CoreDumper(BaseObserver):
    def __init__(self, guest: Guest, directory: str) -> None:
        self.guest = guest
        self.directory = directory
        self.threads: list[ThreadState] = []
        self.signal = 0
        self.path: str | None = None

    def crashed(self, task: Task, fault: GuestFault) -> None:
        """Snapshot every thread now, while the others are still in the process."""
        self.signal = task.process.fatal_signal or SIGSEGV
        self.threads = [ThreadState(task.tid, dict(fault.regs), fault.fs_base, _fpu(task))]
        for other in list(task.process.tasks.values()):
            if other is task or other.cpu is None:
                continue
            try:
                self.threads.append(ThreadState(other.tid, other.cpu.get_context(),
                                                other.cpu.get_fs_base(), _fpu(other)))
            except (OSError, ValueError):
                pass

    def finish(self) -> None:
        if not self.threads:
            return
        name = os.path.basename(self.guest.manifest.entry) or "guest"
        path = os.path.join(self.directory, f"core.{name}.{os.getpid()}")
        try:
            with open(path, "wb") as f:
                write_core(f, self.guest, self.threads, self.signal)
        except OSError as err:
            log.error("core dump %s: %s", path, err.strerror)
            return
        self.path = path
        log.warning("core dumped to %s", path)


def _fpu(task: Task) -> bytes:
    if task.cpu is None:  # not started yet
        return bytes(512)
    try:
        return task.cpu.get_fpu()[:512]
    except (OSError, ValueError):
        return bytes(512)


def _note(name: bytes, kind: int, desc: bytes) -> bytes:
    name += b"\0"
    return (struct.pack("<III", len(name), len(desc), kind) + name.ljust(-(-len(name) // 4) * 4,
            b"\0") + desc.ljust(-(-len(desc) // 4) * 4, b"\0"))


def _prstatus(thread: ThreadState, sig: int) -> bytes:
    regs = dict(thread.regs)
    regs.update(orig_rax=(1 << 64) - 1, cs=0x33, ss=0x2B, ds=0, es=0, fs=0, gs=0,
                fs_base=thread.fs_base, gs_base=0, eflags=regs.get("rflags", 0x202))
    head = struct.pack("<iiih2xQQiiii", sig, 0, 0, sig, 0, 0, thread.tid, 0, thread.tid, 0)
    times = bytes(64)
    body = struct.pack("<27Q", *(regs[n] & ((1 << 64) - 1) for n in USER_REGS))
    return head + times + body + struct.pack("<i4x", 1)


def _prpsinfo(guest: Guest) -> bytes:
    argv = [a if isinstance(a, bytes) else str(a).encode() for a in guest.process.config.argv]
    fname = os.path.basename(guest.manifest.entry).encode()[:15]
    psargs = b" ".join(argv)[:79]
    return struct.pack("<bcbb4xQIIiiii16s80s", 0, b"R", 0, 0, 0, 0, 0, 1, 0, 1, 1,
                       fname, psargs)


def _file_note(vmas: list) -> bytes:
    files = [v for v in vmas if v.name.startswith("/")]
    desc = struct.pack("<QQ", len(files), PAGE)
    for v in files:
        desc += struct.pack("<QQQ", v.start, v.end, v.offset // PAGE)
    desc += b"".join(v.name.encode() + b"\0" for v in files)
    return desc


def write_core(f, guest: Guest, threads: list[ThreadState], sig: int) -> None:
    mem = guest.mem
    vmas = sorted(guest.mm.vmas(), key=lambda v: v.start)
    notes = b"".join(
        _note(b"CORE", NT_PRSTATUS, _prstatus(t, sig)) + _note(b"CORE", NT_FPREGSET, t.fpu)
        for t in threads)
    notes += _note(b"CORE", NT_PRPSINFO, _prpsinfo(guest))
    notes += _note(b"CORE", NT_AUXV, read_auxv(mem, guest.image.rsp))
    notes += _note(b"CORE", NT_FILE, _file_note(vmas))
    phnum = 1 + len(vmas)
    offset = 64 + 56 * phnum
    headers = [struct.pack("<IIQQQQQQ", PT_NOTE, 0, offset, 0, 0, len(notes), 0, 4)]
    data_at = -(-(offset + len(notes)) // PAGE) * PAGE
    segments = []
    for v in vmas:
        size = v.end - v.start
        keep = size if v.prot and size <= MAX_SEGMENT else 0
        flags = (4 if v.prot & 1 else 0) | (2 if v.prot & 2 else 0) | (1 if v.prot & 4 else 0)
        headers.append(struct.pack("<IIQQQQQQ", PT_LOAD, flags, data_at if keep else 0,
                                   v.start, 0, keep, size, PAGE))
        if keep:
            segments.append((data_at, v.start, size))
            data_at += size
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    f.write(ident + struct.pack("<HHIQQQIHHHHHH", ET_CORE, EM_X86_64, 1, 0, 64, 0, 0, 64, 56,
                                phnum, 64, 0, 0))
    f.write(b"".join(headers))
    f.write(notes)
    for at, start, size in segments:
        f.seek(at)
        for chunk in range(0, size, 1 << 22):
            n = min(1 << 22, size - chunk)
            try:
                f.write(mem.read(start + chunk, n))
            except SyscallError:
                f.write(bytes(n))
