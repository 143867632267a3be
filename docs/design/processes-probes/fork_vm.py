"""Probe for issue 15, option (a): fork the monitor from the vCPU thread serving a guest's
fork, and in the child build a fresh VM over the inherited (copy-on-write) guest memory.

Run as root from the worktree root (MiB: guest RAM to touch, default 200):
    PYTHONPATH=$PWD python3 docs/design/processes-probes/fork_vm.py [MiB] [--thp]

The guest is a tiny interpreter at 0x400000: every `syscall` exits to the monitor, which
answers with an operation in rax (bit 0: store rdx at [rbx]; bit 1: load [rbx] into rsi,
seen at the next exit; bit 2: write-touch pages [rbx, rdx); bit 3: read-touch them).
A second vCPU spins writing a counter while the first one forks, so the fork happens with
another vCPU thread inside KVM_RUN. Prints what it measured; asserts what must hold.
"""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import tempfile
import threading
import time

from karn.platform import kvm_abi as K
from karn.platform.kvm import VirtualMachine, open_kvm, supported_cpuid
from karn.platform.layout import PAGE, SYS_PT_LOW, layout_for
from karn.platform.vcpu import Vcpu, install_kick_handler

GIB = 1 << 30
MADV_DONTFORK = 10
MADV_HUGEPAGE = 14
CODE, SPIN, DATA, COUNTER = 0x400000, 0x401000, 0x600000, 0x600100
TOUCH = 0x10000000
PARENT_VALUE, CHILD_VALUE, PARENT_AFTER = 0x1111, 0x2222, 0x3333
NULL_PAGE_MAGIC = 0xFEEDFACE

INTERP = """
.intel_syntax noprefix
loop:
  syscall
  test al, 1
  jz 1f
  mov [rbx], rdx
1:test al, 2
  jz 2f
  mov rsi, [rbx]
2:test al, 4
  jz 3f
4:mov [rbx], r9
  add rbx, 4096
  cmp rbx, rdx
  jb 4b
3:test al, 8
  jz 5f
6:mov r10, [rbx]
  add rbx, 4096
  cmp rbx, rdx
  jb 6b
5:jmp loop
"""
SPINNER = """
.intel_syntax noprefix
7:inc qword ptr [0x600100]
  jmp 7b
"""


def assemble(src: str) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        with open(f"{d}/a.S", "w") as f:
            f.write(src)
        subprocess.run(["as", "--64", "-o", f"{d}/a.o", f"{d}/a.S"], check=True)
        subprocess.run(["objcopy", "-O", "binary", "-j", ".text", f"{d}/a.o", f"{d}/a.bin"],
                       check=True)
        with open(f"{d}/a.bin", "rb") as f:
            return f.read()


class Stop(Exception):
    pass


class ForkedChild(Exception):
    """Raised in the child to unwind out of the parent's exit loop: its frames hold views
    of the parent's kvm_run page, which cannot be unmapped while they exist."""


class Script:
    """The exit client: each guest `syscall` takes the next step (op, rbx, rdx, r9) or
    runs a monitor-side callable (which may return a step)."""

    def __init__(self, cpu: Vcpu, steps: list) -> None:
        self.cpu = cpu
        self.steps = list(steps)
        self.work_pending = False
        self.faults: list = []
        self.last_rsi = 0

    def syscall(self, nr: int, *args: int) -> int:
        self.last_rsi = self.cpu.regs.rsi
        while self.steps:
            step = self.steps.pop(0)
            if callable(step):
                step = step(self)
                if step is None:
                    continue
            op, rbx, rdx, r9 = step
            regs = self.cpu.regs
            regs.rbx, regs.rdx, regs.r9 = rbx, rdx, r9
            return op
        raise Stop

    def fault(self, fault) -> None:
        self.faults.append((fault.vector, hex(fault.cr2)))
        ctx = self.cpu.get_context()
        ctx.update(rip=CODE, rax=0)
        self.cpu.set_context(ctx)

    def interrupted(self) -> None:
        pass

    def do_work(self) -> None:
        pass


