"""Syscall-site patching, tier 1 (docs/design/fast-syscalls.md, section 3.2).

At a site's second exit (P = RCX - 2, nr = RAX) the window `mov $nr,%eax; syscall`
(b8 imm32 0f 05) or `mov $nr,%rax; syscall` (48 c7 c0 imm32 0f 05) has its `mov`
overwritten with `jmp rel32` to a per-site stub in an arena within +-2 GiB. The `0f 05`
stays: a thread already past the old `mov`, or a jump into the window, still makes a
correct real syscall, and a restarted call (RIP = return - 2) lands on it. One known
instruction may stand between the `mov` and the `syscall` (BETWEEN: glibc's contended
mutex wait; or a 64-bit `lea`, as in glibc's pthread_create and start_thread), or a few
register moves (musl's inline calls); the per-site stub replays them (a RIP-relative
`lea` as a `movabs` of its address), and they stay in place for a jump to them. A window
whose `mov` straddles a cache line gives its `lea` the jmp rel32 instead (the `mov` in
place has set rax).

Writes another vCPU may be executing follow the order of Linux's text_poke_bp, with a
self-loop `jmp .` (eb fe) where Linux puts an int3: the loop at the first two bytes (one
atomic 16-bit store), the other three, then the first two; each step followed by a sync
(every other vCPU in guest mode leaves it once: a VM exit serialises its instruction
fetches). A thread that meets the loop waits in it for the last store. Each vCPU has its
own exception stack, so int3 would work too, but the loop is kept: it needs no fault exit
and no special case on the signal path (a guest's own SIGTRAP handler or gdb can never
take it for theirs), and a thread leaves it by itself. Its one cost: a window whose first
two bytes straddle a cache line cannot take the jmp (one site in 64); its `syscall` is
patched as a windowless site's instead (below).

Short sites (section 3.5): `xor %eax,%eax; syscall` (glibc's read, nr 0) has no room for
a `jmp rel32`. The 2-byte xor (one instruction: no jump lands inside it) becomes `jmp
rel8` (one 16-bit store) to dead padding within reach (pads.py) that first receives a
`jmp rel32` to a per-site stub replaying the xor; the `syscall` stays in place.

musl's __syscall_cp_asm (MUSL_CP) has no pad: its 5-byte instruction before the
`syscall` takes the jmp rel32 instead, replayed by the stub, as do the last two of musl's
__clone and the three of its __wait loop's head (KNOWN_HEADS). So does a register window's
`mov $nr,%reg` (musl's futex wakes, the number moved to rax last), whose stub replays the
whole sequence up to the `syscall`.
glibc's and musl's thread exit loops (EXIT_LOOPS) have neither a window nor a pad: their
instructions before the `syscall` and the syscall's first bytes take the jmp rel32, and a
thread sent back to the site goes to the loop's head (Site.covers_syscall).

Windowless sites (section 3.4): the number comes from another register or from memory
(glibc's syscall(), musl's __syscall_cp_c and its inline calls with arguments set up in
between, Go's Syscall6). The `syscall` itself becomes the `jmp rel8` to a pad, whose `jmp
rel32` goes to a stub that only loads the return address into rcx and enters: rax is
already the number. A jump to the site, a restarted call (RIP = return - 2) and a kicked
vCPU sent back to the site all take the jmp, which makes the same call.
"""

from __future__ import annotations

import ctypes
import struct
import threading
from collections.abc import Callable, Iterable

from karn.abi.fastcall import EXIT, FASTMAP_BITS
from karn.hints import NamedTuple, Protocol
from karn.platform.barrier import leave_guest_once
from karn.platform.fastcall.pads import LEGACY, find_pad
from karn.platform.fastcall.stubs import ENTRY, SITE_STUB_STRIDE, short_stub, site_stub
from karn.platform.warmup import WARM_EXITS, ExitCount

ARENA_SIZE = 0x10000  # the entry, then per-site stubs
STUBS_OFFSET = (len(ENTRY) + 0xFF) & ~0xFF  # per-site stubs follow the entry
REACH = 1 << 31  # of a rel32 jump
JMP_REL32 = 0xE9
SELF_LOOP = 0xFEEB  # eb fe as a little-endian u16
CACHE_LINE = 64
SYSCALL = b"\x0f\x05"
JMP_REL8 = 0xEB
# `xor %eax,%eax` (both encodings) before a `syscall` with nr 0: a short site. A raw scan
# for `31 c0 0f 05` found only instruction-aligned hits (glibc 2.36 libc.so.6, static
# glibc, busybox: 3 of 3 each); the bytes before must be no prefix of the xor.
SHORT_HEADS = (b"\x31\xc0", b"\x33\xc0")
PREFIXES = LEGACY | frozenset((0x67, *range(0x40, 0x50)))  # and address size, REX
PAD_REACH = 127  # of the jmp rel8, from the end of the xor (P)
AFTER = PAD_REACH + 2 + 16  # bytes read after P for the pad search (a pad's last nop)


