"""Loading a program the way execve does: the executable, its interpreter, the stack."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from karn.abi.errno import SyscallError, errno_name
from karn.errors import ImageError
from karn.image.elfinfo import inspect_elf
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


class ProgramImage(NamedTuple):
    rip: int  # first instruction: the interpreter's entry, or the program's
    rsp: int
    objects: list[LoadedObject]


ReadFile = Callable[[str], bytes]


def _read(read_file: ReadFile, path: str, what: str) -> bytes:
    try:
        return read_file(path)
    except SyscallError as err:
        raise ImageError(f"{what} {path}: {errno_name(err.errno)} in the guest root") from None


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
    data = _read(read_file, path, "program")
    info = inspect_elf(data, name=path)
    low, _high = extent(info)
    pie_base = PIE_BASE + placement.pie_offset
    bias = pie_base - low if is_position_independent(info) else 0
    main = load_object(mem, mm, info, data, path, bias)
    mm.set_brk_start(main.end)
    objects = [main]

    interp_base = 0
    rip = main.entry
    if info.interpreter:
        interp_data = _read(read_file, info.interpreter, f"{path}: interpreter")
        interp_info = inspect_elf(interp_data, name=info.interpreter)
        ilow, ihigh = extent(interp_info)
        try:
            interp_bias = mm.find_free(ihigh - ilow) - ilow
        except SyscallError:
            raise ImageError(f"{info.interpreter}: no room in the guest address space") from None
        interp = load_object(mem, mm, interp_info, interp_data, info.interpreter, interp_bias)
        objects.append(interp)
        interp_base, rip = interp.bias + ilow, interp.entry

    stack_top = mm.region.user_end - placement.stack_offset
    mm.map(stack_top - STACK_SIZE, STACK_SIZE, PROT_READ | PROT_WRITE, "[stack]")
    vdso = map_vdso(mem, mm, placement, clock) if clock is not None else 0
    start = StartInfo(
        argv=argv,
        envp=envp,
        execfn=path.encode(),
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
