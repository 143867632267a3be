"""Memory syscalls: brk, mmap, munmap, mremap, mprotect, madvise."""

from __future__ import annotations

import errno
import os

from karn import log
from karn.abi.errno import SyscallError
from karn.abi.registers import s32, s64
from karn.hints import TYPE_CHECKING, NamedTuple
from karn.kernel.fs.constants import OFlag
from karn.kernel.fs.fdtable import FdTable
from karn.kernel.fs.file import HostFile
from karn.kernel.fs.tmpfs import Node, TmpFile, TmpFs
from karn.kernel.mm import PAGE, PROT_EXEC, PROT_READ, PROT_WRITE, page_up
from karn.kernel.process import Task

if TYPE_CHECKING:
    from karn.kernel.fs.file import OpenFile
    from karn.kernel.fs.filesystem import Filesystem
    from karn.kernel.guestmem import GuestMemory
    from karn.kernel.mm import AddressSpace

MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_TYPE = 0x0F
MAP_FIXED = 0x10
MAP_ANONYMOUS = 0x20
MAP_GROWSDOWN = 0x0100
MAP_NORESERVE = 0x4000
MAP_STACK = 0x20000
MAP_FIXED_NOREPLACE = 0x100000

MREMAP_MAYMOVE = 1
MREMAP_FIXED = 2
MREMAP_DONTUNMAP = 4

MADV_DONTNEED = 4
MADV_FREE = 8
MADV_REMOVE = 9

PROT_KNOWN = PROT_READ | PROT_WRITE | PROT_EXEC | 0x01000000 | 0x02000000  # + GROWSDOWN/UP


def sys_brk(task: Task, addr: int) -> int:
    return task.process.mm.set_brk(addr)


def sys_mmap(task: Task, addr: int, length: int, prot: int, flags: int, fd: int, off: int) -> int:
    mm = task.process.mm
    flags, prot, off = s32(flags), s32(prot), s64(off)
    kind = flags & MAP_TYPE
    if length == 0 or off < 0 or off & (PAGE - 1) or prot & ~PROT_KNOWN:
        raise SyscallError(errno.EINVAL)
    if kind not in (MAP_SHARED, MAP_PRIVATE, MAP_SHARED_VALIDATE):
        raise SyscallError(errno.EINVAL)
    length = page_up(length)
    if length == 0 or length > mm.region.user_end:
        raise SyscallError(errno.ENOMEM)
    file = device = None
    if not flags & MAP_ANONYMOUS:
        file = task.process.fds.get(s32(fd))
        device = file.device_mapping(off, length, prot, kind != MAP_PRIVATE)
        if device is None:
            if not file.readable or (kind != MAP_PRIVATE and prot & PROT_WRITE
                                     and not file.writable):
                raise SyscallError(errno.EACCES)
            if kind != MAP_PRIVATE and prot & PROT_WRITE:
                file.map_shared_writable()  # EPERM on a write-sealed memfd
    if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE):
        if addr & (PAGE - 1):
            raise SyscallError(errno.EINVAL)
        if flags & MAP_FIXED_NOREPLACE and mm.overlaps(addr, addr + length):
            raise SyscallError(errno.EEXIST)
        start = addr
    else:
        start = mm.find_free(length, addr)
    name = file.path if file is not None else ""
    # MAP_NORESERVE asks for no reservation, MAP_STACK is a thread stack (glibc maps 8 MiB
    # each, mostly untouched): neither counts against --memory, as under overcommit.
    charged = not flags & (MAP_NORESERVE | MAP_STACK) and device is None
    if mm.shared_files:
        write_back(task.mem, mm, start, start + length, forget=True)  # MAP_FIXED over one
    mm.map(start, length, prot, name, off, charged, shared=kind != MAP_PRIVATE,
           no_write=kind != MAP_PRIVATE and device is None and file is not None
           and not file.writable)
    if kind == MAP_PRIVATE:
        if file is not None:
            _map_private(task, start, length, file, off)
        # anonymous only: a file's private pages keep showing the file's later changes
        # until written, as on Linux (the loader's program data aside: kernel/mm.py)
        elif prot & PROT_WRITE and not flags & MAP_NORESERVE:
            mm.prefault(start, start + length, stack=bool(flags & (MAP_STACK | MAP_GROWSDOWN)))
        return start
    try:
        if device is not None:
            mm.memory.share_file(start, length, *device)
            return start
        _map_shared(task, start, length, prot, file, off)
    except SyscallError:
        mm.unmap(start, length)
        raise
    return start


