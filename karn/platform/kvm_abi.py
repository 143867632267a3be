"""The KVM ioctl ABI for x86-64: ioctl numbers and structures, with the kernel's field names.

Everything that knows a KVM structure offset lives here (see linux/kvm.h, asm/kvm.h).
"""

import ctypes as C

KVMIO = 0xAE
_IOC_WRITE = 1
_IOC_READ = 2


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (KVMIO << 8) | nr


def _io(nr: int) -> int:
    return _ioc(0, nr, 0)


class kvm_regs(C.Structure):
    _fields_ = [
        (name, C.c_uint64)
        for name in (
            "rax rbx rcx rdx rsi rdi rsp rbp r8 r9 r10 r11 r12 r13 r14 r15 rip rflags".split()
        )
    ]


class kvm_segment(C.Structure):
    _fields_ = [
        ("base", C.c_uint64),
        ("limit", C.c_uint32),
        ("selector", C.c_uint16),
        ("type", C.c_uint8),
        ("present", C.c_uint8),
        ("dpl", C.c_uint8),
        ("db", C.c_uint8),
        ("s", C.c_uint8),
        ("l", C.c_uint8),
        ("g", C.c_uint8),
        ("avl", C.c_uint8),
        ("unusable", C.c_uint8),
        ("padding", C.c_uint8),
    ]


class kvm_dtable(C.Structure):
    _fields_ = [("base", C.c_uint64), ("limit", C.c_uint16), ("padding", C.c_uint16 * 3)]


class kvm_sregs(C.Structure):
    _fields_ = [
        ("cs", kvm_segment),
        ("ds", kvm_segment),
        ("es", kvm_segment),
        ("fs", kvm_segment),
        ("gs", kvm_segment),
        ("ss", kvm_segment),
        ("tr", kvm_segment),
        ("ldt", kvm_segment),
        ("gdt", kvm_dtable),
        ("idt", kvm_dtable),
        ("cr0", C.c_uint64),
        ("cr2", C.c_uint64),
        ("cr3", C.c_uint64),
        ("cr4", C.c_uint64),
        ("cr8", C.c_uint64),
        ("efer", C.c_uint64),
        ("apic_base", C.c_uint64),
        ("interrupt_bitmap", C.c_uint64 * 4),
    ]


class kvm_vcpu_events(C.Structure):
    _fields_ = [("raw", C.c_uint8 * 64)]


class kvm_sync_regs(C.Structure):
    _fields_ = [("regs", kvm_regs), ("sregs", kvm_sregs), ("events", kvm_vcpu_events)]


class kvm_run_io(C.Structure):
    _fields_ = [
        ("direction", C.c_uint8),
        ("size", C.c_uint8),
        ("port", C.c_uint16),
        ("count", C.c_uint32),
        ("data_offset", C.c_uint64),
    ]


class kvm_run_mmio(C.Structure):
    _fields_ = [
        ("phys_addr", C.c_uint64),
        ("data", C.c_uint8 * 8),
        ("len", C.c_uint32),
        ("is_write", C.c_uint8),
    ]


class kvm_run_internal(C.Structure):
    _fields_ = [("suberror", C.c_uint32), ("ndata", C.c_uint32), ("data", C.c_uint64 * 16)]


class kvm_run_fail_entry(C.Structure):
    _fields_ = [("hardware_entry_failure_reason", C.c_uint64), ("cpu", C.c_uint32)]


class kvm_run_exit_union(C.Union):
    _fields_ = [
        ("io", kvm_run_io),
        ("mmio", kvm_run_mmio),
        ("internal", kvm_run_internal),
        ("fail_entry", kvm_run_fail_entry),
        ("padding", C.c_char * 256),
    ]


class kvm_run(C.Structure):
    _fields_ = [
        ("request_interrupt_window", C.c_uint8),
        ("immediate_exit", C.c_uint8),
        ("padding1", C.c_uint8 * 6),
        ("exit_reason", C.c_uint32),
        ("ready_for_interrupt_injection", C.c_uint8),
        ("if_flag", C.c_uint8),
        ("flags", C.c_uint16),
        ("cr8", C.c_uint64),
        ("apic_base", C.c_uint64),
        ("exit", kvm_run_exit_union),
        ("kvm_valid_regs", C.c_uint64),
        ("kvm_dirty_regs", C.c_uint64),
        ("s", kvm_sync_regs),
    ]


class kvm_userspace_memory_region(C.Structure):
    _fields_ = [
        ("slot", C.c_uint32),
        ("flags", C.c_uint32),
        ("guest_phys_addr", C.c_uint64),
        ("memory_size", C.c_uint64),
        ("userspace_addr", C.c_uint64),
    ]


class kvm_cpuid_entry2(C.Structure):
    _fields_ = [
        ("function", C.c_uint32),
        ("index", C.c_uint32),
        ("flags", C.c_uint32),
        ("eax", C.c_uint32),
        ("ebx", C.c_uint32),
        ("ecx", C.c_uint32),
        ("edx", C.c_uint32),
        ("padding", C.c_uint32 * 3),
    ]


MAX_CPUID_ENTRIES = 256


class kvm_cpuid2(C.Structure):
    _fields_ = [
        ("nent", C.c_uint32),
        ("padding", C.c_uint32),
        ("entries", kvm_cpuid_entry2 * MAX_CPUID_ENTRIES),
    ]