class CodeSpace(Protocol):
    """The guest's address-space books (kernel/mm.py AddressSpace), as far as patching
    needs them."""

    def is_private_code(self, start: int, end: int) -> bool: ...

    def reserve_near(self, lo: int, hi: int, length: int) -> int | None: ...


class RunningCpu(Protocol):
    """A vCPU as a sync sees it (platform/vcpu.py)."""

    in_guest: bool
    exits: int

    def kick(self) -> None: ...


# Instructions a window may have between its `mov $nr,%eax` and the `syscall`, replayed by
# the per-site stub: each touches no memory, and neither rax, rcx nor r11 (the stub's).
# glibc's __lll_lock_wait(_private), a contended mutex's wait: `xor $0x80,%sil` (the
# private flag, FUTEX_WAIT | FUTEX_PRIVATE_FLAG).
BETWEEN = (b"\x40\x80\xf6\x80",)
# And a 64-bit `lea` (REX.W, opcode 8d, no SIB byte), which computes an address and touches
# no memory either: `lea disp32(%base),%reg` or `lea disp8(%base),%reg`, replayed as it
# is, or `lea disp32(%rip),%reg`, replayed as `movabs $address,%reg` (the stub is
# elsewhere). glibc's pthread_create: `mov $14,%eax; lea sigall_set(%rip),%rsi; syscall`;
# start_thread: `mov $14,%eax; lea 0x8f0(%rbx),%rsi; syscall` (rt_sigprocmask, twice a
# thread).
LEA_REX = (0x48, 0x49, 0x4C, 0x4D)
LEA = 0x8D
# Or register set-up the compiler scheduled after the `mov $nr,%eax` (musl's inline calls:
# munmap's `mov $11,%eax; mov %rbx,%rdi; mov %rbp,%rsi; syscall`, mmap's, ...): up to
# MOVES_MAX bytes of instructions that only write a register other than rax and rsp from
# registers or immediates (register_moves), replayed as they are.
MOVES_MAX = 15
BEFORE = 5 + MOVES_MAX + 1  # bytes read before P: the longest window and a REX check byte
# Or the number in another register, moved to rax last (find_register_window): the whole
# sequence from its `mov $nr,%reg` is the head a stub replays (_patch_head), at most
# HEAD_MAX bytes, which with the stub's lea and jmp fit its SITE_STUB_STRIDE.
HEAD_MAX = SITE_STUB_STRIDE - 12

# musl's __syscall_cp_asm, through which dynamic musl makes every cancellable call (read,
# write, close, ...): the number from a register, and no padding after the function (the
# next one follows its last jmp), so neither a window nor a pad. Its last instruction
# before the syscall, `mov %r11,8(%rsp)` (5 bytes: one instruction, which no branch
# targets), becomes the jmp rel32 to a stub that replays it. Matched on the
# function's body from `mov %rdi,%r11` (musl 1.2's src/thread/x86_64/syscall_cp.s).
MUSL_CP = bytes.fromhex("4989fb4889f04889d74889ce4c89c24d89ca4c8b4424084c8b4c2410"
                        "4c895c2408") + SYSCALL
# musl's __clone (every pthread_create: src/thread/x86_64/clone.s) sets rax with `xor
# %eax,%eax; mov $56,%al` (no window) and has no pad before the next function: its last two
# instructions, `sub $8,%rsi; mov %rcx,(%rsi)` (the new stack's entry point; 7 bytes, no
# branch lands inside), take the jmp rel32 and are replayed. Matched from `mov %rdi,%r11`.
MUSL_CLONE = bytes.fromhex("4989fb4889d74c89c24d89c84c8b5424084d89d94883e6f0"
                           "4883ee0848890e") + SYSCALL
# musl's __wait (its internal locks' futex wait): `xor %r10d,%r10d; mov %rbp,%rax; mov
# %rbx,%rsi; syscall` at the head of a loop whose only way in is that head (the je back at
# its end): the three take the jmp rel32 and are replayed. Matched through the loop's end.
MUSL_WAIT = bytes.fromhex("4531d24889e84889de") + SYSCALL + bytes.fromhex(
    "4883f8da741f8b074439c874e8")
# Bodies with neither a window nor a pad: (bytes, the syscall's offset in them, the length
# of the instructions before it that take the jmp rel32 and are replayed).
KNOWN_HEADS = ((MUSL_CP, len(MUSL_CP) - 2, 5), (MUSL_CLONE, len(MUSL_CLONE) - 2, 7),
               (MUSL_WAIT, 9, 9))


