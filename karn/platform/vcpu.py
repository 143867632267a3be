"""A vCPU: long-mode register set-up at CPL3 and the exit loop.

The loop knows two kinds of exit the guest makes on purpose: the syscall trampoline's
port and the exception stubs' ports (layout.py). It hands syscalls to a callback and turns
exceptions into a GuestFault; it knows nothing about Linux.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from collections.abc import Callable
from typing import NamedTuple

from karn.errors import PlatformError
from karn.platform import kvm_abi as K
from karn.platform.kvm import (
    ERROR_CODE_VECTORS,
    SEL_KCODE,
    SEL_TSS,
    SEL_UCODE,
    SEL_UDATA,
    TSS_LIMIT,
    VirtualMachine,
)
from karn.platform.layout import (
    EXCEPTION_PORT_BASE,
    SYS_GDT,
    SYS_IDT,
    SYS_PML4,
    SYS_TSS,
    SYSCALL_PORT,
)

MASK64 = (1 << 64) - 1
SYNC_REGS_AND_SREGS = K.KVM_SYNC_X86_REGS | K.KVM_SYNC_X86_SREGS
# Linux's SYSCALL_MASK: TF, DF, IF, IOPL, NT, AC cleared on syscall entry.
SYSCALL_FLAGS_MASK = 0x47700

GPR_NAMES = tuple(name for name, _ in K.kvm_regs._fields_)


class GuestFault(NamedTuple):
    """A CPU exception raised by guest code, with the state at the faulting instruction."""

    vector: int
    error_code: int | None
    rip: int
    rsp: int
    rflags: int
    cr2: int
    regs: dict[str, int]
    fs_base: int


SyscallHandler = Callable[[int, int, int, int, int, int, int], int]


def _segment(selector: int, code: bool, dpl: int) -> K.kvm_segment:
    return K.kvm_segment(
        base=0,
        limit=0xFFFFFFFF,
        selector=selector,
        type=0xB if code else 0x3,
        present=1,
        dpl=dpl,
        db=0 if code else 1,
        s=1,
        l=1 if code else 0,
        g=1,
    )


class Vcpu:
    def __init__(self, vm: VirtualMachine, index: int) -> None:
        self.vm = vm
        self.index = index
        try:
            self.fd = fcntl.ioctl(vm.fd, K.KVM_CREATE_VCPU, index)
        except OSError as err:
            raise PlatformError(f"cannot create vCPU {index}: {err.strerror}") from None
        self._run_map = mmap.mmap(self.fd, vm.vcpu_mmap_size, mmap.MAP_SHARED)
        self.run_page = K.kvm_run.from_buffer(self._run_map)
        self.regs = self.run_page.s.regs
        self.sregs = self.run_page.s.sregs
        fcntl.ioctl(self.fd, K.KVM_SET_CPUID2, vm.cpuid)
        self._init_system_state()

    def _init_system_state(self) -> None:
        lay = self.vm.layout
        sregs = K.kvm_sregs()
        fcntl.ioctl(self.fd, K.KVM_GET_SREGS, sregs)
        sregs.cs = _segment(SEL_UCODE, True, 3)
        for name in ("ds", "es", "fs", "gs", "ss"):
            setattr(sregs, name, _segment(SEL_UDATA, False, 3))
        sregs.tr = K.kvm_segment(
            base=lay.system_page(SYS_TSS), limit=TSS_LIMIT, selector=SEL_TSS, type=0xB, present=1
        )
        sregs.ldt = K.kvm_segment(unusable=1)
        sregs.gdt = K.kvm_dtable(base=lay.system_page(SYS_GDT), limit=SEL_TSS + 15)
        sregs.idt = K.kvm_dtable(base=lay.system_page(SYS_IDT), limit=32 * 16 - 1)
        sregs.cr0 = K.CR0_PE | K.CR0_MP | K.CR0_ET | K.CR0_NE | K.CR0_WP | K.CR0_AM | K.CR0_PG
        sregs.cr3 = lay.system_page(SYS_PML4)
        sregs.cr4 = K.CR4_PAE | K.CR4_OSFXSR | K.CR4_OSXMMEXCPT | K.CR4_OSXSAVE
        sregs.efer = K.EFER_SCE | K.EFER_LME | K.EFER_LMA | K.EFER_NXE
        fcntl.ioctl(self.fd, K.KVM_SET_SREGS, sregs)

        xcrs = K.kvm_xcrs(nr_xcrs=1)
        xcrs.xcrs[0].xcr = 0
        xcrs.xcrs[0].value = self.vm.xcr0()
        try:
            fcntl.ioctl(self.fd, K.KVM_SET_XCRS, xcrs)
        except OSError as err:
            raise PlatformError(f"KVM refused XCR0 {xcrs.xcrs[0].value:#x}: {err}") from None

        # SYSRET loads CS from STAR[63:48]+16 and SS from STAR[63:48]+8.
        star = (((SEL_UDATA & ~3) - 8) << 48) | (SEL_KCODE << 32)
        self.set_msrs(
            {
                K.MSR_STAR: star,
                K.MSR_LSTAR: lay.trampoline,
                K.MSR_CSTAR: lay.trampoline,
                K.MSR_SYSCALL_MASK: SYSCALL_FLAGS_MASK,
            }
        )
        fpu = K.kvm_fpu(fcw=0x37F, mxcsr=0x1F80)
        fcntl.ioctl(self.fd, K.KVM_SET_FPU, fpu)
        self.run_page.kvm_valid_regs = SYNC_REGS_AND_SREGS

    def set_msrs(self, values: dict[int, int]) -> None:
        msrs = K.kvm_msrs(nmsrs=len(values))
        for i, (index, data) in enumerate(values.items()):
            msrs.entries[i].index = index
            msrs.entries[i].data = data
        done = fcntl.ioctl(self.fd, K.KVM_SET_MSRS, msrs)
        if done != len(values):
            raise PlatformError(f"KVM refused MSR {msrs.entries[done].index:#x}")

    def start(self, rip: int, rsp: int, regs: dict[str, int] | None = None) -> None:
        r = K.kvm_regs(rip=rip, rsp=rsp, rflags=0x2)
        for name, value in (regs or {}).items():
            setattr(r, name, value)
        fcntl.ioctl(self.fd, K.KVM_SET_REGS, r)

    # -- the kernel's view of this CPU (karn.kernel.process.Cpu) -------------------------

    def get_fs_base(self) -> int:
        return self.sregs.fs.base

    def set_fs_base(self, value: int) -> None:
        self.set_msrs({K.MSR_FS_BASE: value})

    def get_gs_base(self) -> int:
        return self.sregs.gs.base

    def set_gs_base(self, value: int) -> None:
        self.set_msrs({K.MSR_GS_BASE: value})

    def snapshot_regs(self) -> dict[str, int]:
        regs = self.regs
        return {name: getattr(regs, name) for name in GPR_NAMES}

    # -- the exit loop ------------------------------------------------------------------

    def run(self, syscall: SyscallHandler) -> GuestFault:
        """Run until the guest faults; syscalls are served by `syscall` on the way.

        The syscall handler ends the loop by raising (exit, fatal signal); a fault is
        returned for the caller to turn into a signal.
        """
        fd = self.fd
        page = self.run_page
        regs = self.regs
        sregs = self.sregs
        io = page.exit.io
        ioctl = fcntl.ioctl
        kvm_run = K.KVM_RUN
        exit_io = K.KVM_EXIT_IO
        dirty = K.KVM_SYNC_X86_REGS
        while True:
            ioctl(fd, kvm_run, 0)
            reason = page.exit_reason
            if reason == exit_io:
                port = io.port
                if port == SYSCALL_PORT:
                    result = syscall(
                        regs.rax, regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9
                    )
                    regs.rax = result & MASK64
                    if sregs.cs.selector & 3:
                        # PVM: `syscall` stayed at CPL3, so return to the caller here.
                        regs.rip = regs.rcx
                        regs.rflags = regs.r11
                    page.kvm_dirty_regs = dirty
                    continue
                if EXCEPTION_PORT_BASE <= port < EXCEPTION_PORT_BASE + 32:
                    return self._fault(port - EXCEPTION_PORT_BASE)
            self._unexpected_exit(reason)

    def _fault(self, vector: int) -> GuestFault:
        """Read the interrupt frame the CPU pushed on the IST stack."""
        mem = self.vm.memory.raw
        sp = self.regs.rsp
        error_code = None
        if vector in ERROR_CODE_VECTORS:
            error_code = struct.unpack_from("<Q", mem, sp)[0]
            sp += 8
        rip, _cs, rflags, rsp, _ss = struct.unpack_from("<5Q", mem, sp)
        regs = self.snapshot_regs()
        regs.update(rip=rip, rsp=rsp, rflags=rflags)
        return GuestFault(
            vector=vector,
            error_code=error_code,
            rip=rip,
            rsp=rsp,
            rflags=rflags,
            cr2=self.sregs.cr2,
            regs=regs,
            fs_base=self.sregs.fs.base,
        )

    def _unexpected_exit(self, reason: int) -> None:
        name = K.EXIT_REASON_NAMES.get(reason, str(reason))
        detail = ""
        if reason == K.KVM_EXIT_INTERNAL_ERROR:
            detail = f" suberror {self.run_page.exit.internal.suberror}"
        elif reason == K.KVM_EXIT_IO:
            detail = f" port {self.run_page.exit.io.port:#x}"
        raise PlatformError(f"unexpected VM exit {name}{detail} at rip {self.regs.rip:#x}")

    def close(self) -> None:
        del self.regs, self.sregs, self.run_page
        self._run_map.close()
        os.close(self.fd)
