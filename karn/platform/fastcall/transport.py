"""The fast syscall transport of one VM: per-vCPU slots, the patcher, the server, and what
a vCPU must do when it is stopped inside karn's entry code (settle).

A patched site jumps to a stub that hands the call to the server through the vCPU's slot
and spins for the answer (entry.S); the server serves it through the vCPU's own exit
client, so tracing, counters and policy see it as on the exit path. Whatever the server
declines, withdraws or cannot finish without blocking leaves through the exit path.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable
from types import ModuleType
from typing import Protocol

from karn import log
from karn.abi.fastcall import (
    DONE,
    DONE_WORK,
    FASTMAP_BITS,
    IDLE,
    IF_FLAG,
    LAHF_FLAGS,
    OF_FLAG,
    REDO,
    REQ,
    SLOT_ARGS,
    SLOT_AWAKE,
    SLOT_BUDGET,
    SLOT_FASTMAP,
    SLOT_FLAGS,
    SLOT_NR,
    SLOT_RESULT,
    SLOT_RET,
    SLOT_SIZE,
    SLOT_STATE,
    TAKEN,
)
from karn.platform.fastcall import stubs
from karn.platform.fastcall.patcher import STUBS_OFFSET, CodeSpace, Patcher, RunningCpu
from karn.platform.fastcall.server import Server

BUDGET_US = 50  # a stub waits this long for an untaken request: about one exit's cost
MASK64 = (1 << 64) - 1
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_CALL = struct.Struct("<7Q")  # nr and the six arguments


class FastClient(Protocol):
    """The kernel's side of one vCPU (kernel/threads.py TaskLoop), as the server uses it."""

    def serve_fast(self, nr: int, a0: int, a1: int, a2: int, a3: int, a4: int,
                   a5: int) -> int | None:
        """Serve a call on the server thread; None: redo it on the exit path."""
        ...

    def work_due(self) -> bool:
        """Signals to deliver or an exit requested: the answer makes the vCPU exit."""
        ...


class SlotCpu(RunningCpu, Protocol):
    index: int

    def snapshot_regs(self) -> dict[str, int]: ...

    def set_context(self, regs: dict[str, int]) -> None: ...


class _Slot:
    __slots__ = ("addr", "lock", "client", "cpu")

    def __init__(self, addr: int) -> None:
        self.addr = addr
        self.lock = threading.Lock()  # the server's answer vs. settle on the vCPU thread
        self.client: FastClient | None = None
        self.cpu: SlotCpu | None = None