# A thread's end in glibc (start_thread) and musl (pthread_exit, _Exit): a loop `for (;;)
# exit(0)` whose number is in edx/rdx: `xor %edi,%edi; mov %edx,%eax; syscall; jmp .-8`
# (glibc 2.36), `mov %rdx,%rax; syscall; jmp .-7` (musl 1.2). No window, no pad in reach,
# and the call never returns, so each thread's end was a real `syscall` (~14 µs more than
# the stub's way out here). The jmp rel32 goes at the loop's head, which the loop's own
# jump targets, over the instructions before the syscall and the syscall's first byte or
# two; the stub replays them (registers only: harmless to repeat). Patched only for exit
# (EXIT): the call is never restarted, and a thread kicked before it goes back to the
# head. The head's length is the bytes before the syscall.
EXIT_LOOPS = ((bytes.fromhex("31ff89d0") + SYSCALL + b"\xeb\xf8", 4),
              (bytes.fromhex("4889d0") + SYSCALL + b"\xeb\xf9", 3))

# Heads whose jmp rel32 covers more than their first instruction: the instruction
# boundaries inside its 5 bytes (offsets from S, the syscall's own if it is one), each with
# what undoes the head's instructions before it (register, addend). A thread about to run
# at one (stopped there in place before the patch, a signal frame saying so, or a kick in
# the stub sent back to the instruction in place) runs the jmp's bytes instead: it goes
# back to S, the effects undone (platform/vcpu.py checks at each entry). `sub $8,%rsi` is
# undone; the others (xor of a register with itself, register moves whose sources they
# leave alone) are harmless to repeat.
Undo = tuple[tuple[str, int], ...]
INNER_STEPS: dict[bytes, tuple[tuple[int, Undo], ...]] = {
    EXIT_LOOPS[0][0][:4]: ((2, ()), (4, ())),  # glibc's exit loop: xor; mov; syscall
    EXIT_LOOPS[1][0][:3]: ((3, ()),),  # musl's: mov; syscall
    MUSL_CLONE[-9:-2]: ((4, (("rsi", 8),)),),  # sub $8,%rsi; mov %rcx,(%rsi)
    MUSL_WAIT[:9]: ((3, ()),),  # xor %r10d,%r10d; mov; mov
}


def _lea_length(code: bytes, end: int) -> int:
    """The length (7 or 4) of a 64-bit `lea` without SIB that ends at code[end], or 0. A
    destination rax is none (the window's nr would not survive it)."""
    for length, mod in ((7, 0b10), (7, 0b00), (4, 0b01)):
        at = end - length
        if at < 0 or code[at] not in LEA_REX or code[at + 1] != LEA:
            continue
        modrm = code[at + 2]
        rm = modrm & 7
        if modrm >> 6 != mod or rm == 0b100 or (mod == 0b00 and rm != 0b101):
            continue
        if (modrm >> 3) & 7 == 0 and not code[at] & 4:
            return 0
        return length
    return 0


# Register-only instructions (ModRM mod 11): mov r/m,r (89), mov r,r/m (8b), xor (31, 33),
# movsxd (63), mov $imm32,r/m (c7 /0), mov $imm,r (b8+r); the register each writes is
# ModRM's rm (89, 31, c7) or reg field (8b, 33, 63).
WRITES_RM = frozenset((0x89, 0x31))
WRITES_REG = frozenset((0x8B, 0x33, 0x63))
MOV_IMM_RM = 0xC7
RAX, RSP = 0, 4


def register_moves(code: bytes, at: int, end: int, keep: int = RAX) -> bool:
    """code[at:end] is whole instructions that only write registers other than rax, rsp
    and `keep`, from registers or immediates (no memory, no branch): replayable
    elsewhere."""
    while at < end:
        rex = code[at] if 0x40 <= code[at] <= 0x4F else 0
        i = at + (1 if rex else 0)
        if i >= end:
            return False
        op = code[i]
        if 0xB8 <= op <= 0xBF:
            dest = (op & 7) | (rex & 1) << 3
            length = i + 1 + (8 if rex & 8 else 4) - at
        elif op in WRITES_RM or op in WRITES_REG or op == MOV_IMM_RM:
            if i + 1 >= end or code[i + 1] >> 6 != 3:
                return False
            modrm = code[i + 1]
            if op == MOV_IMM_RM and (modrm >> 3) & 7:
                return False
            if op in WRITES_REG:
                dest = (modrm >> 3) & 7 | (rex & 4) << 1
            else:
                dest = modrm & 7 | (rex & 1) << 3
            length = i + 2 + (4 if op == MOV_IMM_RM else 0) - at
        else:
            return False
        if dest in (RAX, RSP, keep):
            return False
        at += length
    return at == end


