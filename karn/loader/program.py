"""Loading a program the way execve does: the executable, its interpreter, the stack.

Two steps, as Linux's execve takes them: prepare() reads and checks every file (nothing
changes yet: an error leaves the caller's program running), map_executable() builds the
new image in an empty address space (past execve's point of no return).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from karn.abi.errno import SyscallError, errno_name
from karn.errors import ImageError
from karn.image.elfinfo import ElfInfo, inspect_elf, inspect_open_elf
from karn.kernel.fs.constants import S_IFDIR, S_IFMT
from karn.kernel.fs.file import HostFile, OpenFile, read_prefix
from karn.kernel.guestmem import GuestMemory
from karn.kernel.limits import STACK_SIZE
from karn.kernel.mm import PROT_READ, PROT_WRITE, AddressSpace
from karn.loader.aslr import FIXED, Placement
from karn.loader.elf_load import LoadedObject, extent, is_position_independent, load_object
from karn.loader.stack import StartInfo, build_stack
from karn.loader.vdso import TimeSource, map_vdso
from karn.platform.features import CpuFeatures

PIE_BASE = 0x5555_4000  # where a position-independent executable goes (+ aslr.py offset)
RT_SIGFRAME_BASE = 440 + 4  # struct rt_sigframe without FPU state, + FP_XSTATE_MAGIC2


# Records as plain classes with __slots__: a typing.NamedTuple costs ~0.1 ms of every
# start-up to create, and these are never used as tuples.
class ProgramImage:
    __slots__ = ("rip", "rsp", "objects", "execfn")

    def __init__(self, rip: int, rsp: int, objects: list[LoadedObject], execfn: bytes) -> None:
        self.rip = rip  # first instruction: the interpreter's entry, or the program's
        self.rsp = rsp
        self.objects = objects
        self.execfn = execfn  # the file execve was given (a script's, not its interpreter's)


class ElfFile:
    """An ELF object checked and ready to map: a regular host file's own host fd (a
    duplicate it owns until close(): its segments are mapped from the file, as Linux
    does, not read), or another file's bytes, read whole."""

    __slots__ = ("path", "info", "data", "fd")

    def __init__(self, path: str, info: ElfInfo, data: bytearray | None = None,
                 fd: int | None = None) -> None:
        self.path = path  # the guest path its mappings are named by
        self.info = info
        self.data = data
        self.fd = fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def open_elf(file: OpenFile, path: str, max_read: int) -> ElfFile:
    """Check the ELF object `file` (ImageError if unusable); a file that is not a host
    file is read whole, SyscallError EFBIG past max_read bytes."""
    if isinstance(file, HostFile) and file.is_regular:
        fd = os.dup(file.fd)
        try:
            return ElfFile(path, inspect_open_elf(fd, path), fd=fd)
        except BaseException:
            os.close(fd)
            raise
    st = file.stat()
    if st.mode & S_IFMT == S_IFDIR:
        raise SyscallError(errno.EISDIR)
    if st.size > max_read:
        raise SyscallError(errno.EFBIG)
    data = read_prefix(file, st.size)
    return ElfFile(path, inspect_elf(data, name=path), data=data)


class Executable:
    """A program read and checked, ready to map: the executable and its PT_INTERP."""

    __slots__ = ("main", "interp")

    def __init__(self, main: ElfFile, interp: ElfFile | None) -> None:
        self.main = main
        self.interp = interp

    def close(self) -> None:
        """Once mapped, or not to be: the host fds of its files."""
        self.main.close()
        if self.interp is not None:
            self.interp.close()


class LoadSettings:
    """What every program loaded into one VM shares: execve loads the next one alike."""

    __slots__ = ("cpu", "randomize", "clock")

    def __init__(self, cpu: CpuFeatures, randomize: bool, clock: TimeSource | None) -> None:
        self.cpu = cpu
        self.randomize = randomize  # ASLR (aslr.py); False: --no-aslr
        self.clock = clock  # keeps the vDSO's time page; None: no vDSO (--no-vdso)


