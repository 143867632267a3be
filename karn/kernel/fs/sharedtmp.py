"""tmpfs mounts shared by every process of a unikernel (docs/design/processes.md, 6.1).

A single-process run keeps its tmpfs mounts in monitor memory (tmpfs.py: the size cap,
the memory account, chown and xattrs as the guest set them). At the first fork, before
the host fork, each in-memory tmpfs is copied into its own subdirectory of the run's
private host directory and remounted there as a SharedTmpFs, a host directory every
later monitor inherits: a file cc1 writes to /tmp is the file `as` reads, in another VM.
Open descriptions of the copied files become host fds at their old offsets.

The directory (kernel/fs/tmpdir.py) is made before the monitor is confined; this module
is loaded only when a run forks.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator

from karn import log
from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING, NamedTuple
from karn.kernel.fs.constants import (
    O_ACCMODE,
    RENAME_EXCHANGE,
    S_IFDIR,
    S_IFIFO,
    S_IFLNK,
    S_IFMT,
    S_IFREG,
    S_IFSOCK,
    ST_VALID,
    TMPFS_MAGIC,
    OFlag,
)
from karn.kernel.fs.file import Buffer, HostFile, OpenFile, host_error
from karn.kernel.fs.filesystem import Rel
from karn.kernel.fs.hostfs import HostDirFs, openat2
from karn.kernel.fs.stat import Stat, StatFs
from karn.kernel.fs.tmpdir import SharedTmpDir
from karn.kernel.fs.tmpfs import ENTRY_COST, Node, TmpFile, TmpFs
from karn.kernel.fs.xattr import HostStore, XattrStore
from karn.kernel.hosttmp import private_dir, private_file

if TYPE_CHECKING:
    from karn.kernel.fs.fdtable import FdTable
    from karn.kernel.fs.vfs import Vfs
    from karn.kernel.process import Task

OWNER_XATTR = "user.karn.owner"  # a guest chown's uid:gid, on the host file
KARN_XATTRS = "user.karn."  # karn's own names on the host file, none the guest's
# The guest's trusted.* and security.* attributes, which the host keeps from a monitor
# without CAP_SYS_ADMIN, are kept under karn's names (user.karn.trusted.NAME).
_PRIVILEGED = ("trusted.", "security.")


def host_xattr(name: str) -> str:
    """The host file's name for a guest attribute."""
    return KARN_XATTRS + name if name.startswith(_PRIVILEGED) else name
_COUNTERS = struct.Struct("qqq")  # bytes, names, whether any owner was recorded


class _FdStore(HostStore):
    """Extended attributes through a readable fd rather than /proc/self/fd, which
    Landlock allows for the first monitor's pid only (a forked monitor has another);
    karn's record of the owner is not the guest's to see or change."""

    def __init__(self, fs: SharedTmpFs, name: str) -> None:
        super().__init__(lambda: 0, readonly=False)
        self.fs, self.name = fs, name

    def _call(self, op):  # noqa: ANN001, ANN202 - HostStore's adaptor, typed there
        fd = openat2(self.fs.root_fd, self.name, os.O_RDONLY | os.O_NONBLOCK)
        try:
            return op(fd)
        except OSError as err:
            raise host_error(err) from None
        finally:
            os.close(fd)

    def get(self, name: str) -> bytes:
        if name.startswith(KARN_XATTRS):
            raise SyscallError(errno.ENODATA)
        return super().get(host_xattr(name))

    def names(self) -> list[str]:
        shown = []
        for name in super().names():
            if name.startswith(KARN_XATTRS):
                if name[len(KARN_XATTRS):].startswith(_PRIVILEGED):
                    shown.append(name[len(KARN_XATTRS):])
            elif not name.startswith(_PRIVILEGED):  # (the host's own, security.selinux)
                shown.append(name)
        return shown

    def set(self, name: str, value: bytes, flags: int) -> None:
        if name.startswith(KARN_XATTRS):
            raise SyscallError(errno.EPERM)
        super().set(host_xattr(name), value, flags)

    def remove(self, name: str) -> None:
        if name.startswith(KARN_XATTRS):
            raise SyscallError(errno.EPERM)
        super().remove(host_xattr(name))