def adopt_vm(layout, memory) -> VirtualMachine:
    """A new KVM VM over existing guest memory (page tables and system pages already in it,
    copied from the parent): what the fork child does instead of VirtualMachine()."""
    vm = VirtualMachine.__new__(VirtualMachine)
    vm.layout = layout
    vm.kvm_fd = open_kvm()
    vm.fd = fcntl.ioctl(vm.kvm_fd, K.KVM_CREATE_VM, 0)
    vm.vcpu_mmap_size = fcntl.ioctl(vm.kvm_fd, K.KVM_GET_VCPU_MMAP_SIZE)
    vm.cpuid = supported_cpuid(vm.kvm_fd)
    vm.memory = memory
    region = K.kvm_userspace_memory_region(slot=0, flags=0, guest_phys_addr=0,
                                           memory_size=layout.span,
                                           userspace_addr=memory.host_address)
    fcntl.ioctl(vm.fd, K.KVM_SET_USER_MEMORY_REGION, region)
    return vm


def wait_readable(fd: int) -> bool:
    import select
    if not select.select([fd], [], [], 60)[0]:
        raise SystemExit("child did not answer in 60 s")
    return True


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss", "Private_Dirty", "Shared_Dirty", "Private_Clean",
                       "Shared_Clean"):
                out[key] = int(rest.split()[0])
    return out


def ms(t: float) -> str:
    return f"{t * 1e3:.2f} ms"