def find_register_window(code: bytes, nr: int) -> int | None:
    """`code` = bytes before P and the 2 at P: the offset from P of a `mov $nr,%reg`
    (reg not rax) that register moves (none writing reg) and `mov %reg,%rax` follow up to
    the `syscall` (musl's inline calls with the number in r8: futex wakes), or None."""
    p = len(code) - 2
    if code[p:] != SYSCALL or p < 8:
        return None
    last = code[p - 3 : p]  # mov %reg,%rax: REX.W (R or B for r8-r15), 89 or 8b, mod 11
    if last[0] & 0xF0 != 0x40 or not last[0] & 8 or last[2] >> 6 != 3:
        return None
    if last[1] == 0x89 and last[2] & 7 == RAX:
        reg = (last[2] >> 3) & 7 | (last[0] & 4) << 1
    elif last[1] == 0x8B and (last[2] >> 3) & 7 == RAX:
        reg = last[2] & 7 | (last[0] & 1) << 3
    else:
        return None
    imm = bytes((0xB8 + (reg & 7),)) + struct.pack("<I", nr)
    rex = b"\x41" if reg & 8 else b""
    for at in range(p - 3 - len(rex) - 5, max(p - HEAD_MAX, 1) - 1, -1):
        if code[at : at + len(rex) + 5] == rex + imm \
                and (rex or not 0x40 <= code[at - 1] <= 0x4F) \
                and register_moves(code, at + len(rex) + 5, p - 3, keep=reg):
            return at - p
    return None


def replayed(between: bytes, address: int) -> bytes:
    """What the per-site stub executes for the instruction `between` found at `address` in
    the window: itself, or for a RIP-relative `lea` a `movabs` of the address it computes."""
    if _rip_lea(between):
        target = (address + 7 + struct.unpack_from("<i", between, 3)[0]) & ((1 << 64) - 1)
        reg = (between[2] >> 3) & 7
        return bytes((0x48 | (between[0] & 4) >> 2, 0xB8 + reg)) + struct.pack("<Q", target)
    return between


def _rip_lea(between: bytes) -> bool:
    return len(between) == 7 and between[0] in LEA_REX and between[1] == LEA \
        and between[2] & 0xC7 == 0x05


class Site(NamedTuple):
    start: int  # S: the window's first byte (a windowless site: its syscall)
    length: int  # 7 or 9, or 7 + len(between); a short site 4, a windowless one 2
    nr: int  # -1: any number (a windowless site; with no pad, MUSL_CP and EXIT_LOOPS)
    original: bytes  # the 5 bytes the jmp replaced (short, windowless: the 2 of the jmp)
    stub: int
    between: bytes = b""  # what stands between the mov and the syscall, replayed
    pad: int = 0  # `jmp rel32` to the stub in dead padding (short, windowless); 0: a window
    inner: tuple[tuple[int, Undo], ...] = ()  # a head's INNER_STEPS

    def resume_at(self, offset: int) -> int:
        """Where a vCPU stopped at `offset` (an instruction boundary) in the per-site stub
        goes on, the call not made: the window's instruction the stub's next one replays
        (rax = nr from the stub's mov on; the replayed instruction may be longer than the
        one in place, a relocated lea). A stub replaying the head before the syscall (a
        short site's xor, musl's instruction, a register window's moves; none for a
        windowless site) as it is, or one relocated lea: the next instruction in place,
        or the syscall once all ran (an address inside the jmp is then taken back to the
        head: INNER_STEPS). A site whose jmp covers its syscall: its head."""
        if self.covers_syscall:
            return self.start
        if self.pad or self.nr < 0:
            return self.start + min(offset, self.syscall - self.start)
        if offset == 0:
            return self.start
        # after the stub's 5-byte mov: past the window's own mov, which is 7 bytes in Go's
        # `mov $nr,%rax` (start + 5 is inside it: Go's runtime died at the call's number)
        mov = self.length - 2 - len(self.between)
        done = offset - 5  # bytes of `between` replayed: its own instructions, or a lea's
        if _rip_lea(self.between):  # movabs, all or nothing
            done = len(self.between) if done else 0
        return self.start + mov + min(done, len(self.between))

    @property
    def syscall(self) -> int:
        """P, the `syscall` instruction's address."""
        return self.start + self.length - 2

    @property
    def covers_syscall(self) -> bool:
        """The jmp rel32 at S overwrote the syscall (EXIT_LOOPS): a thread goes back to S,
        never to P."""
        return not self.pad and self.length < 7