class _SymlinkStore(XattrStore):
    """A symlink's attributes, as a tmpfs has them for a user: none, and user.* ones
    refused (no fd can be opened on a symlink to reach the host's)."""

    def set(self, name: str, value: bytes, flags: int) -> None:
        raise SyscallError(errno.EPERM)

    def remove(self, name: str) -> None:
        raise SyscallError(errno.EPERM)


class Usage:
    """Bytes and names in one shared tmpfs, counted by every monitor of the run: two
    counters in memory shared across forks, changed under a POSIX record lock on a file
    of the run's directory (one process at a time) and a thread lock (one thread)."""

    def __init__(self, lock_path: str, size_limit: int, max_entries: int, used: int,
                 entries: int, owned: bool) -> None:
        self.size_limit, self.max_entries = size_limit, max_entries
        self._counters = mmap.mmap(-1, _COUNTERS.size, flags=mmap.MAP_SHARED)
        _COUNTERS.pack_into(self._counters, 0, used, entries, owned)
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._thread_lock = threading.Lock()
        # a fork while another thread held it: the child's copy would stay held
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._thread_lock = threading.Lock()

    def counts(self) -> tuple[int, int]:
        used, entries, _ = _COUNTERS.unpack_from(self._counters, 0)
        return used, entries

    @property
    def owned(self) -> bool:
        """Whether a guest chown was ever recorded on this mount (if not, no file's
        owner needs reading)."""
        return bool(_COUNTERS.unpack_from(self._counters, 0)[2])

    def set_owned(self) -> None:
        struct.pack_into("q", self._counters, 2 * 8, 1)

    def charge(self, delta: int, entries: int = 0) -> None:
        """Take (ENOSPC past the size or the names' cap) or give back."""
        with self._thread_lock:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_EX)
            try:
                used, names, owned = _COUNTERS.unpack_from(self._counters, 0)
                if (delta > 0 and used + delta > self.size_limit) or (
                        entries > 0 and names + entries > self.max_entries):
                    raise SyscallError(errno.ENOSPC)
                _COUNTERS.pack_into(self._counters, 0, max(0, used + delta),
                                    max(0, names + entries), owned)
            finally:
                fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)


class SharedTmpFile(HostFile):
    """A regular file of a shared tmpfs: growth is charged to the mount's Usage before
    the host write, what was not written given back."""

    fs: SharedTmpFs

    @property
    def usage(self) -> Usage:
        return self.fs.usage

    def stat(self) -> Stat:
        return self.fs.as_tmpfs(super().stat(), self.fd)

    def _charged(self, end: int, write: Callable[[], int]) -> int:
        before = os.fstat(self.fd).st_size
        grow = max(0, end - before)
        if grow:
            self.usage.charge(grow)
        try:
            n = write()
        except BaseException:
            if grow:
                self.usage.charge(-grow)
            raise
        if grow:
            self.usage.charge(max(0, end - before) - max(0, os.fstat(self.fd).st_size - before))
        return n

    def _end(self, count: int) -> int:
        if self.flags & OFlag.APPEND:
            return os.fstat(self.fd).st_size + count
        return os.lseek(self.fd, 0, os.SEEK_CUR) + count

    def write(self, task: Task, data: Buffer) -> int:
        return self._charged(self._end(len(data)), lambda: super(SharedTmpFile, self).write(
            task, data))

    def writev(self, task: Task, bufs: list[memoryview]) -> int:
        return self._charged(self._end(sum(len(b) for b in bufs)),
                             lambda: super(SharedTmpFile, self).writev(task, bufs))

    def pwrite(self, data: Buffer, offset: int) -> int:
        return self._charged(offset + len(data),
                             lambda: super(SharedTmpFile, self).pwrite(data, offset))

    def pwritev(self, bufs: list[memoryview], offset: int) -> int:
        return self._charged(offset + sum(len(b) for b in bufs),
                             lambda: super(SharedTmpFile, self).pwritev(bufs, offset))

    def truncate(self, size: int) -> None:
        before = os.fstat(self.fd).st_size
        self.usage.charge(size - before)
        try:
            super().truncate(size)
        except BaseException:
            self.usage.charge(before - size)
            raise