def _map_private(task: Task, start: int, length: int, file: OpenFile, off: int) -> None:
    """A private file mapping: a regular host file's pages mapped in place, copy on
    write (read when touched, as Linux maps libraries: a 20 MiB library costs nothing
    until used, and every guest mapping it shares the host's page cache); pages past the
    end of the file read zeros. Another file (in memory, or one the host will not map) is
    copied in now."""
    if isinstance(file, HostFile) and file.is_regular:
        in_file = _in_file(file, length, off)
        try:
            if in_file:
                task.process.mm.memory.map_file_private(start, in_file, file.fd, off)
            return
        except SyscallError as err:
            log.debug("mmap %s: a private copy (%s)", file.path, os.strerror(err.errno))
    _fill_from_file(task.mem, file, start, length, off)


def _map_shared(task: Task, start: int, length: int, prot: int, file: OpenFile | None,
                off: int) -> None:
    """MAP_SHARED memory stays one with the other processes' after a fork (host-shared
    pages, platform/memory.py; docs/design/processes.md 6.2). A regular host file (a
    volume's, the shared tmpfs's, the root's) is mapped in place: every process mapping it,
    in the guest or on the host, sees every write, read(2) included, as SQLite's WAL index
    needs. Another file's pages (an in-memory one), or a host file the host will not map,
    are a shared copy of its data, written back to it on msync, munmap and exit."""
    mm = task.process.mm
    if isinstance(file, HostFile) and file.is_regular:
        try:
            in_file = _map_in_place(mm, file, start, length, off)
        except SyscallError as err:  # e.g. a file system that cannot map: a copy, below
            log.debug("mmap %s: a shared copy (%s)", file.path, os.strerror(err.errno))
        else:
            if in_file < length:  # past the end of the file: SIGBUS on Linux, zeros here
                mm.memory.share_anonymous(start + in_file, length - in_file)
            return
    mm.memory.share_anonymous(start, length)
    if file is not None:
        _fill_from_file(task.mem, file, start, length, off)
        if prot & PROT_WRITE:
            _share(mm, start, file, off, length)


def _map_in_place(mm: AddressSpace, file: HostFile, start: int, length: int, off: int) -> int:
    """Map the host file's own pages at [start, start+length) as far as the file reaches
    (tracked: mremap maps the file again, ETXTBSY sees it); the bytes mapped."""
    in_file = _in_file(file, length, off)
    if in_file:
        mm.memory.share_file(start, in_file, file.fd, off, file.writable)
        _share(mm, start, file, off, in_file)
    return in_file


def _in_file(file: OpenFile, length: int, off: int) -> int:
    """How much of `length` bytes mapped from `off` the file's pages reach (page-rounded:
    the last page is the file's, zeros past its end)."""
    return min(length, max(page_up(file.stat().size - off), 0))


def _share(mm: AddressSpace, start: int, file: OpenFile, off: int, length: int) -> None:
    """Track a shared piece; it holds the open file description, as a Linux mapping
    does: closing the fd must not let the write-back reach whatever reuses the host fd."""
    file.refs += 1
    mm.shared_files[start] = (file, off, length)


def write_back(mem: GuestMemory, mm: AddressSpace, start: int, end: int, forget: bool) -> None:
    """Write shared file mappings overlapping [start, end) back to their files (those
    mapped in place are the file's pages already); with forget, the range is leaving the
    address space (munmap, replaced, moved, exit)."""
    shared = mm.shared_files
    for base, (file, off, length) in list(shared.items()):
        lo, hi = max(base, start), min(base + length, end)
        if lo >= hi:
            continue
        if not mm.memory.maps_file(lo, hi):
            try:
                size = file.stat().size
                limit = min(hi, base + max(size - off, 0))  # never extend the file
                if limit > lo:
                    file.pwrite(mem.view(lo, limit - lo), off + (lo - base))
            except SyscallError:
                pass  # the file went away or became unwritable: as with a lost page
        if forget:
            if shared.pop(base, None) is None:
                continue  # another thread released it meanwhile (exit racing a munmap)
            if base < lo:
                _share(mm, base, file, off, lo - base)
            if hi < base + length:
                _share(mm, hi, file, off + (hi - base), base + length - hi)
            FdTable.unref(file)


class TmpfsMapping(NamedTuple):
    """A shared mapping of an in-memory tmpfs file, found before the tmpfs moves to the
    shared host directory (kernel/fs/sharedtmp.py)."""

    start: int
    length: int
    offset: int
    mount: str  # where its tmpfs is mounted
    rel: tuple[str, ...]  # the file's path inside it; () for a file no longer linked
    node: Node | None = None  # a file no longer linked: its node (its copy's key)