class kvm_msr_entry(C.Structure):
    _fields_ = [("index", C.c_uint32), ("reserved", C.c_uint32), ("data", C.c_uint64)]


class kvm_msrs(C.Structure):
    _fields_ = [("nmsrs", C.c_uint32), ("pad", C.c_uint32), ("entries", kvm_msr_entry * 16)]


class kvm_fpu(C.Structure):
    _fields_ = [
        ("fpr", C.c_uint8 * 128),
        ("fcw", C.c_uint16),
        ("fsw", C.c_uint16),
        ("ftwx", C.c_uint8),
        ("pad1", C.c_uint8),
        ("last_opcode", C.c_uint16),
        ("last_ip", C.c_uint64),
        ("last_dp", C.c_uint64),
        ("xmm", C.c_uint8 * 256),
        ("mxcsr", C.c_uint32),
        ("pad2", C.c_uint32),
    ]


class kvm_xsave(C.Structure):
    _fields_ = [("region", C.c_uint32 * 1024)]


class kvm_xcr(C.Structure):
    _fields_ = [("xcr", C.c_uint32), ("reserved", C.c_uint32), ("value", C.c_uint64)]


class kvm_xcrs(C.Structure):
    _fields_ = [
        ("nr_xcrs", C.c_uint32),
        ("flags", C.c_uint32),
        ("xcrs", kvm_xcr * 16),
        ("padding", C.c_uint64 * 16),
    ]


KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_GET_SUPPORTED_CPUID = _ioc(_IOC_READ | _IOC_WRITE, 0x05, 8)
KVM_CREATE_VCPU = _io(0x41)
KVM_SET_USER_MEMORY_REGION = _ioc(_IOC_WRITE, 0x46, C.sizeof(kvm_userspace_memory_region))
KVM_SET_TSS_ADDR = _io(0x47)
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ioc(_IOC_READ, 0x81, C.sizeof(kvm_regs))
KVM_SET_REGS = _ioc(_IOC_WRITE, 0x82, C.sizeof(kvm_regs))
KVM_GET_SREGS = _ioc(_IOC_READ, 0x83, C.sizeof(kvm_sregs))
KVM_SET_SREGS = _ioc(_IOC_WRITE, 0x84, C.sizeof(kvm_sregs))
KVM_GET_MSRS = _ioc(_IOC_READ | _IOC_WRITE, 0x88, 8)
KVM_SET_MSRS = _ioc(_IOC_WRITE, 0x89, 8)
KVM_GET_FPU = _ioc(_IOC_READ, 0x8C, C.sizeof(kvm_fpu))
KVM_SET_FPU = _ioc(_IOC_WRITE, 0x8D, C.sizeof(kvm_fpu))
KVM_SET_CPUID2 = _ioc(_IOC_WRITE, 0x90, 8)
KVM_GET_XSAVE = _ioc(_IOC_READ, 0xA4, C.sizeof(kvm_xsave))
KVM_SET_XSAVE = _ioc(_IOC_WRITE, 0xA5, C.sizeof(kvm_xsave))
KVM_SET_XCRS = _ioc(_IOC_WRITE, 0xA7, C.sizeof(kvm_xcrs))
KVM_GET_TSC_KHZ = _io(0xA3)  # a vCPU's guest TSC rate, kHz

KVM_API_VERSION = 12

KVM_CAP_SYNC_REGS = 74
KVM_CAP_IMMEDIATE_EXIT = 136

KVM_SYNC_X86_REGS = 1 << 0
KVM_SYNC_X86_SREGS = 1 << 1
KVM_SYNC_X86_EVENTS = 1 << 2

KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_INTERNAL_ERROR = 17

EXIT_REASON_NAMES = {
    KVM_EXIT_UNKNOWN: "UNKNOWN",
    KVM_EXIT_EXCEPTION: "EXCEPTION",
    KVM_EXIT_IO: "IO",
    KVM_EXIT_HLT: "HLT",
    KVM_EXIT_MMIO: "MMIO",
    KVM_EXIT_SHUTDOWN: "SHUTDOWN",
    KVM_EXIT_FAIL_ENTRY: "FAIL_ENTRY",
    KVM_EXIT_INTR: "INTR",
    KVM_EXIT_INTERNAL_ERROR: "INTERNAL_ERROR",
}

KVM_EXIT_IO_OUT = 1

# x86 architectural constants used by the long-mode set-up.
CR0_PE = 1 << 0
CR0_MP = 1 << 1
CR0_ET = 1 << 4
CR0_NE = 1 << 5
CR0_WP = 1 << 16
CR0_AM = 1 << 18
CR0_PG = 1 << 31
CR4_PAE = 1 << 5
CR4_OSFXSR = 1 << 9
CR4_OSXMMEXCPT = 1 << 10
CR4_FSGSBASE = 1 << 16
CR4_OSXSAVE = 1 << 18
EFER_SCE = 1 << 0
EFER_LME = 1 << 8
EFER_LMA = 1 << 10
EFER_NXE = 1 << 11

MSR_IA32_TSC = 0x10
MSR_STAR = 0xC0000081
MSR_LSTAR = 0xC0000082
MSR_CSTAR = 0xC0000083
MSR_SYSCALL_MASK = 0xC0000084
MSR_FS_BASE = 0xC0000100
MSR_GS_BASE = 0xC0000101
MSR_KERNEL_GS_BASE = 0xC0000102