class SharedTmpFs(HostDirFs):
    """A tmpfs copied to the host at the first fork: a host directory that keeps the
    tmpfs's face (statfs, chown recorded in stat) for every process of the run."""

    fstype = "tmpfs"

    def __init__(self, host_root: str, usage: Usage,
                 owners: dict[tuple[int, int], tuple[int, int]]) -> None:
        super().__init__(host_root)
        # beside the mounts' directories, in the run's shared directory (no guest path)
        self.sockets_dir = os.path.join(os.path.dirname(host_root), ".sockets")
        os.makedirs(self.sockets_dir, mode=0o700, exist_ok=True)
        self.usage = usage  # --tmpfs-size, for bytes and names, across the processes
        # chown as the guest asked (the monitor holds no CAP_CHOWN): in an extended
        # attribute of the host file, seen by every process; for what takes none
        # (symlinks, FIFOs, sockets), here, by host (dev, ino): this process's record,
        # inherited by its children
        self.owners = owners

    # -- the size cap: names and bytes charged as TmpFs charges them ------------------
    def _host_file(self, fd: int, path: str, flags: int) -> HostFile:
        return self.file_of(fd, path, flags)

    def file_of(self, fd: int, path: str, flags: int) -> SharedTmpFile:
        """A file of this mount over a host fd the caller has (a copy no longer linked,
        or an fd another process sent)."""
        file = SharedTmpFile(fd, path, flags)
        file.fs = self
        return file

    def _held(self, st: Stat) -> int:
        """The bytes a name holds that go with its last link."""
        fmt = st.mode & S_IFMT
        if fmt == S_IFLNK:
            return st.size
        return st.size if fmt == S_IFREG and st.nlink <= 1 else 0

    def _existing(self, rel: Rel) -> Stat | None:
        try:
            return HostDirFs.lstat(self, rel)
        except SyscallError as err:
            if err.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise

    def _named(self, entries: int, nbytes: int, make: Callable[[], object]) -> None:
        self.usage.charge(nbytes, entries)
        try:
            make()
        except BaseException:
            self.usage.charge(-nbytes, -entries)
            raise

    def open(self, rel: Rel, flags: int, mode: int, path: str) -> OpenFile:
        st = self._existing(rel) if rel else None
        if st is None and flags & OFlag.CREAT:
            self.usage.charge(0, 1)
            try:
                return super().open(rel, flags, mode, path)
            except BaseException:
                self.usage.charge(0, -1)
                raise
        file = super().open(rel, flags, mode, path)
        if (st is not None and flags & OFlag.TRUNC and flags & O_ACCMODE != OFlag.RDONLY
                and st.mode & S_IFMT == S_IFREG):
            self.usage.charge(-st.size)
        return file

    def mkdir(self, rel: Rel, mode: int) -> None:
        self._named(1, 0, lambda: super(SharedTmpFs, self).mkdir(rel, mode))

    def mknod(self, rel: Rel, mode: int) -> None:
        self._named(1, 0, lambda: super(SharedTmpFs, self).mknod(rel, mode))

    def symlink(self, target: str, rel: Rel) -> None:
        self._named(1, len(os.fsencode(target)),
                    lambda: super(SharedTmpFs, self).symlink(target, rel))

    def link(self, src: Rel, dst: Rel) -> None:
        self._named(1, 0, lambda: super(SharedTmpFs, self).link(src, dst))

    def unlink(self, rel: Rel) -> None:
        st = HostDirFs.lstat(self, rel)
        sock = (self.socket_host_path((self.dev, st.ino)) if st.mode & S_IFMT == S_IFSOCK
                else None)
        super().unlink(rel)
        self.usage.charge(-self._held(st), -1)
        if sock is not None:  # the name goes with the file (a socket bound to it lives on)
            try:
                os.unlink(sock)
            except FileNotFoundError:
                pass

    def rmdir(self, rel: Rel) -> None:
        super().rmdir(rel)
        self.usage.charge(0, -1)

    def rename(self, src: Rel, dst: Rel, flags: int) -> None:
        moved, replaced = self._existing(src), self._existing(dst)
        super().rename(src, dst, flags)
        if (replaced is not None and moved is not None and not flags & RENAME_EXCHANGE
                and (replaced.dev, replaced.ino) != (moved.dev, moved.ino)):
            self.usage.charge(-self._held(replaced), -1)

    def truncate(self, rel: Rel, size: int) -> None:
        st = HostDirFs.lstat(self, rel)
        if st.mode & S_IFMT != S_IFREG:
            return super().truncate(rel, size)
        self.usage.charge(size - st.size)
        try:
            super().truncate(rel, size)
        except BaseException:
            self.usage.charge(st.size - size)
            raise

    # -- what tmpfs keeps that a host directory cannot --------------------------------
    def _open_plain(self, rel: Rel) -> int | None:
        """A readable fd on a regular file or directory of the mount, else None."""
        try:
            return openat2(self.root_fd, "/".join(rel), os.O_RDONLY | os.O_NONBLOCK)
        except SyscallError:
            return None

    def lstat(self, rel: Rel) -> Stat:
        st = super().lstat(rel)
        fd = None
        if self.usage.owned and st.mode & S_IFMT in (S_IFREG, S_IFDIR):
            fd = self._open_plain(rel)
        try:
            return self.as_tmpfs(st, fd)
        finally:
            if fd is not None:
                os.close(fd)

    def as_tmpfs(self, st: Stat, fd: int | None) -> Stat:
        """A host stat as this mount shows it: its own device (the host's is every
        shared mount's), the owner a guest chown recorded (read through fd)."""
        owner = self.owners.get((st.dev, st.ino))
        if owner is None and fd is not None and self.usage.owned:
            try:
                uid, gid = os.getxattr(fd, OWNER_XATTR).split(b":")
                owner = int(uid), int(gid)
            except (OSError, ValueError):
                pass  # never changed (ENODATA)
        if owner is not None:
            st.uid, st.gid = owner
        st.dev = self.dev
        return st

    def chown(self, rel: Rel, uid: int | None, gid: int | None) -> None:
        st = self.lstat(rel)
        owner = (st.uid if uid is None else uid, st.gid if gid is None else gid)
        self.usage.set_owned()
        fd = self._open_plain(rel) if st.mode & S_IFMT in (S_IFREG, S_IFDIR) else None
        if fd is None:
            self._record_owner(rel, owner)
        else:
            try:
                os.setxattr(fd, OWNER_XATTR, f"{owner[0]}:{owner[1]}".encode())
            except OSError:  # a host filesystem without user xattrs: this process's record
                self._record_owner(rel, owner)
            finally:
                os.close(fd)
        if st.mode & S_IFMT not in (S_IFDIR, S_IFLNK):
            kill = 0o4000 | (0o2000 if st.mode & 0o010 else 0)
            if st.mode & kill:
                self.chmod(rel, st.mode & ~kill & 0o7777)

    def _record_owner(self, rel: Rel, owner: tuple[int, int]) -> None:
        """This process's record of a chown, keyed as as_tmpfs looks: the host's ids."""
        host = HostDirFs.lstat(self, rel)
        self.owners[(host.dev, host.ino)] = owner

    def chmod(self, rel: Rel, mode: int) -> None:
        fd = self._open_plain(rel)
        if fd is None:
            super().chmod(rel, mode)  # a socket file (no open): through /proc/self/fd
            return
        try:
            os.fchmod(fd, mode & 0o7777)
        except OSError as err:
            raise host_error(err) from None
        finally:
            os.close(fd)

    def xattrs(self, rel: Rel) -> XattrStore:
        if rel and self.lstat(rel).mode & S_IFMT == S_IFLNK:
            return _SymlinkStore()
        return _FdStore(self, "/".join(rel) or ".")

    def statfs(self) -> StatFs:
        usage = self.usage
        used, entries = usage.counts()
        blocks = usage.size_limit // 4096
        free = max(0, blocks - (used + 4095) // 4096)
        return StatFs(TMPFS_MAGIC, 4096, blocks, free, free, usage.max_entries,
                      max(0, usage.max_entries - entries), 255, ST_VALID)


class Shared(NamedTuple):
    """What share_tmpfs moved: the socket files' new (dev, ino) by their old (what a
    bound AF_UNIX name is found by, net/unix.py), and the host copies of files no longer
    linked, by id(node), until the caller has mapped them (then it unlinks them)."""

    sockets: dict[tuple[int, int], tuple[int, int]]
    unlinked: dict[int, str]


def share_tmpfs(vfs: Vfs, fds: FdTable, shared: SharedTmpDir,
                mapped: dict[str, list[Node]] | None = None) -> Shared:
    """Before the first fork: every in-memory tmpfs of the process becomes a host
    directory its children will share (a no-op once done). A file no longer linked but
    open (in fds) or mapped (mapped: mount path -> nodes) gets a host copy too, outside
    the mounts' trees, so its fd can be sent to another process and its pages are one
    in every process (multiprocessing's heap arenas are unlinked at once)."""
    mounts = [(path, fs) for path, fs in vfs.mount_list() if isinstance(fs, TmpFs)]
    moved = Shared({}, {})
    base = shared.path()  # made before the first fork even without a tmpfs: abstract
    if not mounts:  # AF_UNIX names of the run's processes live there too (net/unix.py)
        return moved
    for path, tmp in mounts:
        # a name of its own (a copy that failed half-way leaves its directory behind)
        host_root = private_dir(base=base)
        owners: dict[tuple[int, int], tuple[int, int]] = {}
        copied: dict[int, str] = {}  # id(node) -> host path, for hard links and open files
        _copy_tree(tmp.root, host_root, owners, copied)
        open_nodes = [f.node for _fd, f in fds.items()
                      if isinstance(f, TmpFile) and f.fs is tmp and f.node.data is not None]
        for node in [*open_nodes, *(mapped or {}).get(path, [])]:
            if id(node) not in copied:
                copied[id(node)] = moved.unlinked[id(node)] = _copy_unlinked(base, node)
        root = _HostTree(host_root)
        try:
            _set_attributes(root, tmp.root, ".", owners)
        finally:
            root.close()
        owned = any(n.uid or n.gid for n in (tmp.root, *_nodes(tmp.root)))
        usage = Usage(host_root + ".lock", tmp.size_limit, tmp.max_entries, tmp.used,
                      tmp.entries, owned)
        shared_fs = SharedTmpFs(host_root, usage, owners)
        vfs.replace(path, shared_fs)
        _reopen_descriptions(fds, tmp, shared_fs, copied)
        for node in (tmp.root, *_nodes(tmp.root)):
            if node.mode & S_IFMT == S_IFSOCK and id(node) in copied:
                rel = tuple(os.path.relpath(copied[id(node)], host_root).split("/"))
                new = shared_fs.lstat(rel)
                moved.sockets[(tmp.dev, node.ino)] = (new.dev, new.ino)
        if tmp.account is not None:  # the data is the host tmpfs's now, not guest memory
            tmp.account.charge(-(tmp.used + tmp.entries * ENTRY_COST))
        log.debug("tmpfs %s moved to %s for sharing across processes", path, host_root)
    return moved


def _copy_unlinked(base: str, node: Node) -> str:
    """A host copy of a regular file no longer linked, in the run's directory beside the
    mounts (never under a guest path)."""
    hidden = os.path.join(base, ".unlinked")
    os.makedirs(hidden, mode=0o700, exist_ok=True)
    fd, host_path = private_file(hidden)
    try:
        os.write(fd, node.data or b"")
    finally:
        os.close(fd)
    return host_path


def _nodes(root: Node) -> Iterator[Node]:
    """Every node below root (a loop, not recursion: a guest may nest deeply)."""
    stack = [root]
    while stack:
        for child in (stack.pop().children or {}).values():
            yield child
            if child.children is not None:
                stack.append(child)


class _HostTree:
    """Calls on a host directory by paths relative to its fd: the *at() forms, the
    ones the sandbox allows (and no path grows with the tree's root prefixed)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)


def _copy_tree(root: Node, host_root: str, owners: dict[tuple[int, int], tuple[int, int]],
               copied: dict[int, str]) -> None:
    """The tree below root, made under host_root (copied: host paths of what was made);
    a directory's mode and times are set once its entries are in (a read-only directory
    is filled first)."""
    tree = _HostTree(host_root)
    try:
        stack: list[tuple[Node, str, bool]] = [(root, ".", False)]
        while stack:
            node, rel, filled = stack.pop()
            if filled:
                _set_attributes(tree, node, rel, owners)
                continue
            assert node.children is not None
            for name, child in node.children.items():
                child_rel = name if rel == "." else f"{rel}/{name}"
                first = copied.get(id(child))
                if first is not None:  # another link to a file already copied
                    os.link(first, child_rel, src_dir_fd=tree.fd, dst_dir_fd=tree.fd,
                            follow_symlinks=False)
                    continue
                if _make(tree, child, child_rel):
                    copied[id(child)] = child_rel
                    if child.children is not None:
                        stack.append((child, child_rel, True))
                        stack.append((child, child_rel, False))
                    else:
                        _set_attributes(tree, child, child_rel, owners)
    finally:
        tree.close()
    for key, rel in copied.items():
        copied[key] = os.path.join(host_root, rel)


def _make(tree: _HostTree, node: Node, rel: str) -> bool:
    """The host object of one node (False: a kind not copied)."""
    fmt = node.mode & S_IFMT
    if fmt == S_IFDIR:
        os.mkdir(rel, 0o700, dir_fd=tree.fd)
    elif fmt == S_IFREG:
        fd = os.open(rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600, dir_fd=tree.fd)
        try:
            os.write(fd, node.data or b"")
        finally:
            os.close(fd)
    elif fmt == S_IFLNK:
        os.symlink(node.target, rel, dir_fd=tree.fd)
    elif fmt in (S_IFIFO, S_IFSOCK):
        os.mknod(rel, fmt | 0o600, dir_fd=tree.fd)
    else:
        return False  # devices are not made in a tmpfs by an unprivileged guest
    return True


def _set_attributes(tree: _HostTree, node: Node, rel: str,
                    owners: dict[tuple[int, int], tuple[int, int]]) -> None:
    fmt = node.mode & S_IFMT
    if fmt != S_IFLNK:
        plain = node.uid or node.gid or node.xattrs
        fd = os.open(rel, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=tree.fd) if plain and fmt in (S_IFREG, S_IFDIR) else -1
        try:
            if fd >= 0 and (node.uid or node.gid):
                os.setxattr(fd, OWNER_XATTR, f"{node.uid}:{node.gid}".encode())
            for key, value in (node.xattrs or {}).items() if fd >= 0 else ():
                try:
                    os.setxattr(fd, host_xattr(key), value)
                except OSError as err:
                    log.debug("tmpfs xattr %s of %s not copied: %s", key, rel, err)
        finally:
            if fd >= 0:
                os.close(fd)
        os.chmod(rel, node.mode & 0o7777, dir_fd=tree.fd)
    if (node.uid or node.gid) and (fmt == S_IFLNK or fmt not in (S_IFREG, S_IFDIR)):
        st = os.stat(rel, dir_fd=tree.fd, follow_symlinks=False)
        owners[(st.st_dev, st.st_ino)] = (node.uid, node.gid)
    os.utime(rel, ns=(node.atime, node.mtime), dir_fd=tree.fd, follow_symlinks=False)


def _reopen_descriptions(fds: FdTable, tmp: TmpFs, shared: SharedTmpFs,
                         copied: dict[int, str]) -> None:
    """Open files of the old tmpfs become host fds on their copies, at their offsets,
    so parent and child share them as Linux does (files no longer linked included: their
    copies are outside the tree, share_tmpfs)."""
    new: dict[int, HostFile] = {}
    for guest_fd, file in fds.items():
        if not isinstance(file, TmpFile) or file.fs is not tmp:
            continue
        host_path = copied.get(id(file.node))
        if file.node is tmp.root:
            host_path = shared.host_root
        if host_path is None:
            continue
        replacement = new.get(id(file))
        if replacement is None:
            flags = file.flags & (os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK)
            fd = os.open(host_path, flags | os.O_CLOEXEC | os.O_NOFOLLOW)
            replacement = shared.file_of(fd, file.path, file.flags)
            if not replacement.is_dir:
                os.lseek(fd, file.pos, os.SEEK_SET)
            new[id(file)] = replacement
        fds.install_at(guest_fd, replacement, fds.get_cloexec(guest_fd))