def tmpfs_mappings(mem: GuestMemory, mm: AddressSpace, mounts: dict[str, TmpFs]
                   ) -> list[TmpfsMapping]:
    """The shared mappings of files linked in the tmpfs mounts `mounts` (path -> TmpFs),
    their data written back to the files: the first fork is about to copy them."""
    if not any(isinstance(file, TmpFile) for file, _o, _l in mm.shared_files.values()):
        return []  # no tree to walk
    paths: dict[int, tuple[str, tuple[str, ...]]] = {}
    for mount, fs in mounts.items():
        for rel, node in fs.regular_files():
            paths.setdefault(id(node), (mount, rel))
    mount_of = {id(fs): mount for mount, fs in mounts.items()}
    found = []
    for start, (file, off, length) in list(mm.shared_files.items()):
        if not isinstance(file, TmpFile) or id(file.fs) not in mount_of \
                or file.node.data is None:
            continue
        write_back(mem, mm, start, start + length, forget=False)
        where = paths.get(id(file.node))
        if where is not None:
            found.append(TmpfsMapping(start, length, off, *where))
        else:  # unlinked: mapped from its host copy (sharedtmp.share_tmpfs)
            found.append(TmpfsMapping(start, length, off, mount_of[id(file.fs)], (),
                                      file.node))
    return found


def unlinked_mapped(moved: list[TmpfsMapping]) -> dict[str, list[Node]]:
    """The nodes of mapped files no longer linked, by mount (for share_tmpfs)."""
    nodes: dict[str, list[Node]] = {}
    for piece in moved:
        if piece.node is not None:
            nodes.setdefault(piece.mount, []).append(piece.node)
    return nodes


def map_moved_files(mem: GuestMemory, mm: AddressSpace, moved: list[TmpfsMapping],
                    mounts: dict[str, Filesystem], unlinked: dict[int, str]) -> None:
    """After the tmpfs moved to the host: its files' shared mappings become mappings of
    the host files themselves, so a process that opens and maps the file later, by name
    or by an fd sent to it, shares the pages with this one and its children (unlinked:
    the host copies of files no longer linked, by id(node))."""
    from karn.kernel.fs.sharedtmp import SharedTmpFile, SharedTmpFs  # loaded by the move

    for piece in moved:
        fs = mounts.get(piece.mount)
        if not isinstance(fs, SharedTmpFs):
            continue
        try:
            if piece.node is None:
                host = fs.open(piece.rel, OFlag.RDWR, 0, "/".join((piece.mount, *piece.rel)))
            else:
                host = fs.file_of(os.open(unlinked[id(piece.node)],
                                          os.O_RDWR | os.O_CLOEXEC), "", os.O_RDWR)
        except (SyscallError, OSError, KeyError):
            continue  # the copy cannot be opened: the mapping stays a shared copy
        try:
            if not isinstance(host, SharedTmpFile):
                continue
            in_file = _in_file(host, piece.length, piece.offset)
            if in_file:
                try:
                    mm.memory.share_file(piece.start, in_file, host.fd, piece.offset, True)
                except SyscallError as err:  # the host's map count: it stays a shared copy
                    log.warning("fork: %s stays a copy in its shared mapping: %s", host.path,
                                err)
                    mm.memory.share_anonymous(piece.start, in_file)
                    _fill_from_file(mem, host, piece.start, in_file, piece.offset)
                    continue
        finally:
            host.close()
        entry = mm.shared_files.get(piece.start)
        if in_file == piece.length and entry is not None:
            del mm.shared_files[piece.start]  # the pages are the file's: nothing to write
            FdTable.unref(entry[0])


def _fill_from_file(mem: GuestMemory, file: OpenFile, start: int, length: int,
                    off: int) -> None:
    view = mem.view(start, length)
    done = 0
    while done < length:
        n = file.pread_into(view[done:], off + done)
        if n <= 0:
            break
        done += n


def sys_munmap(task: Task, addr: int, length: int) -> int:
    if addr & (PAGE - 1) or length == 0:
        raise SyscallError(errno.EINVAL)
    mm = task.process.mm
    if mm.shared_files:
        write_back(task.mem, mm, addr, addr + page_up(length), forget=True)
    mm.unmap(addr, length)
    return 0


def sys_mprotect(task: Task, addr: int, length: int, prot: int) -> int:
    prot = s32(prot)
    if addr & (PAGE - 1) or prot & ~PROT_KNOWN:
        raise SyscallError(errno.EINVAL)
    if length == 0:
        return 0
    task.process.mm.protect(addr, length, prot & (PROT_READ | PROT_WRITE | PROT_EXEC))
    return 0


