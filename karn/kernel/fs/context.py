"""A process's view of the filesystem: mounts, current directory, umask.

This is what the loader and the syscall handlers use; it turns guest paths into open
files and metadata, applying Linux's open(2) rules on top of the VFS.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from karn.abi.errno import SyscallError
from karn.kernel.fs.constants import DT_DIR, O_ACCMODE, S_IFDIR, S_IFLNK, S_IFMT, OFlag
from karn.kernel.fs.devfs import DevFs
from karn.kernel.fs.file import DirEntry, DirListFile, OpenFile
from karn.kernel.fs.filesystem import Filesystem
from karn.kernel.fs.hostfs import HostDirFs
from karn.kernel.fs.procfs import ProcFs
from karn.kernel.fs.sharedtmp import SharedTmpDir, share_tmpfs
from karn.kernel.fs.stat import Stat
from karn.kernel.fs.tmpfs import MAX_FILE_SIZE, TmpFs
from karn.kernel.fs.vfs import Comps, Resolved, Vfs, join_path, split_path

if TYPE_CHECKING:
    from karn.kernel.fs.fdtable import FdTable
    from karn.kernel.mm import MemoryAccount
    from karn.kernel.process import Process

READ_FILE_LIMIT = 1 << 30  # the loader reads whole ELF files; refuse absurd ones


class FsContext:
    def __init__(self, vfs: Vfs, proc: ProcFs | None = None) -> None:
        self.vfs = vfs
        self.proc = proc
        self.cwd = "/"
        self.cwd_comps: Comps = ()
        self.umask = 0o022
        # the host directory the tmpfs mounts move to at the first fork (sharedtmp.py)
        self.shared_tmp = SharedTmpDir()

    def share_tmpfs(self, fds: FdTable) -> None:
        """Before a fork: tmpfs mounts become host directories every process shares."""
        share_tmpfs(self.vfs, fds, self.shared_tmp)

    def close(self) -> None:
        """The run has ended: the shared tmpfs directory goes."""
        self.shared_tmp.remove()

    @classmethod
    def build(
        cls,
        root: Filesystem,
        volumes: Iterable[tuple[str, str, bool]] = (),
        tmp_size: int = 256 << 20,
        ports: list | None = None,
        memory: MemoryAccount | None = None,
        max_file_size: int | None = None,
        tmpfs: Iterable[str] = (),
    ) -> FsContext:
        """Mount root at /, tmpfs at /tmp and /dev/shm, devfs at /dev, procfs at /proc,
        a partition's ports at /dev/ports (PortSpecs, docs/systems.md), then each volume
        (host_dir or host_file, guest_path, readonly), then a tmpfs at each `tmpfs` guest
        path; mount points need not exist. A volume at /tmp or /dev/shm takes the tmpfs's
        place (docker's -v /tmp:/tmp)."""
        from karn.kernel.fs.hostfile import HostFileFs

        vfs = Vfs(root)
        proc = ProcFs()
        # File data in a tmpfs is guest memory: it is charged to the memory limit too.
        largest = max_file_size or MAX_FILE_SIZE
        volumes = list(volumes)
        targets = {tuple(split_path(guest)) for _, guest, _ in volumes}
        for path in ("/tmp", "/dev/shm"):
            if tuple(split_path(path)) not in targets:
                vfs.mount(path, TmpFs(tmp_size, account=memory, max_file_size=largest))
        vfs.mount("/dev", DevFs())
        vfs.mount("/proc", proc)
        if ports:
            from karn.kernel.fs.ports import PortsFs

            vfs.mount("/dev/ports", PortsFs(ports))
        for host, guest, readonly in volumes:
            if not guest.startswith("/") or ".." in split_path(guest):
                raise ValueError(f"volume mount point must be an absolute path: {guest}")
            if os.path.isdir(host):
                vfs.mount(guest, HostDirFs(host, readonly))
            else:
                vfs.mount(guest, HostFileFs(host, readonly))
        for guest in tmpfs:
            vfs.mount(guest, TmpFs(tmp_size, account=memory, max_file_size=largest))
        return cls(vfs, proc)

    def bind_process(self, process: Process) -> None:
        """Give /proc its process: the Process does, as it is made (after its filesystem)."""
        if self.proc is not None:
            self.proc.bind(process)

    # -- lookups -----------------------------------------------------------------------
    def resolve(self, path: str, base: Comps | None = None, follow: bool = True) -> Resolved:
        return self.vfs.resolve(path, self.cwd_comps if base is None else base, follow)

    def stat(self, path: str, follow: bool = True, base: Comps | None = None) -> Stat:
        return self.resolve(path, base, follow).require()

    def open(self, path: str, flags: int, mode: int = 0o666, base: Comps | None = None) -> OpenFile:
        """open(2) semantics; mode is the guest's requested mode, umask applied here."""
        creat, excl = flags & OFlag.CREAT, flags & OFlag.EXCL
        if flags & OFlag.TMPFILE == OFlag.TMPFILE:
            raise SyscallError(errno.EOPNOTSUPP)
        r = self.resolve(path, base, follow=not (flags & OFlag.NOFOLLOW or (creat and excl)))
        if r.magic is not None:
            if creat and excl:
                raise SyscallError(errno.EEXIST)
            if flags & OFlag.DIRECTORY and not r.magic.is_dir:
                raise SyscallError(errno.ENOTDIR)
            return r.magic.reopen(flags)
        if r.stat is None:
            if not creat:
                raise SyscallError(errno.ENOENT)
            if r.trailing_slash:
                raise SyscallError(errno.EISDIR)
            return r.fs.open(r.rel, flags, mode & ~self.umask & 0o7777, r.path)
        fmt = r.stat.mode & S_IFMT
        if creat and excl:
            raise SyscallError(errno.EEXIST)
        if fmt == S_IFLNK:
            raise SyscallError(errno.ELOOP)
        if fmt == S_IFDIR and ((flags & O_ACCMODE) != OFlag.RDONLY or creat):
            raise SyscallError(errno.EISDIR)
        if flags & OFlag.DIRECTORY and fmt != S_IFDIR:
            raise SyscallError(errno.ENOTDIR)
        if r.virtual:
            return DirListFile(r.path, flags & ~int(OFlag.CLOEXEC), [], r.stat)
        return r.fs.open(r.rel, flags & ~int(OFlag.CREAT | OFlag.EXCL), 0, r.path)

    def read_file(self, path: str, base: Comps | None = None) -> bytes:
        """A whole file, following symlinks (the loader: the program, PT_INTERP)."""
        f = self.open(path, OFlag.RDONLY)
        try:
            st = f.stat()
            if st.mode & S_IFMT == S_IFDIR:
                raise SyscallError(errno.EISDIR)
            if st.size > READ_FILE_LIMIT:
                raise SyscallError(errno.EFBIG)
            buf = bytearray(st.size)
            view = memoryview(buf)
            got = 0
            while got < len(buf):
                n = f.pread_into(view[got:], got)
                if n == 0:
                    break
                got += n
            return bytes(buf[:got])
        finally:
            f.close()

    def dir_entries(self, file: OpenFile) -> list[DirEntry]:
        """getdents' view: ".", "..", the directory's entries and mount points below it."""
        entries = file.list_dir()
        comps = tuple(split_path(file.path))
        names = {e.name for e in entries}
        ino = file.stat().ino
        extra = [
            DirEntry(n, hash(comps + (n,)) & 0xFFFFFFFF, DT_DIR)
            for n in sorted(self.vfs.mount_children(comps))
            if n not in names
        ]
        return [DirEntry(".", ino, DT_DIR), DirEntry("..", ino, DT_DIR), *entries, *extra]

    def chdir(self, path: str, base: Comps | None = None) -> None:
        r = self.resolve(path, base)
        self.set_cwd(r)

    def set_cwd(self, r: Resolved) -> None:
        if r.require().mode & S_IFMT != S_IFDIR:
            raise SyscallError(errno.ENOTDIR)
        self.cwd_comps = r.comps
        self.cwd = join_path(r.comps)
