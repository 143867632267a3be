"""Loading a program the way execve does: the executable, its interpreter, the stack.

Two steps, as Linux's execve takes them: prepare() reads and checks every file (nothing
changes yet: an error leaves the caller's program running), map_executable() builds the
new image in an empty address space (past execve's point of no return).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from karn.abi.errno import SyscallError, errno_name
from karn.errors import ImageError
from karn.image.elfinfo import ElfInfo, inspect_elf, inspect_open_elf
from karn.image.shebang import BINPRM_BUF_SIZE, MAX_SCRIPT_DEPTH, parse_shebang
from karn.kernel.fs.file import HostFile, OpenFile, read_prefix, read_whole
from karn.kernel.guestmem import GuestMemory
from karn.kernel.limits import STACK_SIZE
from karn.kernel.mm import PROT_READ, PROT_WRITE, AddressSpace
from karn.loader.aslr import Placement
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


def open_elf(file: OpenFile, path: str) -> ElfFile:
    """Check the ELF object `file` (ImageError if unusable); a file that is not a host
    file is read whole (fs/file.py read_whole's errors)."""
    if isinstance(file, HostFile) and file.is_regular:
        fd = os.dup(file.fd)
        try:
            return ElfFile(path, inspect_open_elf(fd, path), fd=fd)
        except BaseException:
            os.close(fd)
            raise
    data = read_whole(file)
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


def _open(open_path: OpenPath, path: str, what: str) -> OpenFile:
    try:
        return open_path(path)
    except SyscallError as err:
        raise ImageError(f"{what} {path}: {errno_name(err.errno)} in the guest root") from None


def _elf(file: OpenFile, path: str, what: str) -> ElfFile:
    try:
        return open_elf(file, path)
    except SyscallError as err:
        raise ImageError(f"{what} {path}: {errno_name(err.errno)} in the guest root") from None


def _script(file: OpenFile, path: str) -> tuple[bytes, bytes | None] | None:
    """The interpreter and argument of the `#!` line `file` starts with, if it does."""
    try:
        head = bytes(read_prefix(file, BINPRM_BUF_SIZE))
    except SyscallError:
        return None  # (a directory): _elf says why
    try:
        return parse_shebang(head)
    except SyscallError:
        raise ImageError(f"{path}: its `#!` line names no interpreter") from None


def prepare(open_path: OpenPath, path: str, argv: list[bytes]
            ) -> tuple[Executable, list[bytes]]:
    """Check the program at `path` and its interpreter; ImageError if unusable (the
    Executable's close() gives back what it holds). A `#!` script runs the program its
    line names, as execve runs it: argv becomes [interpreter, its argument, path,
    argv[1:]...], for as many levels as Linux allows. Each file is opened once."""
    first = path
    for _ in range(MAX_SCRIPT_DEPTH + 1):
        file = _open(open_path, path, "program")
        try:
            script = _script(file, path)
            if script is None:
                main = _elf(file, path, "program")
                break
        finally:
            file.close()
        interp, arg = script
        argv = [interp, *([arg] if arg is not None else []), os.fsencode(path), *argv[1:]]
        path = os.fsdecode(interp)
    else:
        raise ImageError(f"{first}: too many levels of `#!` interpreters")
    if not main.info.interpreter:
        return Executable(main, None), argv
    try:
        what = f"{path}: interpreter"
        file = _open(open_path, main.info.interpreter, what)
        try:
            return Executable(main, _elf(file, main.info.interpreter, what)), argv
        finally:
            file.close()
    except BaseException:
        main.close()
        raise


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
    mm.prefault(stack_top - STACK_SIZE, stack_top, stack=True)
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
