"""The KVM platform as the kernel sees it: vCPUs for new guest threads, each with the host
thread that runs it, both recycled when a guest thread ends, and optionally the fast
syscall transport they share (platform/fastcall)."""

from __future__ import annotations

import _thread
import fcntl
import os
import sys
import threading
from collections.abc import Callable, Iterable

from karn import log
from karn.errors import PlatformError
from karn.hints import TYPE_CHECKING
from karn.platform import kvm_abi as K
from karn.platform.barrier import leave_guest_once
from karn.platform.hostload import spare_core
from karn.platform.kvm import VirtualMachine
from karn.platform.layout import MAX_VCPUS
from karn.platform.vcpu import Vcpu
from karn.platform.warmup import ExitCount, WarmUp

if TYPE_CHECKING:
    from karn.platform.fastcall.patcher import CodeSpace, Patcher
    from karn.platform.fastcall.transport import FastTransport

# Host threads kept parked with their vCPUs for the next guest threads. Beyond these a
# thread ends with its guest thread (a burst of threads leaves no more than this behind).
PARKED_LIMIT = 32

# A host thread whose guest thread ended watches for its next one this long (GIL
# released) before it parks, while the host seems to have a core to spare: a guest that
# creates a thread soon after one ended (a create+join loop, a thread per task) then starts
# it without waking a parked thread, which costs here ~15 µs of the creator's time and
# 50-90 µs before the new thread runs (docs/benchmarks.md, "Thread create+join").
WATCH_NS = 300_000


class _Worker:
    """The host thread of one vCPU: it runs the guest threads given that vCPU one after
    another, parked in between, so that a new guest thread costs a hand-over (~30 µs of
    host CPU here) instead of a host thread's start and end (~65 µs), and its creator
    does not wait for a new thread to be scheduled (`threading.Thread.start` does)."""

    __slots__ = ("job", "wake", "parked", "jobs")

    def __init__(self) -> None:
        self.job: Callable[[], None] | None = None
        self.wake = threading.Lock()  # held while there is no job
        self.wake.acquire()
        self.parked = False
        self.jobs = bytearray(8)  # a count of the jobs given (mod 256), watched for a change


