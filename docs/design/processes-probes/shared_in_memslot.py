"""Probe for issue 15 (section 6.2): a memfd mapped MAP_SHARED|MAP_FIXED over part of guest
RAM while the guest runs: does a running PVM guest see it, and does it stay shared with a
forked process?   Run from that directory: PYTHONPATH=<worktree>:. python3 shared_in_memslot.py
"""

from __future__ import annotations

import ctypes
import mmap
import os

from fork_vm import CODE, INTERP, Script, Stop, assemble  # same directory

from karn.platform.kvm import VirtualMachine
from karn.platform.layout import layout_for
from karn.platform.vcpu import Vcpu, install_kick_handler

SHARED = 0x20000000  # a 2 MiB-aligned guest range replaced by the memfd
LENGTH = 2 << 20
MAP_FIXED = 0x10


def main() -> None:
    install_kick_handler()
    vm = VirtualMachine(layout_for(4 << 30))
    mem = vm.memory
    mem.raw[CODE:CODE + 4096] = assemble(INTERP).ljust(4096, b"\xcc")
    mem.raw[SHARED:SHARED + 8] = (0xAAAA).to_bytes(8, "little")  # anonymous page, touched
    cpu = Vcpu(vm, 0)
    cpu.start({"rip": CODE, "rsp": 0x800000})
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    fd = os.memfd_create("guest-shared")
    os.ftruncate(fd, LENGTH)
    view = mmap.mmap(fd, LENGTH)
    out: dict[str, str] = {}

    def remap(s):
        addr = libc.mmap(ctypes.c_void_p(mem.host_address + SHARED), LENGTH,
                         mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | MAP_FIXED, fd, 0)
        assert addr == mem.host_address + SHARED, ctypes.get_errno()
        view[0:8] = (0xBBBB).to_bytes(8, "little")

    def fork_writer(s):
        pid = os.fork()
        if pid == 0:
            mem.raw[SHARED:SHARED + 8] = (0xCCCC).to_bytes(8, "little")  # via guest RAM
            os._exit(0)
        os.waitpid(pid, 0)

    steps = [
        (2, SHARED, 0, 0),
        lambda s: out.__setitem__("guest reads the anonymous page", hex(s.last_rsi)),
        remap,
        (2, SHARED, 0, 0),
        lambda s: out.__setitem__("guest reads after MAP_FIXED memfd over it", hex(s.last_rsi)),
        (1, SHARED + 8, 0xDDDD, 0),
        lambda s: out.__setitem__("guest write seen through the memfd",
                                  hex(int.from_bytes(view[8:16], "little"))),
        fork_writer,
        (2, SHARED, 0, 0),
        lambda s: out.__setitem__("guest reads a forked process's write",
                                  hex(s.last_rsi)),
    ]
    try:
        cpu.run(Script(cpu, steps))
    except Stop:
        pass
    for k, v in out.items():
        print(f"  {k}: {v}")


if __name__ == "__main__":
    main()
