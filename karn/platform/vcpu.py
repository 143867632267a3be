"""A vCPU: long-mode register set-up at CPL3 and the exit loop.

The loop knows the exits the guest makes on purpose: the syscall trampoline's port, the
exception stubs' ports (layout.py) and, with the fast transport (platform/fastcall), the
work port of an answered call. It hands syscalls to a callback and turns exceptions into
a GuestFault; it knows nothing about Linux.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import struct
import threading

from karn.abi.errno import SyscallError
from karn.abi.fastcall import PATCHED_BEFORE_SERVED, WORK_PORT
from karn.abi.faults import HOST_MEMORY_FAULT, GuestFault
from karn.errors import PlatformError
from karn.hints import TYPE_CHECKING, Protocol
from karn.platform import kvm_abi as K
from karn.platform.kvm import (
    ERROR_CODE_VECTORS,
    GDT_LIMIT,
    SEL_KCODE,
    SEL_TSS,
    SEL_UCODE,
    SEL_UDATA,
    TSS_LIMIT,
    VirtualMachine,
)
from karn.platform.layout import (
    EXCEPTION_PORT_BASE,
    SYS_IDT,
    SYS_PML4,
    SYSCALL_PORT,
)

if TYPE_CHECKING:
    import signal

    from karn.platform.fastcall.patcher import Undo
    from karn.platform.fastcall.slotmask import SlotMask
    from karn.platform.fastcall.transport import FastTransport
    from karn.platform.warmup import WarmUp
else:  # the C module: `signal` makes enums of its names at import, ~0.5 ms of start-up
    import _signal as signal

MASK64 = (1 << 64) - 1
SYNC_REGS_AND_SREGS = K.KVM_SYNC_X86_REGS | K.KVM_SYNC_X86_SREGS
# Linux's SYSCALL_MASK: TF, DF, IF, IOPL, NT, AC cleared on syscall entry.
SYSCALL_FLAGS_MASK = 0x47700

GPR_NAMES = tuple(field[0] for field in K.kvm_regs._fields_)


STOP_USER, STOP_SYSCALL, STOP_FAULT = 0, 1, 2  # where the vCPU stopped

# The host signal that kicks a vCPU thread out of KVM_RUN (EINTR). Its handler does
# nothing; install_kick_handler() sets it up from the main thread.
KICK_SIGNAL = signal.SIGRTMIN + 2


def install_kick_handler() -> None:
    signal.signal(KICK_SIGNAL, lambda signum, frame: None)


class ExitClient(Protocol):
    work_pending: bool

    def syscall(self, nr: int, a0: int, a1: int, a2: int, a3: int, a4: int, a5: int) -> int: ...

    def fault(self, fault: GuestFault) -> None: ...

    def interrupted(self) -> None: ...

    def do_work(self) -> None: ...

    def answered(self, nr: int) -> None:
        """A fast call's answer stands (the vCPU returns from it): do the work due."""
        ...

    def serve_fast(self, nr: int, a0: int, a1: int, a2: int, a3: int, a4: int,
                   a5: int) -> int | None: ...

    def work_due(self) -> bool: ...

    def attach_waiters(self, waiters: FastTransport) -> None: ...

    def count_calls(self, nr: int, calls: int) -> None: ...

    def attach_mask(self, mask: SlotMask) -> None: ...

    def detach_mask(self) -> None: ...