OpenPath = Callable[[str], OpenFile]  # a guest file opened for reading, symlinks followed
READ_LIMIT = 1 << 30  # a program that is not a host file is read whole: at most this


def _open(open_path: OpenPath, path: str, what: str) -> ElfFile:
    try:
        file = open_path(path)
    except SyscallError as err:
        raise ImageError(f"{what} {path}: {errno_name(err.errno)} in the guest root") from None
    try:
        return open_elf(file, path, READ_LIMIT)
    except SyscallError as err:
        raise ImageError(f"{what} {path}: {errno_name(err.errno)} in the guest root") from None
    finally:
        file.close()


def prepare(open_path: OpenPath, path: str) -> Executable:
    """Check the program at `path` and its interpreter; ImageError if unusable (the
    Executable's close() gives back what it holds)."""
    main = _open(open_path, path, "program")
    if not main.info.interpreter:
        return Executable(main, None)
    try:
        return Executable(main, _open(open_path, main.info.interpreter,
                                      f"{path}: interpreter"))
    except BaseException:
        main.close()
        raise


def load_program(
    mem: GuestMemory,
    mm: AddressSpace,
    open_path: OpenPath,
    path: str,
    argv: list[bytes],
    envp: list[bytes],
    cpu: CpuFeatures,
    placement: Placement = FIXED,
    clock: TimeSource | None = None,
    execfn: str | None = None,
) -> ProgramImage:
    """Map the program (and its interpreter), the stack and, given a clock to keep its
    time page, the vDSO; returns where the first thread starts. execfn: the file the run
    was given, if not `path` (a `#!` script that `path` interprets)."""
    exe = prepare(open_path, path)
    try:
        return map_executable(mem, mm, exe, argv, envp, cpu, placement, clock,
                              (execfn or path).encode())
    finally:
        exe.close()


def map_executable(
    mem: GuestMemory,
    mm: AddressSpace,
    exe: Executable,
    argv: list[bytes],
    envp: list[bytes],
    cpu: CpuFeatures,
    placement: Placement,
    clock: TimeSource | None,
    execfn: bytes,
) -> ProgramImage:
    """Map a prepared program into `mm` (empty of program mappings); execfn is the path
    AT_EXECFN names (the one execve was given)."""
    info = exe.main.info
    low, _high = extent(info)
    pie_base = PIE_BASE + placement.pie_offset
    bias = pie_base - low if is_position_independent(info) else 0
    main = load_object(mem, mm, exe.main, bias)
    mm.set_brk_start(main.end)
    objects = [main]

    interp_base = 0
    rip = main.entry
    if exe.interp is not None:
        interp_info = exe.interp.info
        ilow, ihigh = extent(interp_info)
        try:
            interp_bias = mm.find_free(ihigh - ilow) - ilow
        except SyscallError:
            raise ImageError(f"{exe.interp.path}: no room in the guest address space") from None
        interp = load_object(mem, mm, exe.interp, interp_bias)
        objects.append(interp)
        interp_base, rip = interp.bias + ilow, interp.entry

    stack_top = mm.region.user_end - placement.stack_offset
    mm.map(stack_top - STACK_SIZE, STACK_SIZE, PROT_READ | PROT_WRITE, "[stack]")
    vdso = map_vdso(mem, mm, placement, clock) if clock is not None else 0
    start = StartInfo(
        argv=argv,
        envp=envp,
        execfn=execfn,
        phdr=main.phdr,
        phent=main.phentsize,
        phnum=main.phnum,
        entry=main.entry,
        interp_base=interp_base,
        hwcap=cpu.hwcap,
        hwcap2=cpu.hwcap2,
        minsigstksz=(cpu.xsave_size + RT_SIGFRAME_BASE + 63) & ~63,
        vdso=vdso,
    )
    rsp = build_stack(mem, stack_top, start)
    return ProgramImage(rip=rip, rsp=rsp, objects=objects, execfn=execfn)
