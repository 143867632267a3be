"""A seccomp filter as classic BPF, built here: no libseccomp at run time.

The program checks the architecture, then finds the call's number by binary search (about
eight comparisons for any of the ~190 numbers a filter names, where a linear chain would
test them one by one on every host system call the monitor makes), then tests a rule's
argument conditions. The search is over runs of consecutive numbers with the same rules
and the gaps between them (155 spans for the monitor's 190 numbers), not over the
numbers themselves: half the instructions (633, from 1,301) to build at every start-up
and for the kernel to check and translate when it installs the filter. Facts used:
seccomp(2) (struct seccomp_data, return values, flags), the classic BPF instruction set
of linux/filter.h, and the x86-64 syscall ABI (x32 calls carry bit 30 in the number).
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import struct

# linux/filter.h: instruction classes, sizes, modes, jumps, sources
LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
ALU_AND_K = 0x04 | 0x50 | 0x00  # BPF_ALU | BPF_AND | BPF_K
JMP_JA = 0x05 | 0x00
JMP_JEQ_K = 0x05 | 0x10 | 0x00
JMP_JGE_K = 0x05 | 0x30 | 0x00
RET_K = 0x06 | 0x00

# linux/seccomp.h
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
FLAG_TSYNC = 1
FLAG_LOG = 2
SET_MODE_FILTER = 1
AUDIT_ARCH_X86_64 = 0xC000003E
X32_BIT = 0x40000000
SYS_SECCOMP = 317  # x86-64

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
OFFSET_NR = 0
OFFSET_ARCH = 4
OFFSET_ARGS = 16


_INSN = struct.Struct("<HBBI")  # struct sock_filter: code, jt, jf, k


def errno_action(err: int) -> int:
    return RET_ERRNO | (err & 0xFFFF)


class Arg:
    """One condition on a 64-bit argument: (args[position] & mask) == value. (Arg and Rule
    are plain classes: a NamedTuple costs ~0.1 ms of every start-up to create.)"""

    __slots__ = ("position", "value", "mask")

    def __init__(self, position: int, value: int, mask: int = (1 << 64) - 1) -> None:
        self.position = position  # which argument, 0-5
        self.value = value
        self.mask = mask


class Rule:
    __slots__ = ("action", "conditions")

    def __init__(self, action: int, conditions: tuple[Arg, ...] = ()) -> None:
        self.action = action
        self.conditions = conditions


# struct sock_filter (code, jt, jf, k), as a plain tuple: a filter has ~650 of them,
# built on every start-up, and a NamedTuple's constructor is 3x slower
Insn = tuple[int, int, int, int]


class FilterError(Exception):
    """A filter that cannot be expressed (a rule set too large for a short jump)."""


def compile_filter(rules: dict[int, list[Rule]], default: int) -> list[Insn]:
    """The program for {syscall number: rules tried in order}; unmatched calls get
    `default`, as does a call whose rules all fail their conditions."""
    prog = [
        (LD_W_ABS, 0, 0, OFFSET_ARCH),
        (JMP_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (RET_K, 0, 0, RET_KILL_PROCESS),  # another ABI (i386 int 0x80): never ours
        (LD_W_ABS, 0, 0, OFFSET_NR),
        (JMP_JGE_K, 0, 1, X32_BIT),
        (RET_K, 0, 0, default),  # x32 numbers alias x86-64 ones; -1 lands here too
    ]
    spans = _spans(rules)
    _search(prog, spans, 0, len(spans), default)
    return prog


def _key(rules: list[Rule]) -> tuple:
    return tuple((r.action, tuple((a.position, a.value, a.mask) for a in r.conditions))
                 for r in rules)


def _spans(rules: dict[int, list[Rule]]) -> list[tuple[int, list[Rule] | None]]:
    """(first number, its rules; None: `default`) for every number from 0 upwards, in
    order, each span running to the next one's first number: consecutive numbers with the
    same rules are one span."""
    spans: list[tuple[int, list[Rule] | None]] = []
    last_nr, last_rules, last_key = -1, None, None
    for nr in sorted(rules):
        this = rules[nr]
        # one list shared by many numbers (the unconditional ones) is compared once
        key = last_key if this is last_rules else _key(this)
        if nr == last_nr + 1 and key == last_key:
            last_nr, last_rules = nr, this  # the run goes on
            continue
        if nr > last_nr + 1:  # a gap before it
            spans.append((last_nr + 1, None))
        spans.append((nr, this))
        last_nr, last_rules, last_key = nr, this, key
    spans.append((last_nr + 1, None))
    return spans


def _search(out: list[Insn], spans: list[tuple[int, list[Rule] | None]], lo: int, hi: int,
            default: int) -> None:
    """Binary search of spans[lo:hi] (the number in the accumulator is at least
    spans[lo]'s first), appended to `out`."""
    if hi - lo == 1:
        rules = spans[lo][1]
        out.extend([(RET_K, 0, 0, default)] if rules is None else _rules(rules, default))
        return
    middle = (lo + hi) // 2
    # jge true: the next instruction, a long jump over the low half (jt/jf reach 255 only)
    out.append((JMP_JGE_K, 0, 1, spans[middle][0]))
    jump = len(out)
    out.append((JMP_JA, 0, 0, 0))
    _search(out, spans, lo, middle, default)
    out[jump] = (JMP_JA, 0, 0, len(out) - jump - 1)
    _search(out, spans, middle, hi, default)


def _rules(rules: list[Rule], default: int) -> list[Insn]:
    """Rules in order: the first whose conditions all hold gives its action. Argument
    loads overwrite the accumulator, so a leaf ends in returns only."""
    out: list[Insn] = []
    for rule in rules:
        tests = [test for arg in rule.conditions for test in _condition(arg)]
        # a failed comparison skips the rest of the block, its return included
        left = sum(len(test) for test in tests) + 1
        if left > 256:
            raise FilterError("a rule with too many conditions for one jump")
        for test in tests:
            left -= len(test)
            out += test[:-1]
            out.append((JMP_JEQ_K, 0, left, test[-1][3]))
        out.append((RET_K, 0, 0, rule.action))
        if not tests:
            return out  # always taken: no rule after it, nor the default, is reached
    out.append((RET_K, 0, 0, default))
    return out


def _condition(arg: Arg) -> list[list[Insn]]:
    """(args[i] & mask) == value as two 32-bit tests, high word then low word, each a
    load, a mask maybe, a comparison (whose jf the caller sets); a half whose mask is zero
    holds whatever it holds."""
    base = OFFSET_ARGS + 8 * arg.position
    out: list[list[Insn]] = []
    for offset, shift in ((4, 32), (0, 0)):  # little-endian: the high word is at +4
        mask = (arg.mask >> shift) & 0xFFFFFFFF
        if mask == 0:
            continue
        test = [(LD_W_ABS, 0, 0, base + offset)]
        if mask != 0xFFFFFFFF:
            test.append((ALU_AND_K, 0, 0, mask))
        test.append((JMP_JEQ_K, 0, 0, (arg.value >> shift) & mask))
        out.append(test)
    return out


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(prog: list[Insn], flags: int) -> None:
    """seccomp(SECCOMP_SET_MODE_FILTER): the caller has set no_new_privs (or holds
    CAP_SYS_ADMIN). With FLAG_TSYNC a thread that cannot take the filter is named."""
    if len(prog) > 4096:  # BPF_MAXINSNS
        raise FilterError(f"a filter of {len(prog)} instructions (at most 4096)")
    code = b"".join(itertools.starmap(_INSN.pack, prog))
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = _SockFprog(len(prog), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(ctypes.c_long(SYS_SECCOMP), ctypes.c_long(SET_MODE_FILTER),
                          ctypes.c_long(flags), ctypes.byref(fprog))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {os.strerror(err)}")
    if result > 0:  # TSYNC: this thread could not be synchronised
        raise OSError(errno.ESRCH, f"seccomp: thread {result} cannot take the filter")