class Arena:
    __slots__ = ("start", "next_stub", "sites")

    def __init__(self, start: int) -> None:
        self.start = start
        self.next_stub = start + STUBS_OFFSET
        self.sites: dict[int, Site] = {}  # stub address -> site

    def copy(self) -> Arena:
        arena = Arena(self.start)
        arena.next_stub = self.next_stub
        arena.sites = dict(self.sites)
        return arena

    @property
    def entry(self) -> int:
        return self.start

    @property
    def end(self) -> int:
        return self.start + ARENA_SIZE

    def full(self, strides: int = 1) -> bool:
        return self.next_stub + strides * SITE_STUB_STRIDE > self.end

    def reaches(self, start: int, length: int) -> bool:
        return start + length - REACH < self.start and self.end < start + REACH


def find_window(code: bytes, nr: int) -> tuple[int, int, bytes] | None:
    """`code` = bytes before P (up to BEFORE) and the 2 at P; (offset of S from P, length,
    the instructions between) of a window whose immediate is nr, or None."""
    p = len(code) - 2
    if code[p:] != SYSCALL or p < 6:
        return None
    if code[p - 5] == 0xB8 and struct.unpack_from("<I", code, p - 4)[0] == nr \
            and not 0x40 <= code[p - 6] <= 0x4F:  # a REX byte would make it mov r8d..r15d
        return -5, 7, b""
    if p >= 7 and code[p - 7 : p - 4] == b"\x48\xc7\xc0" \
            and struct.unpack_from("<i", code, p - 4)[0] == nr:
        return -7, 9, b""
    lea = _lea_length(code, p)
    for between in (*BETWEEN, code[p - lea : p] if lea else None):
        if between is None:
            continue
        at = p - len(between)
        if at >= 6 and code[at:p] == between and code[at - 5] == 0xB8 \
                and struct.unpack_from("<I", code, at - 4)[0] == nr \
                and not 0x40 <= code[at - 6] <= 0x4F:
            return at - 5 - p, 7 + len(between), between
    for at in range(p - 6, max(p - 5 - MOVES_MAX, 1) - 1, -1):  # the mov's first byte
        if code[at] == 0xB8 and struct.unpack_from("<I", code, at + 1)[0] == nr \
                and not 0x40 <= code[at - 1] <= 0x4F and register_moves(code, at + 5, p):
            return at - p, p + 2 - at, code[at + 5 : p]
    return None