class KvmMachine:
    def __init__(self, vm: VirtualMachine, max_vcpus: int = MAX_VCPUS) -> None:
        self.vm = vm
        self.max_vcpus = min(max_vcpus, MAX_VCPUS)  # one fast-transport slot each
        self._lock = threading.Lock()
        self._free: list[Vcpu] = []
        self._created = 0
        self._workers: dict[int, _Worker] = {}  # by vCPU index: its host thread, if any
        self._parked = 0
        self._closed = False
        self.fast: FastTransport | None = None
        self._cpus: list[Vcpu] = []  # every vCPU made: a transport made later attaches all
        # the fast transport deferred (platform/warmup.py): what makes it, given this
        # machine, and the count of exits towards it; thread vCPUs handed out so far
        self._make_fast: Callable[[KvmMachine], bool] | None = None
        self._warm: WarmUp | None = None
        self._threads = 0
        # the C helper's bounded spin on a u64 (platform/fastcall/_fastpoll.c wait_u64),
        # with which a worker watches for its next job; None: workers park at once
        self._watch: Callable[[bytearray, int, int, int], int] | None = None
        # a forked monitor's VM whose TSC is its parent's (both read the host's: the fast
        # transport measured no offset), so the parent's time-page parameters hold
        self.tsc_as_parent = False

    def enable_fast(self, code: CodeSpace, fastmap: Iterable[int]) -> bool:
        """Use the fast syscall transport for calls numbered in fastmap; False (said in
        one line) when its C helper is missing: every call then exits, as without it."""
        from karn.platform.fastcall.server import load_helper
        from karn.platform.fastcall.transport import FastTransport

        helper = load_helper()
        if helper is None:
            log.warning("--syscall-transport fast: the C helper karn.platform.fastcall."
                        "_fastpoll is not built, or built from an older source "
                        "(reinstall karn where a C compiler is installed); every syscall "
                        "exits")
            return False
        self._watch = helper.wait_u64
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

    def defer_fast(self, make: Callable[[KvmMachine], bool]) -> None:
        """Make the fast transport (make(machine): enable_fast and the kernel's side of
        it) once the process is warm, not now (platform/warmup.py)."""
        self._make_fast = make
        self._warm = WarmUp(self._warmed)

    def _warmed(self, warm: WarmUp) -> bool:
        """The process is warm: its fast transport now, in an exit of its only vCPU in
        use, on that vCPU's own thread (its WARM_EXITS-th exit, or a clone starting a
        second thread), handed the sites that exited so far. That vCPU joins it at once,
        before any other thread can start: a guest GS base of its own turns patching off
        before a new thread's vCPU takes its slot as its GS base."""
        make = self._make_fast
        self._warm = self._make_fast = None
        with self._lock:
            for cpu in self._cpus:
                cpu.warm_up = None
            here = [cpu for cpu in self._cpus if cpu.runs_here()]
        fast = self.fast if make is not None and make(self) else None
        if fast is None:
            return False
        fast.warmed(warm.counted, warm.count)
        for cpu in here:
            cpu.join_fast()
        return True

    def ended(self) -> None:
        """The process ended: say so if its fast transport was never made (a made one
        says what it did as its last vCPU leaves it: FastTransport.unbind)."""
        if self._warm is not None:
            log.info("fast syscalls: not made (the process ended after %d exits, before it "
                     "was warm)", self._warm.counted)

    @property
    def fast_deferred(self) -> bool:
        """The fast transport will be made once the process is warm."""
        return self._warm is not None

    def thread_cpu(self) -> Vcpu:
        """A vCPU for a guest thread to start on. A second thread brings a deferred fast
        transport in first, while its starter's exit is the only vCPU out of guest mode
        (platform/warmup.py)."""
        warm = self._warm
        if warm is not None and self._threads:
            warm.enable()
        self._threads += 1
        return self.new_cpu()

    def new_cpu(self) -> Vcpu:
        with self._lock:
            if self._free:
                return self._free.pop()
            if self._created >= self.max_vcpus:
                raise PlatformError(f"more than {self.max_vcpus} guest threads at once")
            index = self._created
            self._created += 1
        cpu = Vcpu(self.vm, index)
        with self._lock:
            self._cpus.append(cpu)
            cpu.warm_up = self._warm
        if self.fast is not None:
            cpu.attach_fast(self.fast)
        return cpu

    def release_cpu(self, cpu: Vcpu) -> None:
        with self._lock:
            self._free.append(cpu)

    def launch(self, cpu: Vcpu, body: Callable[[], None]) -> None:
        """Run body on cpu's host thread, without waiting for it to begin: the parked or
        watching thread of the vCPU (or the one finishing its last guest thread, which
        takes body next), else a new one. body gives the vCPU back (release_cpu) before it
        ends; it binds the vCPU to the fast transport first (Vcpu.run), which counts it
        as starting from here."""
        fast = self.fast
        if fast is not None:
            fast.starting()
        try:
            self._launch(cpu, body)
        except BaseException:
            if fast is not None:
                fast.starting(-1)
            raise

    def _launch(self, cpu: Vcpu, body: Callable[[], None]) -> None:
        with self._lock:
            worker = self._workers.get(cpu.index)
            if worker is not None:
                worker.job = body
                worker.jobs[0] = (worker.jobs[0] + 1) & 0xFF
                if worker.parked:
                    worker.parked = False
                    self._parked -= 1
                worker.wake.release()
                return
            worker = self._workers[cpu.index] = _Worker()
        try:
            _thread.start_new_thread(self._work, (cpu.index, worker, body))
        except RuntimeError as err:  # the host refused a thread
            with self._lock:
                del self._workers[cpu.index]
            raise PlatformError(f"cannot start a host thread: {err}") from None

    def _work(self, index: int, worker: _Worker, body: Callable[[], None]) -> None:
        while True:
            try:
                body()
            except BaseException:  # what a Thread would print; the vCPU is given back
                sys.excepthook(*sys.exc_info())
            seen = int.from_bytes(worker.jobs, "little")  # before the look at job
            watch = self._watch
            if watch is not None and worker.job is None and spare_core():
                watch(worker.jobs, 0, seen, WATCH_NS)
            with self._lock:
                if worker.job is None:
                    if self._closed or self._parked >= PARKED_LIMIT:
                        del self._workers[index]  # the vCPU's next thread starts anew
                        return
                    worker.parked = True
                    self._parked += 1
            worker.wake.acquire()  # at once if a job came while body was ending
            with self._lock:
                job, worker.job = worker.job, None
            if job is None:  # close_workers()
                return
            body = job

    def close_workers(self) -> None:
        """The guest's threads have all ended: parked host threads end too, and those
        still finishing do not park."""
        with self._lock:
            self._closed = True
            for index, worker in list(self._workers.items()):
                if worker.parked:
                    del self._workers[index]
                    worker.wake.release()
            self._parked = 0

    def barrier(self, cpus: Iterable[Vcpu]) -> None:
        """Each of cpus running guest code leaves guest mode once (membarrier(2))."""
        leave_guest_once(cpus)

    def allow_spins(self, on: bool) -> None:
        if self.fast is not None:
            self.fast.allow_spins(on)

    def overhead_cpu_ns(self) -> int:
        return self.fast.server.cpu_ns() if self.fast is not None else 0

    def code_watcher(self) -> Patcher | ExitCount | None:
        """What must hear of guest code going away (munmap, MAP_FIXED, execve): the fast
        transport's patcher, or while it is deferred the count towards it."""
        if self.fast is not None:
            return self.fast.patcher
        return self._warm.count if self._warm is not None else None

    def fork_locks(self) -> list[tuple[object, str, type]]:
        """The locks a host fork of this monitor holds (owner, attribute, kind, as
        kernel/forklocks.py LockSite), in the order they nest: the fast transport
        patcher's (a new arena's mapping takes the next one inside it), so that no site
        is half-written and no bookkeeping half-changed in the child's copy, and guest
        memory's memory-slot lock, so that the copy lists every slot the parent made."""
        locks: list[tuple[object, str, type]] = []
        if self.fast is not None:
            locks.append((self.fast.patcher, "_lock", threading.RLock))
        locks.append((self.vm.memory, "cover_lock", threading.Lock))
        return locks

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
        machine._watch = self._watch
        if self.fast is not None:
            offset = self.fast.guest_tsc_offset
            if offset:  # the platform offsets the guest TSC per VM: this VM's own
                cpu = machine.new_cpu()
                try:
                    offset = _guest_tsc_offset(cpu, self.fast.host_tsc)
                finally:
                    machine.release_cpu(cpu)
            else:
                machine.tsc_as_parent = True
            machine._attach(self.fast.forked(offset))
        elif self._warm is not None and self._make_fast is not None:  # still deferred
            machine._make_fast = self._make_fast
            machine._warm = self._warm.forked(machine._warmed)
            machine._threads = 1  # the forking thread's, running in the child
        return machine

    def _attach(self, fast: FastTransport) -> None:
        """Every vCPU uses fast from its next entry (one in use when a deferred transport
        is made joins it in the making: Vcpu.join_fast)."""
        self.fast = fast
        with self._lock:
            for cpu in self._cpus:
                cpu.attach_fast(fast)

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