class Gate(Protocol):
    gated: bool  # False: enter and leave do nothing (the loop tests it before calling)

    def enter(self, cpu: Vcpu) -> None: ...

    def leave(self, cpu: Vcpu) -> None: ...


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
        self._run_size = vm.vcpu_mmap_size
        self._run_address = _map_run_page(self.fd, self._run_size)
        self.run_page = K.kvm_run.from_address(self._run_address)
        self.regs = self.run_page.s.regs
        self.sregs = self.run_page.s.sregs
        fcntl.ioctl(self.fd, K.KVM_SET_CPUID2, vm.cpuid)
        self._init_system_state()
        self._user_cs = _segment(SEL_UCODE, True, 3)
        self._user_ss = _segment(SEL_UDATA, False, 3)
        self.xcr0 = vm.xcr0()
        self.xsave_size = vm.cpu_features().xsave_size
        self._stop = STOP_USER
        self._context_replaced = False
        self._fault_frame: tuple[int, int, int] | None = None
        # The host thread in run(), 0 outside it. A kick signals it only under this lock,
        # and run() clears it under the lock before its thread can exit: a pthread_t is
        # never used after its thread is gone (use-after-free in pthread_kill).
        self._thread = 0
        self._thread_lock = threading.RLock()  # a host signal handler may kick too
        self.in_guest = False  # in KVM_RUN now; with exits, what a patch's sync waits on
        self.exits = 0
        self.fast: FastTransport | None = None
        self._bound: FastTransport | None = None  # the transport run() bound this vCPU to
        self._client: ExitClient | None = None  # what run() serves
        # the deferred fast transport's count of exits (platform/warmup.py), until made
        self.warm_up: WarmUp | None = None
        self._fast_gs = 0  # this vCPU's slot: the GS base while the fast path is on
        self._guest_gs = 0  # the GS base the guest set (arch_prctl), virtual with fast on

    def _init_system_state(self) -> None:
        lay = self.vm.layout
        self.vm.build_cpu_tables(self.index)  # this vCPU's own TSS: its own exception stack
        sregs = K.kvm_sregs()
        fcntl.ioctl(self.fd, K.KVM_GET_SREGS, sregs)
        sregs.cs = _segment(SEL_UCODE, True, 3)
        for name in ("ds", "es", "fs", "gs", "ss"):
            setattr(sregs, name, _segment(SEL_UDATA, False, 3))
        sregs.tr = K.kvm_segment(
            base=lay.cpu_tss(self.index), limit=TSS_LIMIT, selector=SEL_TSS, type=0xB, present=1
        )
        sregs.ldt = K.kvm_segment(unusable=1)
        sregs.gdt = K.kvm_dtable(base=lay.cpu_tables(self.index), limit=GDT_LIMIT)
        sregs.idt = K.kvm_dtable(base=lay.system_page(SYS_IDT), limit=32 * 16 - 1)
        sregs.cr0 = K.CR0_PE | K.CR0_MP | K.CR0_ET | K.CR0_NE | K.CR0_WP | K.CR0_AM | K.CR0_PG
        sregs.cr3 = lay.system_page(SYS_PML4)
        sregs.cr4 = K.CR4_PAE | K.CR4_OSFXSR | K.CR4_OSXMMEXCPT | K.CR4_OSXSAVE
        sregs.efer = K.EFER_SCE | K.EFER_LME | K.EFER_LMA | K.EFER_NXE
        fcntl.ioctl(self.fd, K.KVM_SET_SREGS, sregs)
        self._initial_sregs = sregs  # what start() gives each thread, bases aside

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
        self.run_page.kvm_valid_regs = SYNC_REGS_AND_SREGS

    def attach_fast(self, fast: FastTransport) -> None:
        if self.fast is None:  # (a vCPU in use: the guest's own GS base, kept virtual)
            self._guest_gs = self.sregs.gs.base
        self.fast = fast
        self._fast_gs = fast.slot_address(self.index)

    def join_fast(self) -> None:
        """This vCPU, in use (stopped in an exit, on its own thread) when its machine's
        deferred fast transport was made (platform/warmup.py), uses it from its next
        entry: bound for its thread, its slot as its GS base unless the guest has one of
        its own (then no site is patched)."""
        fast, client = self.fast, self._client
        assert fast is not None and client is not None
        fast.bind(self, client, launched=False)
        self._bound = fast
        if fast.active:
            self.set_gs_base(self._guest_gs)

    def set_msrs(self, values: dict[int, int]) -> None:
        msrs = K.kvm_msrs(nmsrs=len(values))
        for i, (index, data) in enumerate(values.items()):
            msrs.entries[i].index = index
            msrs.entries[i].data = data
        done = fcntl.ioctl(self.fd, K.KVM_SET_MSRS, msrs)
        if done != len(values):
            raise PlatformError(f"KVM refused MSR {msrs.entries[done].index:#x}")

    def start(self, regs: dict[str, int], fs_base: int = 0, fpu: bytes | None = None) -> None:
        """Initial user-mode registers (a new process or a new thread) and FPU state (an
        XSAVE image: a new thread has a copy of its creator's, as on Linux; None: the reset
        state). The general and system registers (FS and GS bases among them) go in
        through the run page's synced copies, applied by the next KVM_RUN: an ioctl each
        costs ~10 µs under PVM. The system registers are the vCPU's initial ones, whatever
        a previous thread left."""
        page = self.run_page
        r = K.kvm_regs(rflags=0x2)
        for name, value in regs.items():
            setattr(r, name, value & MASK64)
        page.s.regs = r
        if fpu is None:
            fcntl.ioctl(self.fd, K.KVM_SET_FPU, K.kvm_fpu(fcw=0x37F, mxcsr=0x1F80))
        else:
            self.set_fpu(fpu)
        self._guest_gs = 0
        fast = self.fast
        page.s.sregs = self._initial_sregs  # a copy
        sregs = self.sregs
        sregs.fs.base = fs_base
        sregs.gs.base = self._fast_gs if fast is not None and fast.active else 0
        page.kvm_dirty_regs = SYNC_REGS_AND_SREGS
        self._stop = STOP_USER
        page.immediate_exit = 0

    # -- the kernel's view of this CPU (the Cpu protocol in kernel/process.py) -----------

    def get_fs_base(self) -> int:
        return self.sregs.fs.base

    def set_fs_base(self, value: int) -> None:
        self.set_msrs({K.MSR_FS_BASE: value})
        self.sregs.fs.base = value  # keep the synced copy true if sregs go back dirty

    def get_gs_base(self) -> int:
        if self.fast is not None:
            return self._guest_gs
        return self.sregs.gs.base

    def set_gs_base(self, value: int) -> None:
        fast = self.fast
        if fast is not None:
            self._guest_gs = value
            if not value and fast.active:
                value = self._fast_gs
            elif fast.active:  # the stubs find their slot through GS: no more stubs
                fast.patcher.unpatch_all(self)
        self.set_msrs({K.MSR_GS_BASE: value})
        self.sregs.gs.base = value

    def snapshot_regs(self) -> dict[str, int]:
        regs = self.regs
        return {name: getattr(regs, name) for name in GPR_NAMES}

    def get_context(self) -> dict[str, int]:
        """User-mode registers to resume with, whatever stopped the vCPU."""
        ctx = self.snapshot_regs()
        if self._stop == STOP_SYSCALL:
            ctx["rip"], ctx["rflags"] = ctx["rcx"], ctx["r11"]  # where sysret returns
        elif self._stop == STOP_FAULT and self._fault_frame is not None:
            ctx["rip"], ctx["rsp"], ctx["rflags"] = self._fault_frame
        return ctx

    def set_context(self, regs: dict[str, int]) -> None:
        """Resume at CPL3 with `regs`, also from CPL0 (a fault stub, or the trampoline on
        hardware KVM): then the user code and stack segments are loaded as well."""
        target = self.regs
        for name in GPR_NAMES:
            setattr(target, name, regs[name] & MASK64)
        dirty = K.KVM_SYNC_X86_REGS
        sregs = self.sregs
        if not sregs.cs.selector & 3:
            sregs.cs = self._user_cs
            sregs.ss = self._user_ss
            dirty |= K.KVM_SYNC_X86_SREGS
        self.run_page.kvm_dirty_regs |= dirty
        self._context_replaced = True
        self._stop = STOP_USER

    def get_fpu(self) -> bytes:
        state = K.kvm_xsave()
        fcntl.ioctl(self.fd, K.KVM_GET_XSAVE, state)
        return ctypes.string_at(ctypes.addressof(state), self.xsave_size)  # one copy

    def set_fpu(self, data: bytes) -> None:
        state = K.kvm_xsave()
        ctypes.memmove(ctypes.addressof(state), bytes(data), min(len(data), self.xsave_size))
        try:
            fcntl.ioctl(self.fd, K.KVM_SET_XSAVE, state)
        except OSError:
            raise ValueError("invalid FPU state") from None

    def interruptible(self) -> bool:
        if self._stop != STOP_USER or not self.sregs.cs.selector & 3:
            return False
        rip = self.regs.rip
        tramp = self.vm.layout.trampoline
        if self.fast is not None and self.fast.in_entry(rip):
            return False  # a call the server is serving: its answer makes the vCPU exit
        return not tramp <= rip < tramp + 4096

    def runs_here(self) -> bool:
        return self._thread == threading.get_ident()

    def kick(self) -> None:
        # immediate_exit stops a KVM_RUN about to start; the signal one already running.
        self.run_page.immediate_exit = 1
        with self._thread_lock:
            if self._thread:
                signal.pthread_kill(self._thread, KICK_SIGNAL)

    # -- the exit loop ------------------------------------------------------------------

    def run(self, client: ExitClient, gate: Gate | None = None) -> None:
        """Run the guest until the client ends it by raising.

        client.syscall serves a syscall; client.fault takes a CPU exception;
        client.interrupted follows a kick; client.do_work runs after a syscall when
        client.work_pending is set (signals to deliver, exit requested).
        """
        with self._thread_lock:
            self._thread = threading.get_ident()
        fast = self.fast
        if fast is not None:
            fast.bind(self, client)
        self._bound, self._client = fast, client
        try:
            self._loop(client, gate)
        finally:
            if self._bound is not None:
                self._bound.unbind(self)
            self._bound = self._client = None
            with self._thread_lock:
                self._thread = 0

    def _loop(self, client: ExitClient, gate: Gate | None) -> None:
        # Every exit passes here: what it reads is in locals, the common case (a syscall
        # from CPL3, ungated) first; the rare ones are calls out of the loop.
        fd = self.fd
        page = self.run_page
        regs = self.regs
        io = page.exit.io
        # The CS selector as a ctypes scalar over the run page's synced sregs: its .value
        # costs half of sregs.cs.selector, which builds a kvm_segment object each time.
        cs_selector = ctypes.c_uint16.from_address(
            ctypes.addressof(self.sregs.cs) + K.kvm_segment.selector.offset)
        ioctl = fcntl.ioctl
        kvm_run = K.KVM_RUN
        exit_io = K.KVM_EXIT_IO
        exit_mmio = K.KVM_EXIT_MMIO
        dirty = K.KVM_SYNC_X86_REGS
        mask64 = MASK64
        syscall_port = SYSCALL_PORT
        stop_syscall = STOP_SYSCALL
        index = self.index
        syscall = client.syscall
        fast = self.fast
        warming = self.warm_up if fast is None else None
        tramp = self.vm.layout.trampoline
        while True:
            if gate is not None and gate.gated:
                gate.enter(self)
            self.in_guest = True  # first: a patch from now on kicks this vCPU
            if self.fast is not None and self.fast.patcher.interiors:
                self._leave_head_inside(self.fast.patcher.interiors)
            try:
                ioctl(fd, kvm_run, 0)
            except InterruptedError:
                self._exited(gate)
                self._interrupted(client)
                continue
            except OSError as err:
                if err.errno != errno.EFAULT:
                    raise
                self._exited(gate)
                self._stop = STOP_FAULT
                client.fault(self._host_memory_fault())
                continue
            self.in_guest = False
            self.exits += 1
            if gate is not None and gate.gated:
                gate.leave(self)
            reason = page.exit_reason
            if reason == exit_io:
                port = io.port
                if port == syscall_port:
                    self._stop = stop_syscall
                    self._context_replaced = False
                    nr = regs.rax
                    real = False
                    if warming is not None and warming.exit(regs.rcx - 2):
                        fast, warming = self.fast, None  # made, and joined (join_fast)
                    if fast is not None:
                        real = 0 <= regs.rip - tramp < 4096  # a `syscall` instruction
                        fast.exit_path_call(index, nr, real, regs.rcx - 2)
                        if real and nr in PATCHED_BEFORE_SERVED:  # no return to the
                            fast.patcher.site_exit(self, regs.rcx - 2, nr)  # site: now
                    result = syscall(nr, regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9)
                    if fast is None and self.fast is not None:  # made by this call (a
                        fast, warming = self.fast, None  # thread's start), and joined
                    if not self._context_replaced:
                        # site_exit's own first test, without its lock (a site stays known
                        # until its code is unmapped)
                        if real and fast is not None \
                                and (site := regs.rcx - 2) not in fast.patcher.known:
                            fast.patcher.site_exit(self, site, nr)
                        regs.rax = result & mask64
                        if cs_selector.value & 3:
                            # PVM: `syscall` stayed at CPL3, so return to the caller here.
                            regs.rip = regs.rcx
                            regs.rflags = regs.r11
                        page.kvm_dirty_regs |= dirty
                    if client.work_pending:
                        client.do_work()
                    if fast is not None:
                        fast.returning(index)
                    continue
                if port == WORK_PORT and fast is not None:
                    # an answered fast call with work due: return from it, then the work
                    self._stop = STOP_SYSCALL
                    if cs_selector.value & 3:
                        regs.rip = regs.rcx
                        regs.rflags = regs.r11
                        page.kvm_dirty_regs |= dirty
                    client.answered(fast.slot_nr(self.index))
                    continue
                if EXCEPTION_PORT_BASE <= port < EXCEPTION_PORT_BASE + 32:
                    self._stop = STOP_FAULT
                    fault = self._fault(port - EXCEPTION_PORT_BASE)
                    client.fault(fault)
                    continue
            elif reason == exit_mmio and self._uncovered_access(page.exit.mmio):
                continue
            self._unexpected_exit(reason)

    def _leave_head_inside(self, interiors: dict[int, tuple[int, Undo]]) -> None:
        """About to run at an instruction boundary inside a patched head's jmp (the
        patcher's INNER_STEPS): go back to the head instead, its effects undone."""
        regs = self.regs
        inside = interiors.get(regs.rip)
        if inside is None:
            return
        regs.rip, undo = inside
        for name, addend in undo:
            setattr(regs, name, (getattr(regs, name) + addend) & MASK64)
        self.run_page.kvm_dirty_regs |= K.KVM_SYNC_X86_REGS

    def _exited(self, gate: Gate | None) -> None:
        """Out of KVM_RUN by an error (a kick, a host memory fault)."""
        self.in_guest = False
        self.exits += 1
        if gate is not None:
            gate.leave(self)

    def _interrupted(self, client: ExitClient) -> None:
        """KVM_RUN was kicked (EINTR): an answered fast call is returned from first."""
        self.run_page.immediate_exit = 0
        self._stop = STOP_USER
        fast = self.fast
        if fast is not None:
            nr = fast.settle(self)
            if nr >= 0:
                self._stop = STOP_SYSCALL
                client.answered(nr)
                return
        client.interrupted()

    def _fault(self, vector: int) -> GuestFault:
        """Read the interrupt frame the CPU pushed on this vCPU's own exception stack."""
        mem = self.vm.memory.raw
        sp = self.regs.rsp
        error_code = None
        if vector in ERROR_CODE_VECTORS:
            error_code = struct.unpack_from("<Q", mem, sp)[0]
            sp += 8
        rip, _cs, rflags, rsp, _ss = struct.unpack_from("<5Q", mem, sp)
        self._fault_frame = (rip, rsp, rflags)
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

    def _host_memory_fault(self) -> GuestFault:
        """KVM_RUN failed with EFAULT: the host pages behind a guest address are gone (a
        shared file truncated below a mapping of it, platform/memory.py). Linux sends
        SIGBUS; the vCPU is still at the faulting instruction."""
        regs = self.snapshot_regs()
        self._fault_frame = (regs["rip"], regs["rsp"], regs["rflags"])
        return GuestFault(vector=HOST_MEMORY_FAULT, error_code=None, rip=regs["rip"],
                          rsp=regs["rsp"], rflags=regs["rflags"], cr2=0, regs=regs,
                          fs_base=self.sregs.fs.base)

    def _uncovered_access(self, mmio: K.kvm_run_mmio) -> bool:
        """A guest access to its RAM where no memory slot is (slots cover what the guest
        has mapped, platform/memory.py `cover`; this is an address it never mapped):
        done here on guest RAM, as with one slot over all of it before, and that piece
        covered so later accesses are direct. Page protections are not enforced under
        PVM either (docs/security.md): the guest reads zeros where it mapped nothing.
        False for an address outside guest RAM."""
        memory = self.vm.memory
        addr, size = mmio.phys_addr, mmio.len
        if not (memory.user_start <= addr and addr + size <= memory.user_end and size <= 8):
            return False
        if mmio.is_write:
            memory.write(addr, bytes(mmio.data)[:size])
        else:
            ctypes.memmove(mmio.data, memory.read(addr, size), size)
        try:
            memory.cover(addr, addr + size)
        except SyscallError:
            pass  # KVM takes no more slots: each access comes here
        return True

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
        _libc.munmap(ctypes.c_void_p(self._run_address), ctypes.c_size_t(self._run_size))
        os.close(self.fd)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
MAP_FAILED = ctypes.c_void_p(-1).value


def _map_run_page(fd: int, size: int) -> int:
    """The vCPU's kvm_run page, mapped without a Python mmap object (which would keep a
    dup of the vCPU fd that a forked monitor could not find to close) and kept out of
    forked monitors (MADV_DONTFORK: the child's VM is its own)."""
    address = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED, fd, 0)
    if address in (None, MAP_FAILED):
        err = ctypes.get_errno()
        os.close(fd)
        raise PlatformError(f"cannot map a vCPU's run page: {os.strerror(err)}")
    _libc.madvise(ctypes.c_void_p(address), ctypes.c_size_t(size), mmap.MADV_DONTFORK)
    return address
