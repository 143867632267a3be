"""Raw 64-bit syscall argument registers read as the C types the syscall ABI passes."""

MASK64 = (1 << 64) - 1


def s32(value: int) -> int:
    """The low 32 bits as a signed int (fds, flags, pids are C ints)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def s64(value: int) -> int:
    value &= MASK64
    return value - (1 << 64) if value & (1 << 63) else value


def u32(value: int) -> int:
    return value & 0xFFFFFFFF