# Protection keys as on a CPU without PKU (this host's; karn's guests never have
# CR4.PKE): Linux allocates no key there (pkey_alloc and pkey_free are EINVAL) and
# pkey_mprotect takes only -1, "no key".


def sys_pkey_mprotect(task: Task, addr: int, length: int, prot: int, pkey: int) -> int:
    if addr & (PAGE - 1) or s32(prot) & ~PROT_KNOWN:
        raise SyscallError(errno.EINVAL)
    if length and s32(pkey) != -1:
        raise SyscallError(errno.EINVAL)  # a key never allocated
    return sys_mprotect(task, addr, length, prot)


def sys_pkey_alloc(task: Task, flags: int, access_rights: int) -> int:
    raise SyscallError(errno.EINVAL)


def sys_pkey_free(task: Task, pkey: int) -> int:
    raise SyscallError(errno.EINVAL)


def sys_mremap(task: Task, old: int, old_len: int, new_len: int, flags: int, new_addr: int) -> int:
    """A shared file mapping keeps its file when it moves, grows or shrinks (_mremap moves
    the pieces); grown pages show the file and are written back to it, as on Linux."""
    mm = task.process.mm
    shared = _shared_at(mm, old) if mm.shared_files and not old & (PAGE - 1) else None
    in_place = shared is not None and mm.memory.maps_file(old, old + PAGE)
    result = _mremap(task, old, old_len, new_len, flags, new_addr)
    old_len, new_len = page_up(old_len), page_up(new_len)
    if shared is not None and new_len > old_len:
        file, off = shared
        grown, grown_off = result + old_len, off + old_len
        if in_place and isinstance(file, HostFile):
            _map_in_place(mm, file, grown, new_len - old_len, grown_off)
        else:
            _fill_from_file(task.mem, file, grown, new_len - old_len, grown_off)
            _share(mm, grown, file, grown_off, new_len - old_len)
    return result


def _shared_at(mm: AddressSpace, addr: int) -> tuple[OpenFile, int] | None:
    """The file and file offset of the shared file mapping at addr, if one is there."""
    for base, (file, off, length) in mm.shared_files.items():
        if base <= addr < base + length:
            return file, off + (addr - base)
    return None


def _mremap(task: Task, old: int, old_len: int, new_len: int, flags: int, new_addr: int) -> int:
    mm = task.process.mm
    flags = s32(flags)
    if old & (PAGE - 1) or flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP):
        raise SyscallError(errno.EINVAL)
    if flags & MREMAP_FIXED and not flags & MREMAP_MAYMOVE:
        raise SyscallError(errno.EINVAL)
    if flags & MREMAP_DONTUNMAP:
        raise SyscallError(errno.EINVAL)
    old_len, new_len = page_up(old_len), page_up(new_len)
    if new_len == 0 or old_len == 0:
        raise SyscallError(errno.EINVAL)
    vma = mm.find_vma(old)
    if vma is None or not mm.is_mapped(old, old + old_len):
        raise SyscallError(errno.EFAULT)
    prot, name, charged, shared_vma, no_write = vma.prot, vma.name, vma.charged, \
        vma.shared, vma.no_write
    offset = vma.offset + (old - vma.start)
    if new_len <= old_len and not flags & MREMAP_FIXED:
        if new_len < old_len:
            if mm.shared_files:
                write_back(task.mem, mm, old + new_len, old + old_len, forget=True)
            mm.unmap(old + new_len, old_len - new_len)
        return old
    # Grown or moved host-shared memory is shared again at its new pages, but only this
    # process's: the other processes keep the old pages (Linux moves them for all).
    shared = mm.memory.is_shared(old, old + old_len)
    if not flags & MREMAP_FIXED and not mm.overlaps(old + old_len, old + new_len):
        if old + new_len <= mm.region.mmap_top:
            mm.map(old + old_len, new_len - old_len, prot, name, offset + old_len, charged,
                   shared_vma, no_write)
            if shared:
                mm.memory.share_anonymous(old + old_len, new_len - old_len)
            return old
    if not flags & MREMAP_MAYMOVE:
        raise SyscallError(errno.ENOMEM)
    if flags & MREMAP_FIXED:
        if new_addr & (PAGE - 1):
            raise SyscallError(errno.EINVAL)
        target = new_addr
    else:
        target = mm.find_free(new_len)
    keep = min(old_len, new_len)
    data = task.mem.read(old, keep)
    # Shared file pieces move with the pages (written back now, tracked at the target).
    moved = [
        (base - old, piece, mm.memory.maps_file(base, base + PAGE))
        for base, piece in mm.shared_files.items() if old <= base < old + keep
    ]
    for _, (file, _, _), _ in moved:
        file.refs += 1  # held across the move
    if mm.shared_files:
        write_back(task.mem, mm, old, old + old_len, forget=True)
        write_back(task.mem, mm, target, target + new_len, forget=True)
    mm.map(target, new_len, prot, name, offset, charged, shared_vma, no_write)
    if shared:
        mm.memory.share_anonymous(target, new_len)
    task.mem.write(target, data)
    mm.unmap(old, old_len)
    for rel, (file, off, length), in_place in moved:
        if in_place and isinstance(file, HostFile):  # the file's pages again, not a copy
            _map_in_place(mm, file, target + rel, min(length, keep - rel), off)
        else:
            _share(mm, target + rel, file, off, min(length, keep - rel))
        FdTable.unref(file)
    return target


