"""Guest memory: one anonymous host mapping, bounds-checked access at guest addresses."""

from __future__ import annotations

import ctypes
import errno
import mmap
import struct

from karn.abi.errno import SyscallError

PAGE = mmap.PAGESIZE
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class HostGuestMemory:
    """Guest physical memory [0, size) backed by MAP_NORESERVE host memory.

    Guest virtual == guest physical (see layout.py), so a guest address is an offset here.
    `user_start`/`user_end` bound what guest-supplied pointers may reach; the monitor itself
    uses `raw` to build system structures outside that range.
    """

    def __init__(self, size: int, user_start: int, user_end: int) -> None:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0x4000)
        self._map = mmap.mmap(-1, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.raw = memoryview(self._map)
        self.size = size
        self.host_address = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self.user_start = user_start
        self.user_end = user_end

    def _check(self, addr: int, size: int) -> None:
        if size < 0 or addr < self.user_start or addr + size > self.user_end:
            raise SyscallError(errno.EFAULT)

    def read(self, addr: int, size: int) -> bytes:
        self._check(addr, size)
        return self.raw[addr : addr + size].tobytes()

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        self._check(addr, size)
        self.raw[addr : addr + size] = data

    def view(self, addr: int, size: int) -> memoryview:
        self._check(addr, size)
        return self.raw[addr : addr + size]

    def read_cstring(self, addr: int, limit: int = 4096) -> bytes:
        self._check(addr, 1)
        end = min(addr + limit, self.user_end)
        nul = self._map.find(b"\0", addr, end)
        if nul < 0:
            if end < addr + limit:
                raise SyscallError(errno.EFAULT)
            raise SyscallError(errno.ENAMETOOLONG)
        return self._map[addr:nul]

    def read_u64(self, addr: int) -> int:
        self._check(addr, 8)
        return _U64.unpack_from(self._map, addr)[0]

    def write_u64(self, addr: int, value: int) -> None:
        self._check(addr, 8)
        _U64.pack_into(self._map, addr, value & 0xFFFFFFFFFFFFFFFF)

    def read_u32(self, addr: int) -> int:
        self._check(addr, 4)
        return _U32.unpack_from(self._map, addr)[0]

    def write_u32(self, addr: int, value: int) -> None:
        self._check(addr, 4)
        _U32.pack_into(self._map, addr, value & 0xFFFFFFFF)

    def zero(self, addr: int, size: int) -> None:
        self._check(addr, size)
        self.raw[addr : addr + size] = bytes(size)

    def discard(self, addr: int, size: int) -> None:
        """Give the host pages of a page-aligned range back; the guest then reads zeros."""
        self._check(addr, size)
        if size:
            self._map.madvise(mmap.MADV_DONTNEED, addr, size)

    def resident_bytes(self) -> int:
        """Host pages of guest memory in RAM now (mincore over the whole mapping)."""
        libc = ctypes.CDLL(None, use_errno=True)
        vec = ctypes.create_string_buffer(self.size // PAGE)
        if libc.mincore(ctypes.c_void_p(self.host_address), ctypes.c_size_t(self.size), vec):
            return 0
        raw = vec.raw  # one byte per page: bit 0 set when resident, other bits reserved (0)
        return (len(raw) - raw.count(0)) * PAGE
