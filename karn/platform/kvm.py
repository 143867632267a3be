"""Opening /dev/kvm, creating a VM with its guest memory, and the static x86-64 set-up."""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from karn.abi.errno import SyscallError
from karn.abi.fastcall import WORK_PORT
from karn.errors import PlatformError
from karn.hints import Any
from karn.platform import kvm_abi as K
from karn.platform.features import CpuFeatures
from karn.platform.layout import (
    EXCEPTION_PORT_BASE,
    GIB,
    LARGE_PAGE,
    NULL_GUARD,
    PAGE,
    SYS_FAST_PAGES,
    SYS_FAST_SLOTS,
    SYS_IDT,
    SYS_PD_FIRST,
    SYS_PDPT,
    SYS_PML4,
    SYS_PT_LOW,
    SYS_PT_SYS,
    SYS_STUBS,
    SYS_TRAMPOLINE,
    SYSCALL_PORT,
    Layout,
)
from karn.platform.memory import HostGuestMemory

DEFAULT_DEVICE = "/dev/kvm"

# Page-table entry bits.
PTE_P = 1 << 0
PTE_W = 1 << 1
PTE_U = 1 << 2
PTE_PS = 1 << 7
PTE_NX = 1 << 63

# GDT selectors; user data precedes user code so that SYSRET's STAR arithmetic works.
SEL_KCODE = 0x08
SEL_KDATA = 0x10
SEL_UDATA = 0x18 | 3
SEL_UCODE = 0x20 | 3
SEL_TSS = 0x28
GDT_LIMIT = SEL_TSS + 15

# Exceptions that push an error code.
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})

# TSS: 104 bytes of fields, then an I/O permission bitmap covering ports 0..255.
TSS_IOPB_OFFSET = 0x68
TSS_IOPB_BYTES = 256 // 8
TSS_LIMIT = TSS_IOPB_OFFSET + TSS_IOPB_BYTES  # includes the bitmap's trailing 0xff byte

XCR0_WANTED = 0x7 | 0xE0  # x87, SSE, AVX, and AVX-512 state when the CPU has it


def _ioctl(fd: int, request: int, arg: Any = 0) -> int:  # an int or a ctypes structure
    return fcntl.ioctl(fd, request, arg)


def open_kvm(device: str | None = None) -> int:
    path = device or os.environ.get("KARN_KVM_DEVICE") or DEFAULT_DEVICE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PlatformError(f"{path} not found: KVM is not available on this host") from None
    except PermissionError:
        raise PlatformError(
            f"{path}: permission denied (add yourself to the 'kvm' group or run as root)"
        ) from None
    except OSError as err:
        raise PlatformError(f"{path}: {err.strerror}") from None
    try:
        version = _ioctl(fd, K.KVM_GET_API_VERSION)
    except OSError:
        os.close(fd)
        raise PlatformError(f"{path} is not a KVM device") from None
    if version != K.KVM_API_VERSION:
        os.close(fd)
        raise PlatformError(f"{path}: unsupported KVM API version {version}")
    if not _ioctl(fd, K.KVM_CHECK_EXTENSION, K.KVM_CAP_SYNC_REGS):
        os.close(fd)
        raise PlatformError(f"{path}: KVM lacks KVM_CAP_SYNC_REGS")
    return fd


def supported_cpuid(kvm_fd: int) -> K.kvm_cpuid2:
    cpuid = K.kvm_cpuid2(nent=K.MAX_CPUID_ENTRIES)
    _ioctl(kvm_fd, K.KVM_GET_SUPPORTED_CPUID, cpuid)
    return cpuid


def cpuid_entry(cpuid: K.kvm_cpuid2, function: int, index: int = 0) -> K.kvm_cpuid_entry2 | None:
    for i in range(cpuid.nent):
        entry = cpuid.entries[i]
        if entry.function == function and entry.index == index:
            return entry
    return None


