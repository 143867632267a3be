"""What the kernel may do with guest memory.

The kernel never sees a host pointer: every access goes through this interface, which
bounds-checks guest addresses and raises SyscallError(EFAULT) for anything outside the
guest's user range. A platform (KVM today, an emulator later) provides the implementation.
"""

from typing import Protocol


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
