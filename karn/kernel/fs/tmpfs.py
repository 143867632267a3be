"""An in-memory writable filesystem (/tmp, /dev/shm), with a size cap like tmpfs size=."""

from __future__ import annotations

import errno
import itertools
from collections.abc import Iterator

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING
from karn.kernel.fs.constants import (
    O_ACCMODE,
    O_OPEN_ONLY,
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    S_IFDIR,
    S_IFIFO,
    S_IFLNK,
    S_IFMT,
    S_IFREG,
    S_IFSOCK,
    ST_VALID,
    TMPFS_MAGIC,
    OFlag,
    dtype_of,
)
from karn.kernel.fs.fifo import FifoState, PendingFifo, new_pipe_end
from karn.kernel.fs.file import Buffer, DirEntry, MemoryFile, OpenFile
from karn.kernel.fs.filesystem import Filesystem, Rel
from karn.kernel.fs.stat import Stat, StatFs, now_ns
from karn.kernel.fs.xattr import NodeStore, XattrStore

if TYPE_CHECKING:
    from karn.kernel.mm import MemoryAccount
    from karn.kernel.process import Task

MAX_FILE_SIZE = (1 << 63) - 1
F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_GROW, F_SEAL_WRITE = 0x1, 0x2, 0x4, 0x8
F_SEAL_FUTURE_WRITE, F_SEAL_EXEC = 0x10, 0x20
ALL_SEALS = 0x3F
WRITE_SEALS = F_SEAL_WRITE | F_SEAL_FUTURE_WRITE
# A directory entry and its node as the monitor holds them (~925 bytes measured for empty
# files). Like Linux's tmpfs, entries have their own budget beside the data's (nr_inodes:
# here the size limit over this cost), and both count against --memory, so many empty
# files or links end in ENOSPC, not in unbounded monitor memory.
ENTRY_COST = 1 << 10


class Node:
    __slots__ = (
        "mode",
        "ino",
        "nlink",
        "uid",
        "gid",
        "atime",
        "mtime",
        "ctime",
        "data",
        "children",
        "target",
        "seals",
        "fifo",
        "xattrs",
    )

    def __init__(self, mode: int, ino: int) -> None:
        t = now_ns()
        self.mode, self.ino, self.nlink, self.uid, self.gid = mode, ino, 1, 0, 0
        self.atime = self.mtime = self.ctime = t
        self.data = bytearray() if mode & S_IFMT == S_IFREG else None
        self.children: dict[str, Node] | None = {} if mode & S_IFMT == S_IFDIR else None
        self.target = ""
        # File seals (fcntl F_ADD_SEALS): a tmpfs file is sealable, born sealed against
        # new seals as on Linux; only memfd_create(MFD_ALLOW_SEALING) makes one without.
        self.seals = F_SEAL_SEAL
        self.fifo: FifoState | None = None  # a FIFO's ends, once first opened
        self.xattrs: dict[str, bytes] | None = None  # extended attributes (xattr.py)
        if self.children is not None:
            self.nlink = 2

    @property
    def dir_entries(self) -> dict[str, Node]:
        """A directory's children (ENOTDIR for any other node)."""
        if self.children is None:
            raise SyscallError(errno.ENOTDIR)
        return self.children

    def touch(self) -> None:
        self.mtime = self.ctime = now_ns()

    def touch_meta(self) -> None:
        self.ctime = now_ns()

    def stat(self, dev: int) -> Stat:
        fmt = self.mode & S_IFMT
        if self.data is not None:
            size = len(self.data)
        elif fmt in (S_IFLNK, S_IFDIR):
            size = len(self.target) if fmt == S_IFLNK else 4096
        else:
            size = 0  # FIFOs, sockets
        return Stat(
            mode=self.mode,
            ino=self.ino,
            dev=dev,
            nlink=self.nlink,
            uid=self.uid,
            gid=self.gid,
            size=size,
            blocks=(size + 511) // 512,
            atime_ns=self.atime,
            mtime_ns=self.mtime,
            ctime_ns=self.ctime,
        )


