"""The initial process stack: argc, argv, envp, auxv and the strings they point to."""

from __future__ import annotations

import os
import struct

from karn.kernel.guestmem import GuestMemory

AT_NULL = 0
AT_PHDR = 3
AT_PHENT = 4
AT_PHNUM = 5
AT_PAGESZ = 6
AT_BASE = 7
AT_FLAGS = 8
AT_ENTRY = 9
AT_UID = 11
AT_EUID = 12
AT_GID = 13
AT_EGID = 14
AT_PLATFORM = 15
AT_HWCAP = 16
AT_CLKTCK = 17
AT_SECURE = 23
AT_RANDOM = 25
AT_HWCAP2 = 26
AT_EXECFN = 31
AT_SYSINFO_EHDR = 33
AT_MINSIGSTKSZ = 51

PLATFORM = b"x86_64"


class StartInfo:
    """What the start-up stack tells the program (a plain class: a NamedTuple this size
    costs ~0.2 ms of every start-up to create)."""

    __slots__ = ("argv", "envp", "execfn", "phdr", "phent", "phnum", "entry", "interp_base",
                 "hwcap", "hwcap2", "minsigstksz", "vdso", "uid", "gid")

    def __init__(self, *, argv: list[bytes], envp: list[bytes], execfn: bytes, phdr: int,
                 phent: int, phnum: int, entry: int, interp_base: int, hwcap: int,
                 hwcap2: int, minsigstksz: int, vdso: int = 0, uid: int = 0,
                 gid: int = 0) -> None:
        self.argv, self.envp, self.execfn = argv, envp, execfn
        self.phdr, self.phent, self.phnum = phdr, phent, phnum
        self.entry = entry  # the program's entry (AT_ENTRY), not the interpreter's
        self.interp_base = interp_base  # AT_BASE: 0 for static programs
        self.hwcap, self.hwcap2, self.minsigstksz = hwcap, hwcap2, minsigstksz
        self.vdso = vdso  # AT_SYSINFO_EHDR: the vDSO's address; 0: none (left out of auxv)
        self.uid, self.gid = uid, gid


def build_stack(mem: GuestMemory, top: int, info: StartInfo) -> int:
    """Write the System V x86-64 start-up stack below `top`; returns the initial RSP."""
    pos = top - 8  # a zero word at the very top, as Linux leaves

    def push_bytes(data: bytes) -> int:
        nonlocal pos
        pos -= len(data)
        mem.write(pos, data)
        return pos

    execfn = push_bytes(info.execfn + b"\0")
    envp = [push_bytes(e + b"\0") for e in info.envp]
    argv = [push_bytes(a + b"\0") for a in info.argv]
    platform = push_bytes(PLATFORM + b"\0")
    random = push_bytes(os.urandom(16))
    auxv = [
        *([(AT_SYSINFO_EHDR, info.vdso)] if info.vdso else []),
        (AT_PHDR, info.phdr),
        (AT_PHENT, info.phent),
        (AT_PHNUM, info.phnum),
        (AT_PAGESZ, 4096),
        (AT_BASE, info.interp_base),
        (AT_FLAGS, 0),
        (AT_ENTRY, info.entry),
        (AT_UID, info.uid),
        (AT_EUID, info.uid),
        (AT_GID, info.gid),
        (AT_EGID, info.gid),
        (AT_SECURE, 0),
        (AT_HWCAP, info.hwcap),
        (AT_HWCAP2, info.hwcap2),
        (AT_CLKTCK, 100),
        (AT_RANDOM, random),
        (AT_PLATFORM, platform),
        (AT_EXECFN, execfn),
        (AT_MINSIGSTKSZ, info.minsigstksz),
        (AT_NULL, 0),
    ]
    words = [len(argv), *argv, 0, *envp, 0]
    for key, value in auxv:
        words += (key, value)
    sp = (pos - len(words) * 8) & ~0xF
    mem.write(sp, struct.pack(f"<{len(words)}Q", *words))
    return sp
