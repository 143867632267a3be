"""What the kernel may do with guest memory.

The kernel never sees a host pointer: every access goes through this interface, which
bounds-checks guest addresses and raises SyscallError(EFAULT) for anything outside the
guest's user range. A platform (KVM today, an emulator later) provides the implementation.
"""

from __future__ import annotations

import errno

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from karn.kernel.mm import AddressSpace


class GuestMemory(Protocol):
    def read(self, addr: int, size: int) -> bytes: ...

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None: ...

    def view(self, addr: int, size: int) -> memoryview:
        """A writable view of guest memory (zero-copy reads into the guest)."""
        ...

    def read_cstring(self, addr: int, limit: int = 4096) -> bytes:
        """Bytes up to (not including) NUL; ENAMETOOLONG if none within limit."""
        ...

    def read_u64(self, addr: int) -> int: ...

    def write_u64(self, addr: int, value: int) -> None: ...

    def read_u32(self, addr: int) -> int: ...

    def write_u32(self, addr: int, value: int) -> None: ...

    def zero(self, addr: int, size: int) -> None: ...


class MappedMemory:
    """Guest memory as the guest's own pointers may reach it: EFAULT unless the range is
    mapped and accessible (not PROT_NONE), as Linux's copy_to/from_user. Without it a
    buffer pointer into unmapped memory would make the monitor write there: pages the
    memory limit never charged, and the "outside every mapping is zero" invariant broken.
    Write protection is not checked (a debugger's breakpoints go through here too)."""

    __slots__ = ("_mem", "_mm")

    def __init__(self, mem: GuestMemory, mm: AddressSpace) -> None:
        self._mem = mem
        self._mm = mm

    def _check(self, addr: int, size: int) -> None:
        if size > 0 and not self._mm.is_accessible(addr, addr + size):
            raise SyscallError(errno.EFAULT)

    def read(self, addr: int, size: int) -> bytes:
        self._check(addr, size)
        return self._mem.read(addr, size)

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        self._check(addr, len(data))
        self._mem.write(addr, data)

    def view(self, addr: int, size: int) -> memoryview:
        """As Linux copies up to the first fault: a buffer that runs into unmapped memory
        gives its accessible start (a short read or write), EFAULT if there is none."""
        if size > 0:
            size = self._mm.accessible_prefix(addr, addr + size)
            if size == 0:
                raise SyscallError(errno.EFAULT)
        return self._mem.view(addr, size)

    def read_cstring(self, addr: int, limit: int = 4096) -> bytes:
        self._check(addr, 1)
        data = self._mem.read_cstring(addr, limit)
        self._check(addr, len(data) + 1)  # the string and its NUL
        return data

    def read_u64(self, addr: int) -> int:
        self._check(addr, 8)
        return self._mem.read_u64(addr)

    def write_u64(self, addr: int, value: int) -> None:
        self._check(addr, 8)
        self._mem.write_u64(addr, value)

    def read_u32(self, addr: int) -> int:
        self._check(addr, 4)
        return self._mem.read_u32(addr)

    def write_u32(self, addr: int, value: int) -> None:
        self._check(addr, 4)
        self._mem.write_u32(addr, value)

    def zero(self, addr: int, size: int) -> None:
        self._check(addr, size)
        self._mem.zero(addr, size)
