"""Guest address-space layout, fixed before the first KVM_RUN.

Under PVM the guest never sees page-table edits made after it first ran (DESIGN.md), so
the whole address space is mapped once: guest virtual == guest physical, 2 MiB pages,
user read/write/execute, except
  * [0, NULL_GUARD)          not present: NULL dereferences fault like on Linux;
  * the top 2 MiB             supervisor-only system pages (page tables, IDT, exception
                              stubs, each vCPU's GDT, TSS and exception stack) plus one
                              user-executable
                              trampoline page for `syscall` and the user read/write
                              (never executable) slots of the fast-syscall transport.
Host memory behind it is MAP_NORESERVE: pages cost nothing until the guest touches them.
KVM's memory slots cover only what the guest has mapped (memory.py, cover): a slot's
set-up, and a host fork's walk of it, cost by its size.
"""

from __future__ import annotations

from karn.hints import NamedTuple

PAGE = 0x1000
LARGE_PAGE = 0x200000
GIB = 1 << 30
NULL_GUARD = 0x10000  # Linux's default vm.mmap_min_addr

# Port numbers of the exits the guest makes (out imm8, al).
SYSCALL_PORT = 0x10
EXCEPTION_PORT_BASE = 0x20  # + vector, for vectors 0..31

# Page indexes inside the system region (the top 2 MiB).
SYS_PML4 = 0
SYS_PDPT = 1
SYS_PT_LOW = 2  # 4 KiB page table for [0, 2 MiB): the NULL guard
SYS_PT_SYS = 3  # 4 KiB page table for the system region itself
SYS_IDT = 5
SYS_STUBS = 7  # exception stubs, supervisor executable
SYS_TRAMPOLINE = 8  # syscall trampoline, user executable
SYS_PD_FIRST = 16  # one page directory per GiB of address space
SYS_FAST_SLOTS = 128  # the fast transport's per-vCPU slots (karn/abi/fastcall.py)
SYS_FAST_PAGES = 128  # 8 slots of 512 bytes a page: MAX_VCPUS of them
MAX_VCPUS = 1024
# Each vCPU's own descriptor tables and exception stack, CPU_TABLES_SIZE bytes apiece: its
# GDT at +0, its TSS at +CPU_TSS_OFFSET, and the stack below +CPU_TABLES_SIZE (IST1).
# One exception stack per vCPU: two threads faulting at once must not share a frame.
SYS_CPU_TABLES = 256  # to page 511, the last: MAX_VCPUS of them
CPU_TABLES_SIZE = 1024
CPU_TSS_OFFSET = 64


class Layout(NamedTuple):
    span: int  # bytes of guest address space (multiple of 1 GiB)

    @property
    def system_base(self) -> int:
        return self.span - LARGE_PAGE

    def system_page(self, index: int) -> int:
        return self.system_base + index * PAGE

    @property
    def user_start(self) -> int:
        return NULL_GUARD

    @property
    def user_end(self) -> int:
        return self.system_base

    @property
    def trampoline(self) -> int:
        return self.system_page(SYS_TRAMPOLINE)

    @property
    def fast_slots(self) -> int:
        return self.system_page(SYS_FAST_SLOTS)

    def cpu_tables(self, index: int) -> int:
        """Where vCPU `index` keeps its GDT (here), TSS and exception stack."""
        if not 0 <= index < MAX_VCPUS:
            raise ValueError(f"vCPU index {index} out of range")
        return self.system_page(SYS_CPU_TABLES) + index * CPU_TABLES_SIZE

    def cpu_tss(self, index: int) -> int:
        return self.cpu_tables(index) + CPU_TSS_OFFSET

    def cpu_stack_top(self, index: int) -> int:
        return self.cpu_tables(index) + CPU_TABLES_SIZE


def layout_for(span: int) -> Layout:
    if span % GIB or span < GIB:
        raise ValueError("address space span must be a positive multiple of 1 GiB")
    if SYS_PD_FIRST + span // GIB > SYS_FAST_SLOTS:
        raise ValueError("address space span too large for the system region")
    return Layout(span)
