"""The KVM platform as the kernel sees it: vCPUs for new guest threads, recycled on exit,
and optionally the fast syscall transport they share (platform/fastcall)."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from karn import log
from karn.errors import PlatformError
from karn.platform import kvm_abi as K
from karn.platform.kvm import VirtualMachine
from karn.platform.layout import MAX_VCPUS
from karn.platform.vcpu import Vcpu

if TYPE_CHECKING:
    from karn.platform.fastcall.patcher import CodeSpace, Patcher
    from karn.platform.fastcall.transport import FastTransport


class KvmMachine:
    def __init__(self, vm: VirtualMachine, max_vcpus: int = MAX_VCPUS) -> None:
        self.vm = vm
        self.max_vcpus = min(max_vcpus, MAX_VCPUS)  # one fast-transport slot each
        self._lock = threading.Lock()
        self._free: list[Vcpu] = []
        self._created = 0
        self.fast: FastTransport | None = None

    def enable_fast(self, code: CodeSpace, fastmap: Iterable[int]) -> bool:
        """Use the fast syscall transport for calls numbered in fastmap; False (said in
        one line) when its C helper is missing: every call then exits, as without it."""
        from karn.platform.fastcall.server import load_helper
        from karn.platform.fastcall.transport import FastTransport

        helper = load_helper()
        if helper is None:
            log.warning("--syscall-transport fast: the C helper karn.platform.fastcall."
                        "_fastpoll is not built (reinstall karn where a C compiler is "
                        "installed); every syscall exits")
            return False
        cpu = self.new_cpu()
        try:
            khz = fcntl.ioctl(cpu.fd, K.KVM_GET_TSC_KHZ)
            offset = _guest_tsc_offset(cpu, helper.tsc)
        finally:
            self.release_cpu(cpu)
        mem, lay = self.vm.memory, self.vm.layout
        self._attach(FastTransport(helper, mem.raw, mem.host_address, lay.fast_slots, code,
                                   lay.user_start, lay.user_end, fastmap, khz, offset))
        return True

    def new_cpu(self) -> Vcpu:
        with self._lock:
            if self._free:
                return self._free.pop()
            if self._created >= self.max_vcpus:
                raise PlatformError(f"more than {self.max_vcpus} guest threads at once")
            index = self._created
            self._created += 1
        cpu = Vcpu(self.vm, index)
        if self.fast is not None:
            cpu.attach_fast(self.fast)
        return cpu

    def release_cpu(self, cpu: Vcpu) -> None:
        with self._lock:
            self._free.append(cpu)

    def overhead_cpu_ns(self) -> int:
        return self.fast.server.cpu_ns() if self.fast is not None else 0

    def code_watcher(self) -> Patcher | None:
        """What must hear of guest code going away (munmap, MAP_FIXED, execve): the fast
        transport's patcher."""
        return self.fast.patcher if self.fast is not None else None

    def fork_locks(self) -> list[tuple[object, str, type]]:
        """The locks a host fork of this monitor holds (owner, attribute, kind, as
        kernel/forklocks.py LockSite): the patcher's, so that no site is half-written and
        no bookkeeping half-changed in the child's copy."""
        if self.fast is None:
            return []
        return [(self.fast.patcher, "_lock", threading.RLock)]

    def forked(self, in_use: Iterable[Vcpu]) -> KvmMachine:
        """In a forked monitor: a machine with a fresh VM over the inherited guest memory
        (a KVM VM cannot be shared across a fork; the page tables are in guest RAM and a
        new VM reads them as they are). The parent's VM and vCPUs (those its threads held,
        in_use, and the free ones) are closed here and never used again. The fast
        transport follows: the patched sites and arenas in the child's copy of the memory
        stay (fork_locks: none half-written), with slots, counters and a server of the
        child's own."""
        old = self.vm
        cpus = {id(cpu): cpu for cpu in (*in_use, *self._free)}
        for fd in [cpu.fd for cpu in cpus.values()] + [old.fd]:  # not /dev/kvm's
            try:
                os.close(fd)
            except OSError:
                pass
        # The parent's CPUID table: the same device supports the same (it is not asked
        # again, ~0.3 ms of host CPU per fork).
        vm = VirtualMachine(old.layout, memory=old.memory, kvm_fd=old.kvm_fd, cpuid=old.cpuid)
        machine = KvmMachine(vm, self.max_vcpus)
        if self.fast is not None:
            offset = self.fast.guest_tsc_offset
            if offset:  # the platform offsets the guest TSC per VM: this VM's own
                cpu = machine.new_cpu()
                try:
                    offset = _guest_tsc_offset(cpu, self.fast.host_tsc)
                finally:
                    machine.release_cpu(cpu)
            machine._attach(self.fast.forked(offset))
        return machine

    def _attach(self, fast: FastTransport) -> None:
        self.fast = fast
        with self._lock:
            for free in self._free:
                free.attach_fast(fast)

def _guest_tsc_offset(cpu: Vcpu, host_tsc: Callable[[], int], samples: int = 5) -> int:
    """The guest's TSC minus the host's, from the narrowest of `samples` host TSC reads
    around a read of the guest's (hardware KVM: an offset per VM). An offset within its
    bracket is indistinguishable from none (PVM: the guest reads the host's TSC)."""
    msrs = K.kvm_msrs(nmsrs=1)
    msrs.entries[0].index = K.MSR_IA32_TSC
    best: tuple[int, int] | None = None
    for _ in range(samples):
        before = host_tsc()
        fcntl.ioctl(cpu.fd, K.KVM_GET_MSRS, msrs)
        after = host_tsc()
        if best is None or after - before < best[1]:
            best = (msrs.entries[0].data - (before + after) // 2, after - before)
    assert best is not None
    offset, width = best
    return 0 if abs(offset) <= width else offset
