"""Loading a program the way execve does: the executable, its interpreter, the stack.

Two steps, as Linux's execve takes them: prepare() reads and checks every file (nothing
changes yet: an error leaves the caller's program running), map_executable() builds the
new image in an empty address space (past execve's point of no return).
"""

from __future__ import annotations

from collections.abc import Callable

from karn.abi.errno import SyscallError, errno_name
from karn.errors import ImageError
from karn.image.elfinfo import ElfInfo, inspect_elf
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
    __slots__ = ("rip", "rsp", "objects")

    def __init__(self, rip: int, rsp: int, objects: list[LoadedObject]) -> None:
        self.rip = rip  # first instruction: the interpreter's entry, or the program's
        self.rsp = rsp
        self.objects = objects


class ElfFile:
    __slots__ = ("path", "data", "info")

    def __init__(self, path: str, data: bytearray, info: ElfInfo) -> None:
        self.path = path  # the guest path its mappings are named by
        self.data = data
        self.info = info


class Executable:
    """A program read and checked, ready to map: the executable and its PT_INTERP."""

    __slots__ = ("main", "interp")

    def __init__(self, main: ElfFile, interp: ElfFile | None) -> None:
        self.main = main
        self.interp = interp


class LoadSettings:
    """What every program loaded into one VM shares: execve loads the next one alike."""

    __slots__ = ("cpu", "randomize", "clock")

    def __init__(self, cpu: CpuFeatures, randomize: bool, clock: TimeSource | None) -> None:
        self.cpu = cpu
        self.randomize = randomize  # ASLR (aslr.py); False: --no-aslr
        self.clock = clock  # keeps the vDSO's time page; None: no vDSO (--no-vdso)


ReadFile = Callable[[str], bytearray]  # a file's bytes as read: never copied (fs/file.py)


def _read(read_file: ReadFile, path: str, what: str) -> bytearray:
    try:
        return read_file(path)
    except SyscallError as err:
        raise ImageError(f"{what} {path}: {errno_name(err.errno)} in the guest root") from None


def prepare(read_file: ReadFile, path: str) -> Executable:
    """Read and check the program at `path` and its interpreter; ImageError if unusable."""
    data = _read(read_file, path, "program")
    info = inspect_elf(data, name=path)
    if not info.interpreter:
        return Executable(ElfFile(path, data, info), None)
    interp_data = _read(read_file, info.interpreter, f"{path}: interpreter")
    interp = ElfFile(info.interpreter, interp_data,
                     inspect_elf(interp_data, name=info.interpreter))
    return Executable(ElfFile(path, data, info), interp)


def load_program(
    mem: GuestMemory,
    mm: AddressSpace,
    read_file: ReadFile,
    path: str,
    argv: list[bytes],
    envp: list[bytes],
    cpu: CpuFeatures,
    placement: Placement = FIXED,
    clock: TimeSource | None = None,
) -> ProgramImage:
    """Map the program (and its interpreter), the stack and, given a clock to keep its
    time page, the vDSO; returns where the first thread starts."""
    return map_executable(mem, mm, prepare(read_file, path), argv, envp, cpu, placement,
                          clock, path.encode())


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
    info, path = exe.main.info, exe.main.path
    low, _high = extent(info)
    pie_base = PIE_BASE + placement.pie_offset
    bias = pie_base - low if is_position_independent(info) else 0
    main = load_object(mem, mm, info, exe.main.data, path, bias)
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
        interp = load_object(mem, mm, interp_info, exe.interp.data, exe.interp.path,
                             interp_bias)
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
    return ProgramImage(rip=rip, rsp=rsp, objects=objects)