class FastTransport:
    def __init__(self, helper: ModuleType, raw: memoryview, host_base: int, slots_addr: int,
                 code: CodeSpace, user_start: int, user_end: int, fastmap: Iterable[int],
                 tsc_khz: int) -> None:
        self._raw = raw
        self._cas = helper.cas32
        self._host_base = host_base
        self._slots_addr = slots_addr
        self._slots: list[_Slot] = []
        self._fastmap = bytearray(FASTMAP_BITS // 8)
        for nr in fastmap:
            if 0 <= nr < FASTMAP_BITS:
                self._fastmap[nr // 8] |= 1 << (nr % 8)
        self._budget = max(1, tsc_khz * BUDGET_US // 1000)
        self._lock = threading.Lock()
        self.patcher = Patcher(raw, host_base, code, user_start, user_end, self._running)
        self.server = Server(helper, raw, slots_addr, host_base, lambda: len(self._slots),
                             self._serve)
        self.served = 0  # calls answered by the server
        self.redone = 0  # calls it left to the exit path (they would have blocked)

    @property
    def active(self) -> bool:
        return self.patcher.enabled

    def _running(self) -> list[SlotCpu]:
        return [s.cpu for s in self._slots if s.cpu is not None and s.client is not None]

    # -- vCPUs ---------------------------------------------------------------------------

    def slot_address(self, index: int) -> int:
        """The GS base of vCPU `index`: its slot, set up on first use."""
        with self._lock:
            while len(self._slots) <= index:
                addr = self._slots_addr + len(self._slots) * SLOT_SIZE
                self._raw[addr : addr + SLOT_SIZE] = bytes(SLOT_SIZE)
                _U64.pack_into(self._raw, addr + SLOT_BUDGET, self._budget)
                _U32.pack_into(self._raw, addr + SLOT_AWAKE, 0 if self.server.asleep else 1)
                self._raw[addr + SLOT_FASTMAP : addr + SLOT_FASTMAP + len(self._fastmap)] = \
                    self._fastmap
                self._slots.append(_Slot(addr))
            return self._slots[index].addr

    def bind(self, cpu: SlotCpu, client: FastClient) -> None:
        """cpu runs guest code for client from now on (Vcpu.run)."""
        slot = self._slots[cpu.index]
        with self.patcher_lock():  # a patch in progress sees this vCPU or finishes first
            slot.cpu, slot.client = cpu, client
        self.server.start()

    def unbind(self, cpu: SlotCpu) -> None:
        slot = self._slots[cpu.index]
        with slot.lock:
            slot.client = None
        if not any(s.client is not None for s in self._slots):
            log.info("fast syscalls: %d sites patched, %d calls served in shared memory, "
                     "%d redone on the exit path", len(self.patcher.patched), self.served,
                     self.redone)

    def patcher_lock(self) -> threading.RLock:
        return self.patcher._lock

    def fast_call(self, nr: int) -> bool:
        return 0 <= nr < FASTMAP_BITS and bool(self._fastmap[nr // 8] >> (nr % 8) & 1)

    def exit_path_call(self, nr: int) -> None:
        """A call the server could have taken came through the exit path: wake it."""
        if self.server.asleep and self.fast_call(nr):
            self.server.wake()

    def slot_nr(self, index: int) -> int:
        return _U64.unpack_from(self._raw, self._slots[index].addr + SLOT_NR)[0]

    # -- the server side -----------------------------------------------------------------

    def _serve(self, index: int) -> None:
        slot = self._slots[index]
        raw = self._raw
        call = _CALL.unpack_from(raw, slot.addr + SLOT_NR)
        nr = call[0]
        client = slot.client
        result = None
        if client is not None and self.fast_call(nr):  # the slot's own bitmap is guest data
            result = client.serve_fast(*call)
        with slot.lock:
            if result is None:
                state = REDO
                self.redone += 1
            else:
                _U64.pack_into(raw, slot.addr + SLOT_RESULT, result & MASK64)
                state = DONE_WORK if client is not None and client.work_due() else DONE
                self.served += 1
            _U32.pack_into(raw, slot.addr + SLOT_STATE, state)

    # -- a vCPU stopped inside the entry code ---------------------------------------------

    def in_entry(self, rip: int) -> bool:
        arena = self.patcher.arena_of(rip)
        return arena is not None and rip - arena.start < len(stubs.ENTRY)

    def settle(self, cpu: SlotCpu) -> int:
        """cpu was kicked out of guest mode. If it stopped in karn's code, put it where a
        signal may be delivered: before the call (back at the site, the call not made:
        a handler returns to the `syscall` instruction) or after it (answered: the
        result loaded as the stub would). Returns the call's number in the second case,
        -1 otherwise. A call the server is serving is left alone: its answer will say
        that work is due."""
        regs = cpu.snapshot_regs()
        rip = regs["rip"]
        arena = self.patcher.arena_of(rip)
        if arena is None:
            return -1
        offset = rip - arena.start
        if offset >= len(stubs.ENTRY):  # a per-site stub: nothing done yet
            stub = offset - (offset - STUBS_OFFSET) % stubs.SITE_STUB_STRIDE
            site = arena.sites.get(arena.start + stub)
            if site is not None:
                regs["rip"] = site.start  # the window replays the stub's mov
                cpu.set_context(regs)
            return -1
        slot = self._slots[cpu.index]
        addr = slot.addr
        with slot.lock:
            state = _U32.unpack_from(self._raw, addr + SLOT_STATE)[0]
            if stubs.PUBLISHED <= offset < stubs.REDO:  # spinning: the state says
                if state == TAKEN:
                    return -1
                if state == REQ and not self._cas(self._host_base + addr, REQ, IDLE):
                    return -1  # the server took it just now
                if state in (DONE, DONE_WORK):
                    return self._answered(cpu, regs, addr)
            elif offset >= stubs.DONE_WORK:
                return self._answered(cpu, regs, addr)
            self._at_site(cpu, regs, addr, offset)
            return -1

    def _flags(self, addr: int) -> tuple[int, int]:
        """(lahf byte, OF) the stub saved."""
        value = struct.unpack_from("<H", self._raw, addr + SLOT_FLAGS)[0]
        return value >> 8, value & 1

    def _with_flags(self, regs: dict[str, int], addr: int) -> None:
        lahf, of = self._flags(addr)
        regs["rflags"] = (regs["rflags"] & ~(LAHF_FLAGS | OF_FLAG)) | (lahf & LAHF_FLAGS) \
            | (OF_FLAG if of else 0)

    def _at_site(self, cpu: SlotCpu, regs: dict[str, int], addr: int, offset: int) -> None:
        raw = self._raw
        if offset > 0:
            regs["rax"] = _U64.unpack_from(raw, addr + SLOT_NR)[0]
        if offset >= stubs.PUBLISHED:
            regs["rdx"] = _U64.unpack_from(raw, addr + SLOT_ARGS + 16)[0]
        if offset >= stubs.SAVED:
            self._with_flags(regs, addr)
        regs["rip"] = (regs["rcx"] - 2) & MASK64
        _U32.pack_into(raw, addr + SLOT_STATE, IDLE)
        cpu.set_context(regs)

    def _answered(self, cpu: SlotCpu, regs: dict[str, int], addr: int) -> int:
        raw = self._raw
        ret = _U64.unpack_from(raw, addr + SLOT_RET)[0]
        lahf, of = self._flags(addr)
        regs.update(
            rax=_U64.unpack_from(raw, addr + SLOT_RESULT)[0], rcx=ret, rip=ret,
            rdx=_U64.unpack_from(raw, addr + SLOT_ARGS + 16)[0],
            r11=(lahf & 0xFF) | (OF_FLAG if of else 0) | IF_FLAG,
        )
        self._with_flags(regs, addr)
        _U32.pack_into(raw, addr + SLOT_STATE, IDLE)
        cpu.set_context(regs)
        return _U64.unpack_from(raw, addr + SLOT_NR)[0]