class Patcher:
    def __init__(self, raw: memoryview, host_base: int, code: CodeSpace, user_start: int,
                 user_end: int, cpus: Callable[[], Iterable[RunningCpu]]) -> None:
        self._raw = raw
        self._host_base = host_base
        self._code = code
        self._user = (user_start, user_end)
        self._cpus = cpus  # the vCPUs that may run guest code now
        self._lock = threading.RLock()  # forget() may come from inside a patch's mm call
        self.enabled = True
        self.known: dict[int, bool] = {}  # P -> patched (True) or refused (False)
        # exits at unpatched sites so far (WARM_EXITS) and the P that exited: patched at
        # their next exit (the warm-up's count, handed over: warmed)
        self.count = ExitCount()
        self.warm_exits = WARM_EXITS
        self.patched: dict[int, Site] = {}  # by S
        # the INNER_STEPS of patched heads (and of one being patched) by address: (S, undo)
        self.interiors: dict[int, tuple[int, Undo]] = {}
        self.arenas: list[Arena] = []
        self._leaving: list[Arena] = []  # arenas forget() is taking away (see there)
        # windows across a cache line put back while others ran (_redirect): S -> (the
        # site, the address of the piece its jmp now goes to)
        self.redirected: dict[int, tuple[Site, int]] = {}

    def forked(self, cpus: Callable[[], Iterable[RunningCpu]]) -> Patcher:
        """In a forked monitor: a patcher for the child's copy of the guest memory, which
        holds this one's patched sites and arenas as they were at the fork (a fork holds
        the lock: no patch was half-written). Its vCPUs are the child's (cpus)."""
        child = Patcher(self._raw, self._host_base, self._code, *self._user, cpus)
        child.enabled = self.enabled
        child.known = dict(self.known)
        child.count = self.count.copy()
        child.patched = dict(self.patched)
        child.interiors = dict(self.interiors)
        child.arenas = [arena.copy() for arena in self.arenas]
        child.redirected = dict(self.redirected)
        return child

    # -- patching ------------------------------------------------------------------------

    def site_exit(self, caller: RunningCpu, site: int, nr: int) -> None:
        """A real `syscall` at `site` was just served on `caller`'s exit. A site is
        patched at its second exit, once the process has made WARM_EXITS exits: most of a
        program's start-up calls (the loader's, libc's set-up) come from sites that run
        once, where a patch (~50 µs) and the server it wakes cost more than the one exit
        they would save."""
        with self._lock:
            if site in self.known or not self.enabled:
                return
            patch = self.will_patch(site)
            count = self.count
            count.exits += 1
            if not patch:
                count.seen.add(site)
                return
            count.seen.discard(site)
            self.known[site] = self._patch(caller, site, nr)

    def will_patch(self, site: int) -> bool:
        """Whether this exit's site_exit(site) will try to patch the site (its second exit
        or later, the process warm: WARM_EXITS exits counted before this one)."""
        return site in self.count.seen and self.count.exits >= self.warm_exits

    def _patch(self, caller: RunningCpu, p: int, nr: int) -> bool:
        lo, hi = self._user
        if p - 10 < lo or p + 2 > hi:
            return False
        if nr == 0 and bytes(self._raw[p - 2 : p]) in SHORT_HEADS:
            return self._patch_pad(caller, p - 2, p)
        if nr == EXIT:
            for loop, head in EXIT_LOOPS:
                if bytes(self._raw[p - head : p - head + len(loop)]) == loop:
                    return self._patch_head(caller, p, head)
        window = None
        if 0 <= nr < FASTMAP_BITS:
            window = find_window(bytes(self._raw[max(lo, p - BEFORE) : p + 2]), nr)
        if window is None:
            return self._patch_windowless(caller, p, nr)
        start, length, between = p + window[0], window[1], window[2]
        straddles = _straddles(start)
        if straddles:  # a 16-bit store there is not atomic:
            if _lea_length(between, len(between)) == 7 == len(between):  # the lea after
                return self._patch_head(caller, p, 7)  # the mov (rax set by then) takes it
            if self._patch_pad(caller, p, p):  # else the syscall itself (rax set already)
                return True
            if self._others(caller):  # no pad: only while no other vCPU can run the mov
                return False  # (none binds while the lock is held); see _restore
        if not self._code.is_private_code(start, p + 2):
            return False
        arena = self._arena_for(start, length, 2 if straddles else 1)
        if arena is None:
            return False
        stub = self._write_stub(arena, lambda at: site_stub(
            at, nr, start + length, arena.entry, replayed(between, start + 5)))
        if straddles:  # the next stride is kept for the piece that may undo it (_restore)
            self._write_stub(arena, lambda at: b"")
        site = Site(start, length, nr, bytes(self._raw[start : start + 5]), stub, between)
        self._poke(caller, start, _jmp_rel32(start, stub))
        self._record(arena, site)
        return True

    def _patch_windowless(self, caller: RunningCpu, p: int, nr: int) -> bool:
        """A site with no `mov $nr,%eax` window: a known body's instructions before the
        syscall, a register window's whole sequence, or else the syscall itself (a pad:
        the number comes from elsewhere)."""
        for body, at, head in KNOWN_HEADS:
            if bytes(self._raw[p - at : p - at + len(body)]) == body:
                return self._patch_head(caller, p, head)
        if 0 <= nr < FASTMAP_BITS:
            code = bytes(self._raw[max(self._user[0], p - HEAD_MAX - 1) : p + 2])
            moved = find_register_window(code, nr)
            if moved is not None:
                return self._patch_head(caller, p, -moved)
        return self._patch_pad(caller, p, p)

    def _patch_pad(self, caller: RunningCpu, start: int, p: int) -> bool:
        """The 2 bytes at `start` become `jmp rel8` to a pad holding `jmp rel32` to the
        stub (see the top): a short site's xor (start = p - 2, replayed by the stub), or a
        windowless site's `syscall` itself (start = p: rax holds the number already)."""
        ret = p + 2
        if _straddles(start) or p + AFTER > self._user[1] \
                or bytes(self._raw[p:ret]) != SYSCALL \
                or (start < p and self._raw[start - 1] in PREFIXES):
            return False
        pad = find_pad(bytes(self._raw[ret : p + AFTER]), ret, start + 2 + PAD_REACH - ret)
        if pad is None or pad - (start + 2) > PAD_REACH \
                or not self._code.is_private_code(start, pad + 5):
            return False
        arena = self._arena_for(start, pad + 5 - start)
        if arena is None:
            return False
        original = bytes(self._raw[start : start + 2])
        replay = original if start < p else b""
        stub = self._write_stub(arena, lambda at: short_stub(at, replay, ret, arena.entry))
        # the pad: no code reaches it yet, and every other vCPU fetches it afresh after
        # the sync; then the jmp rel8, one 16-bit store in a cache line
        self._raw[pad : pad + 5] = _jmp_rel32(pad, stub)
        leave_guest_once(self._others(caller))
        self._store16(start, bytes((JMP_REL8, pad - (start + 2))))
        self._record(arena, Site(start, ret - start, 0 if start < p else -1, original, stub,
                                 b"", pad))
        return True

    def _patch_head(self, caller: RunningCpu, p: int, length: int) -> bool:
        """The `length` bytes of instructions before the syscall (rax set by them or
        before) become `jmp rel32` to a stub that replays them: musl's one 5-byte
        instruction or a window's lea whose mov straddles a cache line (the syscall
        stays), or an exit loop's (EXIT_LOOPS: the jmp covers the syscall, or its first
        byte, too)."""
        start = p - length
        if _straddles(start) or not self._code.is_private_code(start, p + 2):
            return False
        arena = self._arena_for(start, length + 2)
        if arena is None:
            return False
        head = replayed(bytes(self._raw[start:p]), start)
        stub = self._write_stub(arena, lambda at: short_stub(at, head, p + 2, arena.entry))
        site = Site(start, length + 2, -1, bytes(self._raw[start : start + 5]), stub,
                    inner=INNER_STEPS.get(head, ()))
        # known before the first byte changes: a vCPU entering the guest from then on is
        # checked, and every one in it now is kicked (_poke's sync) and checked as it
        # goes back
        self.interiors.update((start + at, (start, undo)) for at, undo in site.inner)
        self._poke(caller, start, _jmp_rel32(start, stub))
        self._record(arena, site)
        return True

    def _write_stub(self, arena: Arena, code_at: Callable[[int], bytes]) -> int:
        """The arena's next per-site stub, written (code_at(its address)); its address."""
        stub = arena.next_stub
        arena.next_stub += SITE_STUB_STRIDE
        self._raw[stub : stub + SITE_STUB_STRIDE] = code_at(stub).ljust(SITE_STUB_STRIDE,
                                                                        b"\xcc")
        return stub

    def _record(self, arena: Arena, site: Site) -> None:
        self.patched[site.start] = site
        arena.sites[site.stub] = site

    def _store16(self, addr: int, data: bytes) -> None:
        ctypes.c_uint16.from_address(self._host_base + addr).value = data[0] | data[1] << 8

    def _others(self, caller: RunningCpu | None) -> list[RunningCpu]:
        """The vCPUs other than the caller's that may run guest code now."""
        return [cpu for cpu in self._cpus() if cpu is not caller]

    def _alone(self, caller: RunningCpu | None) -> bool:
        """Whether no vCPU but the caller's may run guest code now. With no caller (the
        books' forget(), from a guest's call): whether the process has one vCPU, the
        calling thread's own, stopped in the monitor or waiting in a stub for the call."""
        if caller is None:
            return len(list(self._cpus())) <= 1
        return not self._others(caller)

    def _restore(self, caller: RunningCpu | None, site: Site, stub_stays: bool = False
                 ) -> None:
        """Put a site's bytes back. A short site's pad then jumps back to the xor: a thread
        between the jmp rel8 and the pad, or one whose signal frame says the pad, makes
        the real call. A window whose mov straddles a cache line (patched while no other
        vCPU ran) cannot be put back untorn while others run: _redirect. stub_stays: the
        site's arena stays mapped (the guest took GS), not about to go."""
        if not site.pad:
            if _straddles(site.start) and not self._alone(caller):
                self._redirect(caller, site, site.stub + SITE_STUB_STRIDE if stub_stays
                               else None)
                return
            self._poke(caller, site.start, site.original)
            return
        self._store16(site.start, site.original)
        self._poke(caller, site.pad, _jmp_rel32(site.pad, site.start))

    def _redirect(self, caller: RunningCpu | None, site: Site, piece: int | None) -> None:
        """Undo a window whose mov straddles a cache line while other vCPUs run. Its first
        two bytes cannot change in one store, but its jmp's rel32 can (4 bytes from the
        line's start): it goes to a piece that makes the mov and goes on at the syscall
        in place, the real call. The piece: `piece`, the stride its patch kept after the
        stub, whose first instruction then jumps there too (a thread already in the
        stub); or, the arena holding the stub or piece about to go, a new one in another
        arena within reach. With none to be had the bytes go back as they can (torn)."""
        after = site.length - 2 - len(site.between)  # the mov's end (7 in Go)
        mov = site.original + bytes(self._raw[site.start + 5 : site.start + after])

        def code_at(at: int) -> bytes:
            return mov + _jmp_rel32(at + len(mov), site.start + after)

        if piece is not None:
            self._raw[piece : piece + SITE_STUB_STRIDE] = code_at(piece).ljust(
                SITE_STUB_STRIDE, b"\xcc")
            self._poke(caller, site.stub, _jmp_rel32(site.stub, piece))
        else:
            arena = self._arena_for(site.start, site.length)
            if arena is None:
                self.redirected.pop(site.start, None)
                self._poke(caller, site.start, site.original)
                return
            piece = self._write_stub(arena, code_at)
        rel32 = _jmp_rel32(site.start, piece)[1:]
        ctypes.c_uint32.from_address(self._host_base + site.start + 1).value = \
            int.from_bytes(rel32, "little")
        leave_guest_once(self._others(caller))  # none goes on to a stub about to go
        self.redirected[site.start] = (site, piece)

    def _arena_for(self, start: int, length: int, strides: int = 1) -> Arena | None:
        """An arena within reach of [start, start + length) with room for `strides`
        stubs, reserved if none is."""
        for arena in self.arenas:
            if not arena.full(strides) and arena.reaches(start, length) \
                    and arena not in self._leaving:
                return arena
        lo = max(self._user[0], start + length - REACH + 0x1000)
        addr = self._code.reserve_near(lo, start + REACH - ARENA_SIZE, ARENA_SIZE)
        if addr is None:
            return None
        arena = Arena(addr)
        self._raw[addr : addr + len(ENTRY)] = ENTRY
        self.arenas.append(arena)
        return arena

    def _poke(self, caller: RunningCpu | None, start: int, data: bytes) -> None:
        """Write 5 bytes of code that other vCPUs may be executing (see the top)."""
        others = self._others(caller)
        if not others:
            self._raw[start : start + 5] = data
            return
        self._store16(start, SELF_LOOP.to_bytes(2, "little"))
        leave_guest_once(others)
        self._raw[start + 2 : start + 5] = data[2:]
        leave_guest_once(others)
        self._store16(start, data)

    # -- questions from the exit paths ---------------------------------------------------

    def restart_at(self, p: int) -> int:
        """Where a thread goes to make the call of the syscall at p again, the call not
        made (kicked in the entry code): p, or the head of a site whose jmp covers it."""
        for _, head in EXIT_LOOPS:
            site = self.patched.get(p - head)
            if site is not None and site.covers_syscall:
                return site.start
        return p

    def arena_of(self, addr: int) -> Arena | None:
        for arena in self.arenas:
            if arena.start <= addr < arena.end:
                return arena
        return None

    # -- undoing -------------------------------------------------------------------------

    def unpatch_all(self, caller: RunningCpu) -> None:
        """Put every site back and patch no more (the guest took GS for itself)."""
        with self._lock:
            self.enabled = False
            for site in list(self.patched.values()):
                self._restore(caller, site, stub_stays=True)
            self.patched.clear()
            self._index_interiors()

    def warmed(self, count: ExitCount) -> None:
        """A transport made once the process was warm (platform/warmup.py): the exits
        it made before, and their sites, count on here."""
        with self._lock:
            self.count = count

    def new_program(self) -> None:
        """execve: the new program's exits count from none (WARM_EXITS), not the old's."""
        with self._lock:
            self.count.new_program()

    def forget(self, start: int, end: int) -> None:
        """[start, end) is about to be unmapped or replaced: sites inside are dropped (the
        code arriving there is patched afresh), sites outside that use an arena inside are
        put back first."""
        with self._lock:
            self.known = {p: v for p, v in self.known.items() if not start <= p < end}
            self.count.forget(start, end)
            for s in [s for s in self.patched if start <= s < end]:
                del self.patched[s]
            for site in [s for s in self.patched.values() if s.pad and start <= s.pad < end]:
                del self.patched[site.start]  # its pad goes: the xor back (no pad write)
                self._store16(site.start, site.original)
                self.known.pop(site.syscall, None)
            self.redirected = {s: v for s, v in self.redirected.items()
                               if not start <= s < end}
            # Arenas going stay listed while their sites are put back (a vCPU kicked
            # meanwhile is settled by the arena it stopped in), but get no new piece.
            self._leaving = [a for a in self.arenas if a.start < end and start < a.end]
            try:
                for arena in self._leaving:
                    for site in arena.sites.values():
                        if self.patched.pop(site.start, None) is not None:
                            self._restore(None, site)
                            self.known.pop(site.syscall, None)
                for site, piece in list(self.redirected.values()):
                    if start <= piece < end:
                        self._redirect(None, site, None)
            finally:
                for arena in self._leaving:
                    self.arenas.remove(arena)
                self._leaving = []
            self._index_interiors()

    def _index_interiors(self) -> None:
        """interiors from the sites patched now (replaced whole: vCPUs read it unlocked);
        an address left over would send a thread in other code to a head."""
        self.interiors = {site.start + at: (site.start, undo)
                          for site in self.patched.values() for at, undo in site.inner}


def _straddles(addr: int) -> bool:
    """Whether a 16-bit store at addr crosses a cache line (it is not atomic then)."""
    return addr % CACHE_LINE == CACHE_LINE - 1


def _jmp_rel32(at: int, to: int) -> bytes:
    return bytes((JMP_REL32,)) + struct.pack("<i", to - at - 5)
