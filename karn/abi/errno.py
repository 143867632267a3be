"""Linux error numbers and the error a syscall returns to the guest as -errno.

The values themselves are Python's errno module: on the Linux x86-64 host karn runs on it
comes from the same headers a guest was built against (tests/test_abi.py checks that
against C). What Python cannot know is kept here: the kernel-internal numbers.
"""

import errno as _errno

# Kernel-internal (include/linux/errno.h): a blocking call interrupted by a signal; it
# becomes EINTR or a restart before the guest sees it.
ERESTARTSYS = 512

_INTERNAL_NAMES = {ERESTARTSYS: "ERESTARTSYS"}


class SyscallError(Exception):
    """Raised anywhere under a syscall handler (also by guest-memory access in platform/);
    the dispatcher returns -errno to the guest."""

    __slots__ = ("errno",)

    def __init__(self, err: int) -> None:
        super().__init__(_errno.errorcode.get(err, str(err)))
        self.errno = err


def errno_name(err: int) -> str:
    return _errno.errorcode.get(err) or _INTERNAL_NAMES.get(err, f"E{err}")