class VirtualMachine:
    """A KVM VM whose guest memory and system tables are fully built before any vCPU runs."""

    def __init__(self, layout: Layout, device: str | None = None,
                 memory: HostGuestMemory | None = None, kvm_fd: int | None = None,
                 cpuid: K.kvm_cpuid2 | None = None) -> None:
        """A new VM; over `memory` (a forked monitor's inherited guest RAM, tables and all)
        nothing is built: a fresh VM reads the page tables already in it. `kvm_fd`: an
        open /dev/kvm (a forked monitor's inherited one: a confined monitor cannot open
        it again); `cpuid`: what it supports, if known (the parent's: the same device)."""
        self.layout = layout
        self.kvm_fd = open_kvm(device) if kvm_fd is None else kvm_fd
        try:
            self.fd = _ioctl(self.kvm_fd, K.KVM_CREATE_VM, 0)
        except OSError as err:
            raise PlatformError(f"cannot create a KVM virtual machine: {err.strerror}") from None
        self.vcpu_mmap_size = _ioctl(self.kvm_fd, K.KVM_GET_VCPU_MMAP_SIZE)
        self.cpuid = supported_cpuid(self.kvm_fd) if cpuid is None else cpuid
        adopted = memory is not None
        if memory is None:
            memory = HostGuestMemory(layout.span, NULL_GUARD, layout.user_end)
        self.memory = memory
        # Memory slots cover only what the guest maps (HostGuestMemory.cover), not the
        # span: a 4 GiB slot took 1.3 ms of CPU to set up, and a host fork's MMU-notifier
        # walk of it 0.45 ms (docs/design/processes.md 3.3). Adopted memory: one slot per
        # range the parent's slots covered.
        self._slots = 0
        try:
            for start, end in memory.covered:
                self._add_slot(start, end)
            memory.add_slot = self._add_slot
            if not adopted:
                memory.cover(layout.system_base, layout.span)  # tables, stubs, trampoline
        except (OSError, SyscallError) as err:
            reason = os.strerror(err.errno or 0)
            raise PlatformError(f"KVM refused guest memory: {reason}") from None
        if adopted:
            return
        self._build_page_tables()
        self._build_idt()
        self._build_code_pages()

    def _add_slot(self, start: int, end: int) -> None:
        """A memory slot for guest-physical [start, end) (OSError if KVM refuses)."""
        region = K.kvm_userspace_memory_region(
            slot=self._slots, flags=0, guest_phys_addr=start, memory_size=end - start,
            userspace_addr=self.memory.host_address + start)
        _ioctl(self.fd, K.KVM_SET_USER_MEMORY_REGION, region)
        self._slots += 1

    # -- static guest structures -------------------------------------------------------

    def _put64(self, addr: int, value: int) -> None:
        struct.pack_into("<Q", self.memory.raw, addr, value)

    def _put_table(self, addr: int, entries: list[int]) -> None:
        """Write a whole 512-entry paging structure in one go (start-up time matters)."""
        struct.pack_into("<512Q", self.memory.raw, addr, *entries)

    def _build_page_tables(self) -> None:
        lay = self.layout
        table = PTE_P | PTE_W | PTE_U  # flags of an entry pointing at a lower table
        pml4 = lay.system_page(SYS_PML4)
        pdpt = lay.system_page(SYS_PDPT)
        gibs = lay.span // GIB
        self._put64(pml4, pdpt | table)
        pds = [lay.system_page(SYS_PD_FIRST + g) for g in range(gibs)]
        self._put_table(pdpt, [pd | table for pd in pds] + [0] * (512 - gibs))
        large = PTE_P | PTE_W | PTE_U | PTE_PS
        for gib, pd in enumerate(pds):
            entries = [(gib * GIB + i * LARGE_PAGE) | large for i in range(512)]
            if gib == 0:
                # The lowest 2 MiB through a 4 KiB table: NULL guard pages stay not-present.
                entries[0] = lay.system_page(SYS_PT_LOW) | table
            if gib == gibs - 1:
                entries[511] = lay.system_page(SYS_PT_SYS) | table
            self._put_table(pd, entries)
        first_user = NULL_GUARD // PAGE
        low = [0] * first_user + [i * PAGE | table for i in range(first_user, 512)]
        self._put_table(lay.system_page(SYS_PT_LOW), low)
        # The system region: supervisor-only, except the trampoline (user, read+execute)
        # and the fast transport's slots (user, read+write, never executable).
        system = []
        for i in range(512):
            addr = lay.system_base + i * PAGE
            if i == SYS_TRAMPOLINE:
                system.append(addr | PTE_P | PTE_U)
            elif SYS_FAST_SLOTS <= i < SYS_FAST_SLOTS + SYS_FAST_PAGES:
                system.append(addr | PTE_P | PTE_W | PTE_U | PTE_NX)
            elif i == SYS_STUBS:
                system.append(addr | PTE_P)
            else:
                system.append(addr | PTE_P | PTE_W | PTE_NX)
        self._put_table(lay.system_page(SYS_PT_SYS), system)

    def build_cpu_tables(self, index: int) -> None:
        """vCPU `index`'s own GDT and TSS, whose IST1 is its own exception stack (layout.py).
        Only memory contents: the pages were mapped before the first KVM_RUN."""
        lay = self.layout
        gdt = lay.cpu_tables(index)
        tss = lay.cpu_tss(index)
        raw = self.memory.raw
        raw[gdt : lay.cpu_stack_top(index)] = bytes(lay.cpu_stack_top(index) - gdt)
        # Flat 64-bit segments: access byte and flags (L=1 for code).
        self._put64(gdt + SEL_KCODE, 0x00AF9A000000FFFF)
        self._put64(gdt + SEL_KDATA, 0x00CF92000000FFFF)
        self._put64(gdt + (SEL_UDATA & ~3), 0x00CFF2000000FFFF)
        self._put64(gdt + (SEL_UCODE & ~3), 0x00AFFA000000FFFF)
        low = (
            (TSS_LIMIT & 0xFFFF)
            | ((tss & 0xFFFFFF) << 16)
            | (0x89 << 40)  # present, 64-bit available TSS
            | (((tss >> 24) & 0xFF) << 56)
        )
        self._put64(gdt + SEL_TSS, low)
        self._put64(gdt + SEL_TSS + 8, tss >> 32)
        # TSS: RSP0 and IST1 both point at the exception stack. The I/O bitmap lets CPL3
        # reach only the syscall and work ports: under PVM `syscall` stays at CPL3, so
        # the trampoline's `out` is checked against it, and the fast transport's stubs
        # leave through them (karn/abi/fastcall.py); every other port raises #GP.
        stack_top = lay.cpu_stack_top(index)
        struct.pack_into("<Q", raw, tss + 4, stack_top)
        struct.pack_into("<Q", raw, tss + 0x24, stack_top)
        struct.pack_into("<H", raw, tss + 0x66, TSS_IOPB_OFFSET)
        bitmap = bytearray(b"\xff" * (TSS_IOPB_BYTES + 1))
        for port in (SYSCALL_PORT, WORK_PORT):
            bitmap[port // 8] &= ~(1 << (port % 8)) & 0xFF
        start = tss + TSS_IOPB_OFFSET
        raw[start : start + len(bitmap)] = bitmap

    def _build_idt(self) -> None:
        lay = self.layout
        # IDT: every vector 0..31 goes to its stub on IST1.
        idt = lay.system_page(SYS_IDT)
        stubs = lay.system_page(SYS_STUBS)
        for vector in range(32):
            handler = stubs + vector * 16
            dpl = 3 if vector in (3, 4) else 0  # int3 / into allowed from user mode
            type_attr = 0x80 | (dpl << 5) | 0xE  # present, interrupt gate
            low = (
                (handler & 0xFFFF)
                | (SEL_KCODE << 16)
                | (1 << 32)  # IST1
                | (type_attr << 40)
                | (((handler >> 16) & 0xFFFF) << 48)
            )
            self._put64(idt + vector * 16, low)
            self._put64(idt + vector * 16 + 8, handler >> 32)

    def _build_code_pages(self) -> None:
        # Exception stub: `out EXCEPTION_PORT_BASE+vector, al; hlt` — the port names the
        # vector, so no register is clobbered and the monitor sees the faulting state.
        stubs = self.layout.system_page(SYS_STUBS)
        for vector in range(32):
            code = bytes((0xE6, EXCEPTION_PORT_BASE + vector, 0xF4))
            self.memory.raw[stubs + vector * 16 : stubs + vector * 16 + len(code)] = code
        # Syscall trampoline: `out SYSCALL_PORT, al; sysretq` (see DESIGN.md: on PVM the
        # monitor returns to RCX itself; on hardware KVM the sysretq does).
        code = bytes((0xE6, SYSCALL_PORT, 0x48, 0x0F, 0x07))
        tramp = self.layout.trampoline
        self.memory.raw[tramp : tramp + len(code)] = code

    def cpu_features(self) -> CpuFeatures:
        leaf1 = cpuid_entry(self.cpuid, 1)
        xsave = cpuid_entry(self.cpuid, 0xD, 0)
        return CpuFeatures(
            hwcap=leaf1.edx if leaf1 else 0,
            hwcap2=0,  # CR4.FSGSBASE stays off, so no HWCAP2_FSGSBASE
            xsave_size=xsave.ebx if xsave and xsave.ebx else 512 + 64,
        )

    def xcr0(self) -> int:
        leaf = cpuid_entry(self.cpuid, 0xD, 0)
        supported = leaf.eax if leaf else 0x3
        return (supported & XCR0_WANTED) | 0x3

    def close(self) -> None:
        for fd in (getattr(self, "fd", -1), getattr(self, "kvm_fd", -1)):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError as err:
                    if err.errno != errno.EBADF:
                        raise