def sys_madvise(task: Task, addr: int, length: int, advice: int) -> int:
    if addr & (PAGE - 1):
        raise SyscallError(errno.EINVAL)
    length = page_up(length)
    if length == 0:
        return 0
    mm = task.process.mm
    if not mm.is_mapped(addr, addr + length):
        raise SyscallError(errno.ENOMEM)
    if s32(advice) in (MADV_DONTNEED, MADV_FREE, MADV_REMOVE):
        # Anonymous private memory reads back as zeros after this, shared memory keeps
        # its data, as on Linux (MADV_REMOVE's hole punch aside).
        mm.memory.drop_pages(addr, length)
    return 0


def sys_msync(task: Task, addr: int, length: int, flags: int) -> int:
    if addr & (PAGE - 1):
        raise SyscallError(errno.EINVAL)
    if not task.process.mm.is_mapped(addr, addr + page_up(length)):
        raise SyscallError(errno.ENOMEM)
    write_back(task.mem, task.process.mm, addr, addr + page_up(length), forget=False)
    return 0


def sys_mlock(task: Task, addr: int, length: int) -> int:
    return 0


def sys_munlock(task: Task, addr: int, length: int) -> int:
    return 0


HANDLERS = {
    "brk": sys_brk,
    "mmap": sys_mmap,
    "munmap": sys_munmap,
    "mprotect": sys_mprotect,
    "mremap": sys_mremap,
    "madvise": sys_madvise,
    "msync": sys_msync,
    "mlock": sys_mlock,
    "munlock": sys_munlock,
    "pkey_mprotect": sys_pkey_mprotect,
    "pkey_alloc": sys_pkey_alloc,
    "pkey_free": sys_pkey_free,
}

NOTES = {
    "pkey_alloc": "EINVAL, as Linux on a CPU without protection keys.",
    "pkey_free": "EINVAL, as Linux on a CPU without protection keys (no key is allocated).",
    "pkey_mprotect": "Key -1 is mprotect; any other key EINVAL, as Linux on a CPU without "
    "protection keys.",
    "mmap": "MAP_SHARED memory stays shared with forked processes. A host file (a "
    "volume's, the root's, /tmp's and /dev/shm's after the first fork) is mapped itself: "
    "coherent with read/write and with every process mapping it, guest or host. An "
    "in-memory file's (/tmp before the first fork) MAP_SHARED mapping is a copy written "
    "back to the file on msync, munmap and exit. A MAP_PRIVATE mapping of a host file is "
    "the file's pages, copied on write; of an in-memory file, a copy. Pages past the end "
    "of a file read zeros (no SIGBUS).",
    "mprotect": "Bookkeeping only: page tables are fixed at start (PVM), so protections are "
    "not enforced by the MMU. PROT_WRITE on a MAP_SHARED mapping of a file not open for "
    "writing is EACCES, as Linux.",
    "madvise": "MADV_DONTNEED/FREE/REMOVE free the pages (private ones read back as zeros, "
    "shared ones keep their data; MADV_REMOVE punches no hole); other advice is accepted "
    "and ignored.",
    "msync": "Writes shared file mappings back to their files.",
    "mremap": "MREMAP_DONTUNMAP gives EINVAL. A grown MAP_PRIVATE file mapping reads "
    "zeros past its old end, not the file's data. Grown or moved MAP_SHARED memory is "
    "shared at its new pages within this process only (other processes keep the old).",
    "mlock": "Accepted without effect: nothing is pinned (the host may swap guest memory) "
    "and an unmapped range is not reported (ENOMEM on Linux).",
    "munlock": "Accepted without effect (see mlock).",
}