class TmpFs(Filesystem):
    fstype = "tmpfs"
    whole_lookups = True  # only a directory node has children to look in

    def __init__(self, size_limit: int = 256 << 20, mode: int = 0o1777,
                 account: MemoryAccount | None = None,
                 max_file_size: int = MAX_FILE_SIZE) -> None:
        super().__init__()
        self.size_limit = size_limit
        self.max_file_size = max_file_size  # a policy's file_size; EFBIG beyond, as s_maxbytes
        self.account = account  # file data also counts against the guest's memory limit
        self.used = 0
        self.max_entries = max(size_limit // ENTRY_COST, 1)
        self.entries = 0
        self._ino = itertools.count(2)
        self.root = Node(S_IFDIR | mode, 1)

    # -- tree walking ----------------------------------------------------------------
    def _lookup(self, rel: Rel) -> Node:
        node = self.root
        for name in rel:
            if node.children is None:
                raise SyscallError(errno.ENOTDIR)
            child = node.children.get(name)
            if child is None:
                raise SyscallError(errno.ENOENT)
            node = child
        return node

    def _parent(self, rel: Rel) -> tuple[Node, str]:
        if not rel:
            raise SyscallError(errno.EBUSY)
        parent = self._lookup(rel[:-1])
        if parent.children is None:
            raise SyscallError(errno.ENOTDIR)
        return parent, rel[-1]

    def _charge(self, delta: int, entries: int = 0) -> None:
        """Take or give back data bytes and directory entries (ENOSPC past either cap)."""
        if delta > 0 and self.used + delta > self.size_limit:
            raise SyscallError(errno.ENOSPC)
        if entries > 0 and self.entries + entries > self.max_entries:
            raise SyscallError(errno.ENOSPC)
        if self.account is not None and not self.account.charge(delta + entries * ENTRY_COST):
            raise SyscallError(errno.ENOSPC)  # as tmpfs in a full memory cgroup
        self.used += delta
        self.entries += entries

    def _new(self, parent: Node, name: str, mode: int, target: str = "") -> Node:
        if name in parent.dir_entries:
            raise SyscallError(errno.EEXIST)
        self._charge(len(target), entries=1)
        node = Node(mode, next(self._ino))
        node.target = target
        parent.dir_entries[name] = node
        if node.children is not None:
            parent.nlink += 1
        parent.touch()
        return node

    def seed(self, rel: Rel, mode: int, content: bytes | str | None) -> None:
        """Before the guest runs: put a file (content: its bytes), a symlink (its target)
        or a directory (None, or one already made: its mode set) at rel, making missing
        directories above it 0755. Charged as the guest's own files (ENOSPC, EFBIG past
        the caps), which the guest may then change or remove."""
        parent = self.root
        for name in rel[:-1]:
            child = parent.dir_entries.get(name)
            parent = self._new(parent, name, S_IFDIR | 0o755) if child is None else child
        existing = parent.dir_entries.get(rel[-1])
        if content is None:
            if existing is None:
                existing = self._new(parent, rel[-1], S_IFDIR | mode)
            elif existing.children is None:
                raise SyscallError(errno.EEXIST)
            existing.mode = (existing.mode & S_IFMT) | (mode & 0o7777)
        elif isinstance(content, str):
            self._new(parent, rel[-1], S_IFLNK | 0o777, content)
        else:
            if len(content) > self.max_file_size:
                raise SyscallError(errno.EFBIG)
            node = self._new(parent, rel[-1], S_IFREG | (mode & 0o7777))
            self._charge(len(content))
            assert node.data is not None
            node.data[:] = content

    def resize(self, node: Node, size: int) -> None:
        """Set a file's size, charging the filesystem's cap (and honouring its seals)."""
        if size > self.max_file_size:
            raise SyscallError(errno.EFBIG)
        data = node.data
        assert data is not None
        delta = size - len(data)
        if node.seals & (F_SEAL_GROW if delta > 0 else F_SEAL_SHRINK if delta < 0 else 0):
            raise SyscallError(errno.EPERM)
        self._charge(delta)
        if delta > 0:
            data.extend(bytes(delta))
        else:
            del data[size:]
        node.touch()

    def chown(self, rel: Rel, uid: int | None, gid: int | None) -> None:
        self.chown_node(self._lookup(rel), uid, gid)

    def chown_node(self, node: Node, uid: int | None, gid: int | None) -> None:
        if uid is not None:
            node.uid = uid
        if gid is not None:
            node.gid = gid
        if node.children is None and node.mode & S_IFMT != S_IFLNK:
            # set-user-ID goes, and set-group-ID with group execute, as on Linux (even
            # for chown(-1, -1))
            kill = 0o4000 | (0o2000 if node.mode & 0o010 else 0)
            node.mode &= ~kill
        node.touch_meta()

    def charge_metadata(self, delta: int) -> None:
        """Bytes of extended attributes, counted with the data (ENOSPC past the cap)."""
        self._charge(delta)

    def xattrs(self, rel: Rel) -> XattrStore:
        return NodeStore(self, self._lookup(rel))

    def anonymous(self, mode: int) -> Node:
        """A file in no directory (memfd_create): its data is charged as any file's."""
        node = Node(S_IFREG | mode, next(self._ino))
        node.nlink = 0
        return node

    def forget(self, node: Node) -> None:
        """The last description of an anonymous file closed: give its data back."""
        assert node.data is not None
        self._charge(-len(node.data))
        node.data = bytearray()

    def _release(self, node: Node) -> None:
        """A link to a non-directory goes: its entry's cost, and with the last link its
        data (open descriptions keep the bytes until closed) or symlink target."""
        node.nlink -= 1
        node.ctime = now_ns()
        size = len(node.data) if node.data is not None else len(node.target)
        self._charge(-size if node.nlink == 0 else 0, entries=-1)

    # -- Filesystem interface ---------------------------------------------------------
    def regular_files(self) -> Iterator[tuple[Rel, Node]]:
        """Every regular file linked in the tree, with its path (for the shared mappings
        of its files, kernel/sys_mm.py); a loop, not recursion: a guest may nest deeply."""
        stack: list[tuple[Rel, Node]] = [((), self.root)]
        while stack:
            rel, node = stack.pop()
            for name, child in (node.children or {}).items():
                if child.children is not None:
                    stack.append(((*rel, name), child))
                elif child.data is not None:
                    yield (*rel, name), child

    def lstat(self, rel: Rel) -> Stat:
        return self._lookup(rel).stat(self.dev)

    def readlink(self, rel: Rel) -> str:
        node = self._lookup(rel)
        if node.mode & S_IFMT != S_IFLNK:
            raise SyscallError(errno.EINVAL)
        return node.target

    def open(self, rel: Rel, flags: int, mode: int, path: str) -> OpenFile:
        try:
            node = self._lookup(rel)
        except SyscallError as err:
            if err.errno != errno.ENOENT or not flags & OFlag.CREAT:
                raise
            parent, name = self._parent(rel)
            node = self._new(parent, name, S_IFREG | (mode & 0o7777))
        else:
            if flags & OFlag.CREAT and flags & OFlag.EXCL:
                raise SyscallError(errno.EEXIST)
        fmt = node.mode & S_IFMT
        writing = (flags & O_ACCMODE) != OFlag.RDONLY
        if fmt == S_IFLNK:
            raise SyscallError(errno.ELOOP)
        if fmt == S_IFIFO:
            if node.fifo is None:
                node.fifo = FifoState(new_pipe_end, host_poll=False)
            return PendingFifo(path, flags & ~O_OPEN_ONLY, node.fifo,
                               lambda: node.stat(self.dev))
        if fmt == S_IFSOCK:
            raise SyscallError(errno.ENXIO)
        if fmt == S_IFDIR and (writing or flags & OFlag.CREAT):
            raise SyscallError(errno.EISDIR)
        if fmt != S_IFDIR and flags & OFlag.DIRECTORY:
            raise SyscallError(errno.ENOTDIR)
        if flags & OFlag.TRUNC and writing and node.data:
            self.resize(node, 0)
        return TmpFile(self, node, path, flags & ~O_OPEN_ONLY)

    def statfs(self) -> StatFs:
        blocks = self.size_limit // 4096
        free = max(0, blocks - (self.used + 4095) // 4096)
        files, ffree = self.max_entries, self.max_entries - self.entries
        return StatFs(TMPFS_MAGIC, 4096, blocks, free, free, files, ffree, 255, ST_VALID)

    def mkdir(self, rel: Rel, mode: int) -> None:
        parent, name = self._parent(rel)
        self._new(parent, name, S_IFDIR | (mode & 0o7777))

    def mknod(self, rel: Rel, mode: int) -> None:
        parent, name = self._parent(rel)
        self._new(parent, name, mode)

    def symlink(self, target: str, rel: Rel) -> None:
        parent, name = self._parent(rel)
        self._new(parent, name, S_IFLNK | 0o777, target)

    def link(self, src: Rel, dst: Rel) -> None:
        node = self._lookup(src)
        if node.children is not None:
            raise SyscallError(errno.EPERM)
        parent, name = self._parent(dst)
        if name in parent.dir_entries:
            raise SyscallError(errno.EEXIST)
        self._charge(0, entries=1)
        parent.dir_entries[name] = node
        node.nlink += 1
        node.ctime = now_ns()
        parent.touch()

    def unlink(self, rel: Rel) -> None:
        parent, name = self._parent(rel)
        node = self._lookup(rel)
        if node.children is not None:
            raise SyscallError(errno.EISDIR)
        del parent.dir_entries[name]
        parent.touch()
        self._release(node)

    def rmdir(self, rel: Rel) -> None:
        parent, name = self._parent(rel)
        node = self._lookup(rel)
        if node.children is None:
            raise SyscallError(errno.ENOTDIR)
        if node.children:
            raise SyscallError(errno.ENOTEMPTY)
        del parent.dir_entries[name]
        parent.nlink -= 1
        parent.touch()
        node.nlink = 0
        self._charge(0, entries=-1)

    def rename(self, src: Rel, dst: Rel, flags: int) -> None:
        if flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) or flags == (
            RENAME_NOREPLACE | RENAME_EXCHANGE
        ):
            raise SyscallError(errno.EINVAL)
        sparent, sname = self._parent(src)
        dparent, dname = self._parent(dst)
        node = self._lookup(src)
        if src == dst:
            return
        if dst[: len(src)] == src or (flags & RENAME_EXCHANGE and src[: len(dst)] == dst):
            raise SyscallError(errno.EINVAL)  # a directory into its own subtree
        target = dparent.dir_entries.get(dname)
        if flags & RENAME_EXCHANGE:
            if target is None:
                raise SyscallError(errno.ENOENT)
            sparent.dir_entries[sname], dparent.dir_entries[dname] = target, node
            for moved, old, new in ((node, sparent, dparent), (target, dparent, sparent)):
                if moved.children is not None and old is not new:
                    old.nlink -= 1
                    new.nlink += 1
            sparent.touch()
            dparent.touch()
            return
        if target is not None:
            if flags & RENAME_NOREPLACE:
                raise SyscallError(errno.EEXIST)
            if target is node:
                return  # two links to one file: POSIX says do nothing
            if node.children is not None:
                if target.children is None:
                    raise SyscallError(errno.ENOTDIR)
                if target.children:
                    raise SyscallError(errno.ENOTEMPTY)
                dparent.nlink -= 1
                target.nlink = 0
                self._charge(0, entries=-1)
            elif target.children is not None:
                raise SyscallError(errno.EISDIR)
            else:
                self._release(target)
        del sparent.dir_entries[sname]
        dparent.dir_entries[dname] = node
        if node.children is not None:
            sparent.nlink -= 1
            dparent.nlink += 1
        node.ctime = now_ns()
        sparent.touch()
        dparent.touch()

    def chmod(self, rel: Rel, mode: int) -> None:
        node = self._lookup(rel)
        node.mode = (node.mode & S_IFMT) | (mode & 0o7777)
        node.ctime = now_ns()

    def utimens(self, rel: Rel, atime_ns: int | None, mtime_ns: int | None) -> None:
        node = self._lookup(rel)
        if atime_ns is not None:
            node.atime = atime_ns
        if mtime_ns is not None:
            node.mtime = mtime_ns
        node.ctime = now_ns()

    def truncate(self, rel: Rel, size: int) -> None:
        node = self._lookup(rel)
        if node.children is not None:
            raise SyscallError(errno.EISDIR)
        if node.data is None:
            raise SyscallError(errno.EINVAL)
        self.resize(node, size)


class TmpFile(MemoryFile):
    def __init__(self, fs: TmpFs, node: Node, path: str, flags: int) -> None:
        super().__init__(path, flags)
        self.fs, self.node = fs, node
        self.is_dir = node.children is not None

    def _data(self) -> bytearray:
        if self.node.data is None:
            raise SyscallError(errno.EISDIR)
        return self.node.data

    def pwrite(self, data: Buffer, offset: int) -> int:
        buf = self._data()
        if self.node.seals & WRITE_SEALS:
            raise SyscallError(errno.EPERM)
        end = offset + len(data)
        if end > len(buf):
            self.fs.resize(self.node, end)
        buf[offset:end] = data
        self.node.touch()
        return len(data)

    def write(self, task: Task, data: Buffer) -> int:
        if self.flags & OFlag.APPEND:
            self.pos = len(self._data())
        n = self.pwrite(data, self.pos)
        self.pos += n
        return n

    def lseek(self, offset: int, whence: int) -> int:
        return (
            OpenFile.lseek(self, offset, whence) if self.is_dir else super().lseek(offset, whence)
        )

    def stat(self) -> Stat:
        return self.node.stat(self.fs.dev)

    def list_dir(self) -> list[DirEntry]:
        if self.node.children is None:
            raise SyscallError(errno.ENOTDIR)
        return [DirEntry(n, c.ino, dtype_of(c.mode)) for n, c in self.node.children.items()]

    def truncate(self, size: int) -> None:
        if self.node.data is None:
            raise SyscallError(errno.EINVAL)
        self.fs.resize(self.node, size)

    def reopen(self, flags: int) -> OpenFile:
        return TmpFile(self.fs, self.node, self.path, flags & ~O_OPEN_ONLY)

    def map_shared_writable(self) -> None:
        if self.node.seals & WRITE_SEALS:
            raise SyscallError(errno.EPERM)

    def add_seals(self, seals: int, mapped_writable: bool) -> None:
        """fcntl(F_ADD_SEALS), as Linux: on a description open for writing, not after
        F_SEAL_SEAL, and F_SEAL_WRITE not while a writable shared mapping exists."""
        if seals & ~ALL_SEALS or self.node.data is None:
            raise SyscallError(errno.EINVAL)
        if not self.writable or self.node.seals & F_SEAL_SEAL:
            raise SyscallError(errno.EPERM)
        if seals & F_SEAL_WRITE and mapped_writable:
            raise SyscallError(errno.EBUSY)
        self.node.seals |= seals
