"""memfd_create: anonymous tmpfs files, sealable (fcntl F_ADD_SEALS, tmpfs.py)."""

from __future__ import annotations

import errno

from karn.abi.errno import SyscallError
from karn.abi.registers import u32
from karn.hints import TYPE_CHECKING, Any
from karn.kernel.fs.constants import O_OPEN_ONLY, OFlag
from karn.kernel.fs.file import OpenFile
from karn.kernel.fs.tmpfs import F_SEAL_EXEC, Node, TmpFile, TmpFs

if TYPE_CHECKING:
    from karn.kernel.process import Task

MFD_CLOEXEC, MFD_ALLOW_SEALING, MFD_HUGETLB = 0x1, 0x2, 0x4
MFD_NOEXEC_SEAL, MFD_EXEC = 0x8, 0x10
MFD_NAME_MAX = 249  # NAME_MAX minus "memfd:"


class _Opens:
    """How many open descriptions an anonymous file has: its data goes with the last."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 1


class MemFdFile(TmpFile):
    def __init__(self, fs: TmpFs, node: Node, path: str, flags: int, opens: _Opens) -> None:
        super().__init__(fs, node, path, flags)
        self.opens = opens

    def reopen(self, flags: int) -> OpenFile:
        self.opens.count += 1
        return MemFdFile(self.fs, self.node, self.path, flags & ~O_OPEN_ONLY, self.opens)

    def close(self) -> None:
        self.opens.count -= 1
        if self.opens.count == 0:
            self.fs.forget(self.node)


def memfd_fs(process: Any) -> TmpFs:
    """The process's filesystem of anonymous files (made on first use), bounded by its
    memory limit like the data of any tmpfs."""
    fs = getattr(process, "memfds", None)
    if fs is None:
        fs = TmpFs(process.config.memory_limit, account=process.mm.account)
        process.memfds = fs
    return fs


def sys_memfd_create(task: Task, name_ptr: int, flags: int) -> int:
    flags = u32(flags)
    if flags & ~(MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL | MFD_EXEC):
        raise SyscallError(errno.EINVAL)  # MFD_HUGETLB too: no huge pages here
    if flags & MFD_NOEXEC_SEAL and flags & MFD_EXEC:
        raise SyscallError(errno.EINVAL)
    try:
        name = task.mem.read_cstring(name_ptr, MFD_NAME_MAX + 1)
    except SyscallError as err:
        raise SyscallError(errno.EINVAL if err.errno == errno.ENAMETOOLONG else err.errno) from None
    fs = memfd_fs(task.process)
    noexec = bool(flags & MFD_NOEXEC_SEAL)
    node = fs.anonymous(0o666 if noexec else 0o777)
    if noexec:
        node.seals = F_SEAL_EXEC  # and sealable, as MFD_ALLOW_SEALING
    elif flags & MFD_ALLOW_SEALING:
        node.seals = 0  # else born with F_SEAL_SEAL, as any tmpfs file
    path = f"/memfd:{name.decode(errors='surrogateescape')} (deleted)"
    file = MemFdFile(fs, node, path, OFlag.RDWR, _Opens())
    try:
        return task.process.fds.install(file, cloexec=bool(flags & MFD_CLOEXEC))
    except SyscallError:
        file.close()
        raise


HANDLERS = {"memfd_create": sys_memfd_create}
NOTES = {
    "memfd_create": "No MFD_HUGETLB (EINVAL). Shared mappings are copies written back on "
    "msync and munmap, as for any file (see mmap).",
}
