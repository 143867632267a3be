"""The kernel's error type: a Linux errno that goes back to the guest as -errno."""

import errno as _errno


class SyscallError(Exception):
    """Raised anywhere under a syscall handler; the dispatcher returns -errno to the guest."""

    __slots__ = ("errno",)

    def __init__(self, err: int) -> None:
        super().__init__(_errno.errorcode.get(err, str(err)))
        self.errno = err


def errno_name(err: int) -> str:
    return _errno.errorcode.get(err, f"E{err}")