def main() -> None:
    touch_mib = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    thp = "--thp" in sys.argv  # guest RAM in transparent huge pages (madvise mode here)
    touch_end = TOUCH + touch_mib * (1 << 20)
    install_kick_handler()
    t = time.perf_counter()
    vm = VirtualMachine(layout_for(4 * GIB))
    t_vm = time.perf_counter() - t
    mem = vm.memory
    if thp:
        mem._map.madvise(MADV_HUGEPAGE)
    mem.raw[CODE:CODE + 4096] = assemble(INTERP).ljust(4096, b"\xcc")
    mem.raw[SPIN:SPIN + 4096] = assemble(SPINNER).ljust(4096, b"\xcc")
    mem.raw[PAGE:PAGE + 8] = NULL_PAGE_MAGIC.to_bytes(8, "little")  # inside the NULL guard

    cpu = Vcpu(vm, 0)
    cpu.start({"rip": CODE, "rsp": 0x800000}, fs_base=0x7000)
    spinner = Vcpu(vm, 1)
    spinner.start({"rip": SPIN, "rsp": 0x900000})
    for v in (cpu, spinner):  # a fork child must not share the parent's kvm_run pages
        v._run_map.madvise(MADV_DONTFORK)
    report: dict[str, object] = {"vm_create_4g": ms(t_vm), "touched_mib": touch_mib,
                                 "thp": thp}
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    held = threading.Lock()  # held by another thread across the fork: the hazard
    hold_go = threading.Event()

    def holder() -> None:
        with held:
            hold_go.set()
            time.sleep(3)

    threading.Thread(target=holder, daemon=True).start()
    hold_go.wait()

    def spin_thread() -> None:
        try:
            spinner.run(Script(spinner, []))
        except Stop:
            pass

    timer: dict[str, float] = {}

    def mark(name):
        def step(s):
            timer[name] = time.perf_counter()
        return step

    def pt_unmap(s):
        # After the guest used it: make page 0x20000 not-present in PT_LOW.
        pt_low = vm.layout.system_page(SYS_PT_LOW)
        mem.raw[pt_low + 0x20 * 8:pt_low + 0x21 * 8] = bytes(8)

    def pt_edit(s):
        # After the first run: map page 0x1000 (inside the NULL guard) in PT_LOW.
        pt_low = vm.layout.system_page(SYS_PT_LOW)
        mem.raw[pt_low + 8:pt_low + 16] = (PAGE | 0x7).to_bytes(8, "little")

    def do_fork(s):
        ctx = cpu.get_context()
        fpu = cpu.get_fpu()
        fs_base = cpu.get_fs_base()
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            raise ForkedChild(t0, ctx, fpu, fs_base)
        report["fork_in_parent"] = ms(time.perf_counter() - t0)
        report["child_pid"] = pid
        s.child = pid
        return None

    def child(t0: float, ctx: dict, fpu: bytes, fs_base: int) -> None:
        try:
            child_body(t0, ctx, fpu, fs_base)
            code = 0
        except BaseException as err:  # noqa: BLE001 - a probe: print and fail
            print(f"child failed: {err!r}", file=sys.stderr)
            code = 1
        sys.stdout.flush()
        os._exit(code)

    def child_body(t0: float, ctx: dict, fpu: bytes, fs_base: int) -> None:
        c: dict[str, object] = {"fork_to_child_runs": ms(time.perf_counter() - t0)}
        # 1. The parent's KVM objects belong to the parent's mm: expect EIO.
        for what, fd, req in (("KVM_RUN on inherited vcpu fd", cpu.fd, K.KVM_RUN),
                              ("KVM_CREATE_VCPU on inherited vm fd", vm.fd, K.KVM_CREATE_VCPU)):
            try:
                fcntl.ioctl(fd, req, 5 if req == K.KVM_CREATE_VCPU else 0)
                c[what] = "succeeded (!)"
            except OSError as err:
                c[what] = errno.errorcode.get(err.errno, str(err.errno))
        c["lock held by a parent thread at fork, acquire(timeout=0.2)"] = held.acquire(
            timeout=0.2)
        t = time.perf_counter()
        # The kvm_run pages were MADV_DONTFORK: absent here. The spinner's thread state
        # (and its loop frame holding views of its run page) is leaked by CPython's
        # after-fork cleanup, so its mmap object can never be closed: only its fd is.
        cpu.close()
        os.close(spinner.fd)
        os.close(vm.fd)
        os.close(vm.kvm_fd)
        c["close_inherited"] = ms(time.perf_counter() - t)
        t = time.perf_counter()
        vm2 = adopt_vm(vm.layout, mem)
        c["new_vm_4g_memslot"] = ms(time.perf_counter() - t)
        t = time.perf_counter()
        cpu2 = Vcpu(vm2, 0)
        cpu2.start({k: v for k, v in ctx.items()}, fs_base)
        cpu2.set_fpu(fpu)
        c["new_vcpu_and_state"] = ms(time.perf_counter() - t)
        steps = [
            mark("first_entry"),
            lambda s: c.__setitem__("child_fs_base_at_first_exit", hex(s.cpu.get_fs_base())),
            (2, DATA, 0, 0),                       # read the parent's pre-fork value
            lambda s: c.__setitem__("child_reads_pre_fork", hex(s.last_rsi)),
            (1, DATA, CHILD_VALUE, 0),             # write the child's value
            lambda s: os.write(to_parent_w, b"w") and None,
            lambda s: os.read(to_child_r, 1) and None,  # parent wrote PARENT_AFTER
            (2, DATA, 0, 0),
            lambda s: c.__setitem__("child_reads_after_parent_write", hex(s.last_rsi)),
            mark("rt0"),
            (8, TOUCH, touch_end, 0),              # read-touch all of it in the new VM
            mark("rt1"),
            mark("wt0"),
            (4, TOUCH, touch_end, 7),              # write-touch all of it: COW breaks
            mark("wt1"),
            (2, PAGE, 0, 0),                       # the page-table edit made in the parent
            lambda s: c.__setitem__("child_reads_page_mapped_after_parent_first_run",
                                    hex(s.last_rsi)),
            (2, 0x20000, 0, 0),
            lambda s: c.__setitem__("child_reads_page_unmapped_in_parent",
                                    f"faults={s.faults} rsi={hex(s.last_rsi)}"),
        ]
        t_entry = time.perf_counter()
        s2 = Script(cpu2, steps)
        try:
            cpu2.run(s2)
        except Stop:
            pass
        c["first_entry_to_first_exit"] = ms(timer["first_entry"] - t_entry)
        c["child_read_touch"] = ms(timer["rt1"] - timer["rt0"])
        c["child_write_touch"] = ms(timer["wt1"] - timer["wt0"])
        c["child_faults"] = s2.faults
        c["child_rss_kib_after_write_touch"] = rss_kib(os.getpid())
        for k, v in c.items():
            print(f"  child  {k}: {v}")

    steps = [
        (1, DATA, PARENT_VALUE, 0),
        mark("pw0"), (4, TOUCH, touch_end, 1), mark("pw1"),    # first touch: allocate
        mark("pw2"), (4, TOUCH, touch_end, 2), mark("pw3"),    # steady-state rewrite
        (2, 0x10000, 0, 0),                      # the guest walks PT_LOW: now shadowed
        pt_edit,
        (2, PAGE, 0, 0),                                       # parent: edit not seen?
        lambda s: report.__setitem__("parent_reads_page_mapped_after_first_run",
                                     f"faults={s.faults} rsi={hex(s.last_rsi)}"),
        (1, 0x20000, 0x5555, 0),
        pt_unmap,
        (2, 0x20000, 0, 0),
        lambda s: report.__setitem__("parent_reads_page_unmapped_after_use",
                                     f"faults={s.faults} rsi={hex(s.last_rsi)}"),
        lambda s: report.__setitem__("parent_rss_kib_before_fork", rss_kib(os.getpid())),
        do_fork,
        lambda s: wait_readable(to_parent_r) and os.read(to_parent_r, 1) and None,
        (2, DATA, 0, 0),
        lambda s: report.__setitem__("parent_reads_after_child_write", hex(s.last_rsi)),
        (1, DATA, PARENT_AFTER, 0),
        lambda s: os.write(to_child_w, b"p") and None,
        mark("pc0"), (4, TOUCH, touch_end, 3), mark("pc1"),    # parent after fork: COW
        mark("pc2"), (4, TOUCH, touch_end, 4), mark("pc3"),
    ]
    threading.Thread(target=spin_thread, daemon=True).start()
    while mem.raw[COUNTER] == 0:
        time.sleep(0.001)
    script = Script(cpu, steps)
    forked = None
    try:
        cpu.run(script)
    except Stop:
        pass
    except ForkedChild as err:
        forked = err.args
    if forked is not None:
        child(*forked)  # never returns
    _, status = os.waitpid(script.child, 0)
    report["child_exit_status"] = os.waitstatus_to_exitcode(status)
    report["parent_first_write_touch"] = ms(timer["pw1"] - timer["pw0"])
    report["parent_rewrite_touch"] = ms(timer["pw3"] - timer["pw2"])
    report["parent_write_touch_after_fork_cow"] = ms(timer["pc1"] - timer["pc0"])
    report["parent_rewrite_after_cow"] = ms(timer["pc3"] - timer["pc2"])
    report["spinner_kept_running"] = int.from_bytes(mem.raw[COUNTER:COUNTER + 8], "little") > 0
    t = time.perf_counter()
    copy = bytes(mem.raw[TOUCH:touch_end])  # option (b)'s floor: one copy of the RAM
    report["python_copy_of_touched_ram"] = ms(time.perf_counter() - t)
    del copy
    for k, v in report.items():
        print(f"  parent {k}: {v}")
    sys.stdout.flush()
    os._exit(0)  # the spinner vCPU is still in KVM_RUN


if __name__ == "__main__":
    main()
