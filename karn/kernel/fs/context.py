"""A process's view of the filesystem: mounts, current directory, umask.

This is what the loader and the syscall handlers use; it turns guest paths into open
files and metadata, applying Linux's open(2) rules on top of the VFS.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterable

from karn.abi.errno import SyscallError
from karn.errors import UsageError
from karn.hints import TYPE_CHECKING
from karn.kernel import fdspare
from karn.kernel.fs.constants import DT_DIR, O_ACCMODE, S_IFDIR, S_IFLNK, S_IFMT, OFlag
from karn.kernel.fs.file import WHOLE_FILE_LIMIT, DirEntry, DirListFile, OpenFile, read_whole
from karn.kernel.fs.filesystem import Filesystem
from karn.kernel.fs.hostfs import HostDirFs
from karn.kernel.fs.procfs import ProcFs
from karn.kernel.fs.stat import Stat
from karn.kernel.fs.tmpdir import SharedTmpDir
from karn.kernel.fs.tmpfs import MAX_FILE_SIZE, TmpFs
from karn.kernel.fs.vfs import Comps, Resolved, Vfs, join_path, split_path

if TYPE_CHECKING:
    from karn.kernel.fs.fdtable import FdTable
    from karn.kernel.fs.sharedtmp import Shared
    from karn.kernel.fs.tmpfs import Node
    from karn.kernel.mm import MemoryAccount
    from karn.kernel.process import Process



class HostSeed:
    """What the run's tmpfs mounts start with, copied from the host as the filesystem is
    built (before the monitor is confined): a program collected from the host's /tmp
    keeps its path there, an image keeps the files of its /tmp. Guest path -> a host
    regular file, a symlink's target, a directory's mode. The copies are the guest's:
    charged to the tmpfs size and the memory limit like files it writes, and changed or
    removed without touching the host."""

    __slots__ = ("files", "symlinks", "dirs")

    def __init__(self, files: dict[str, str] | None = None,
                 symlinks: dict[str, str] | None = None,
                 dirs: dict[str, int] | None = None) -> None:
        self.files = files or {}
        self.symlinks = symlinks or {}
        self.dirs = dirs or {}

    def __bool__(self) -> bool:
        return bool(self.files or self.symlinks or self.dirs)

    @classmethod
    def from_tree(cls, host_root: str, guest_dirs: Iterable[str]) -> HostSeed:
        """What lies below each of guest_dirs in a root directory on the host (an
        image's): symlinks are not followed; sockets, FIFOs and devices are left out."""
        seed = cls()
        real_root = os.path.realpath(host_root)
        for guest in guest_dirs:
            top = os.path.join(real_root, guest.strip("/"))
            if os.path.realpath(top) != top or not os.path.isdir(top):
                continue  # (a symlink on the way: the guest's mount is there instead)
            pending = [(top, guest.rstrip("/"))]
            while pending:  # no recursion: an image's tree may be nested deep
                host_dir, guest_dir = pending.pop()
                with os.scandir(host_dir) as entries:
                    for entry in entries:
                        st = entry.stat(follow_symlinks=False)
                        path = f"{guest_dir}/{entry.name}"
                        if stat.S_ISLNK(st.st_mode):
                            seed.symlinks[path] = os.readlink(entry.path)
                        elif stat.S_ISDIR(st.st_mode):
                            seed.dirs[path] = stat.S_IMODE(st.st_mode)
                            pending.append((entry.path, path))
                        elif stat.S_ISREG(st.st_mode):
                            seed.files[path] = entry.path
        return seed

    def apply(self, vfs: Vfs) -> None:
        """Copy each entry into the tmpfs mounted where it lies (parents first); one
        that another mount (a volume) covers is left out, as that mount shows instead."""
        entries: list[tuple[str, int, bytes | str | None]] = [
            *((g, mode, None) for g, mode in self.dirs.items()),
            *((g, 0o777, target) for g, target in self.symlinks.items()),
            *((g, 0, b"") for g in self.files),
        ]
        for guest, mode, content in sorted(entries, key=lambda e: split_path(e[0])):
            fs, rel = vfs.locate(tuple(split_path(guest)))
            if not isinstance(fs, TmpFs) or not rel:
                continue
            try:
                if guest in self.files:
                    content, mode = _read_host(self.files[guest])
                fs.seed(rel, mode, content)
            except OSError as err:
                raise UsageError(f"{guest}: {self.files.get(guest, '')}: {err.strerror}"
                                 ) from None
            except SyscallError as err:
                why = " (it counts against --tmpfs-size and --memory)" if err.errno in (
                    errno.ENOSPC, errno.EFBIG) else ""
                raise UsageError(f"{guest}: cannot be copied into the guest's tmpfs: "
                                 f"{os.strerror(err.errno)}{why}") from None


def _read_host(path: str) -> tuple[bytes, int]:
    """A host regular file's bytes and permission bits (ENOENT, EISDIR... as OSError)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > WHOLE_FILE_LIMIT:
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks), stat.S_IMODE(st.st_mode)
    finally:
        os.close(fd)


def _devfs() -> Filesystem:
    devfs = fdspare.import_module("karn.kernel.fs.devfs")  # the guest may hold every fd
    return devfs.DevFs()


# What the filesystem imports on first use (deferred mounts, /proc/sys): all of it is
# imported before an os.fork made while other threads run, as syscalls.py does for the
# syscall areas (a thread halfway through an import at the fork would leave the child
# waiting forever for that module's lock).
IMPORTED_ON_FIRST_USE = ("karn.kernel.fs.devfs", "karn.kernel.fs.procsys")


def _import_before_fork() -> None:
    if threading.active_count() > 1:
        for name in IMPORTED_ON_FIRST_USE:
            __import__(name)


os.register_at_fork(before=_import_before_fork)


class FsContext:
    def __init__(self, vfs: Vfs, proc: ProcFs | None = None) -> None:
        self.vfs = vfs
        self.proc = proc
        self.cwd = "/"
        self.cwd_comps: Comps = ()
        self.umask = 0o022
        # the host directory the tmpfs mounts move to at the first fork (sharedtmp.py)
        self.shared_tmp = SharedTmpDir()

    def share_tmpfs(self, fds: FdTable, mapped: dict[str, list[Node]] | None = None
                    ) -> Shared:
        """Before a fork: tmpfs mounts become host directories every process shares
        (kernel/fs/sharedtmp.py share_tmpfs)."""
        from karn.kernel.fs.sharedtmp import share_tmpfs  # only a run that forks

        return share_tmpfs(self.vfs, fds, self.shared_tmp, mapped)

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
        seed: HostSeed | None = None,
    ) -> FsContext:
        """Mount root at /, tmpfs at /tmp and /dev/shm, devfs at /dev (made on the first
        lookup there), procfs at /proc, a partition's ports at /dev/ports (PortSpecs,
        docs/systems.md), then each volume (host_dir or host_file, guest_path, readonly),
        then a tmpfs at each `tmpfs` guest path; mount points need not exist. A volume at
        /tmp or /dev/shm takes the tmpfs's place (docker's -v /tmp:/tmp). Last, the tmpfs
        mounts get `seed`'s files."""
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
        vfs.mount_deferred("/dev", _devfs)
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
        if seed:
            seed.apply(vfs)
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
        if not flags & (OFlag.CREAT | OFlag.PATH):
            file = self.vfs.open_whole(path, self.cwd_comps if base is None else base, flags)
            if file is not None:
                return file
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

    def open_readable(self, path: str) -> OpenFile:
        """A file opened for reading, symlinks followed (the loader's program and
        PT_INTERP)."""
        return self.open(path, OFlag.RDONLY)

    def read_file(self, path: str, base: Comps | None = None) -> bytearray:
        """A whole file, following symlinks."""
        f = self.open(path, OFlag.RDONLY)
        try:
            return read_whole(f)
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
