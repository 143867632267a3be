"""Layer tars: written reproducibly, extracted safely (whiteouts, no path escapes).

Writing: entries sorted by path, mtime fixed (SOURCE_DATE_EPOCH or 0), owner 0:0 with no
names, PAX format, gzip with no name and mtime 0 -> the same inputs give the same bytes.

Extracting: every path is resolved inside the destination with symlinks interpreted as
the guest would (an absolute link target starts again at the destination), so neither
`../x`, `/etc/x`, a symlinked parent directory nor a hardlink can place or reach a file
outside it. The whole extraction works through directory fds below the destination's
(see _Tree): no host path is given to the kernel, no link is followed by a syscall.
Whiteouts follow the OCI image spec: `.wh.NAME` deletes NAME from lower layers,
`.wh..wh..opq` empties its directory of lower-layer entries. An image may expand to
KARN_MAX_EXTRACT bytes of tar stream (see ExtractLimit); sparse files keep their holes.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any, cast

from karn.errors import ImageError, UsageError
from karn.image.oci import (
    GZIP_LAYERS,
    LAYER_TYPES,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
)
from karn.image.paths import MAX_LINK_HOPS
from karn.image.progress import Progress
from karn.sizes import parse_size

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Entry:
    """One file system object in a layer being built."""

    path: str  # absolute guest path
    kind: str  # "file", "dir" or "symlink"
    mode: int = 0o755
    source: str | None = None  # host file with the content (kind "file")
    target: str | None = None  # link target (kind "symlink")


@dataclass(frozen=True)
class LayerBlob:
    digest: str  # of the gzip blob
    size: int
    diff_id: str  # of the uncompressed tar (the config's rootfs.diff_ids)


def source_date_epoch() -> int:
    try:
        return int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    except ValueError:
        return 0


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """Add the missing parent directories (0755) and sort by path; later duplicates win."""
    by_path: dict[str, Entry] = {}
    for e in entries:
        path = "/" + "/".join(c for c in e.path.split("/") if c)
        by_path[path] = Entry(path, e.kind, e.mode, e.source, e.target)
        parent = os.path.dirname(path)
        while parent != "/" and parent not in by_path:
            by_path[parent] = Entry(parent, "dir", 0o755)
            parent = os.path.dirname(parent)
    by_path.pop("/", None)
    return [by_path[p] for p in sorted(by_path)]


class _HashingSink:
    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return self.sink.write(data)


def write_layer(store: Any, entries: Iterable[Entry]) -> LayerBlob:
    """Write a gzip tar layer into the store; returns its digest, size and diff_id."""
    mtime = source_date_epoch()
    entries = list(with_parents(entries))
    progress = Progress("layer", _content_size(entries), "writing")
    with store.blob_writer() as blob:
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=blob, mtime=0, compresslevel=6)
        plain = _HashingSink(gz)
        sink = cast(IO[bytes], plain)  # tarfile's stream mode needs only write()
        with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for e in entries:
                info = tarfile.TarInfo(e.path.lstrip("/"))
                info.mtime = mtime
                info.mode = e.mode & 0o7777
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if e.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif e.kind == "symlink":
                    info.type = tarfile.SYMTYPE
                    info.linkname = e.target or ""
                    tar.addfile(info)
                else:
                    assert e.source is not None
                    try:
                        with open(e.source, "rb") as src:
                            info.size = os.fstat(src.fileno()).st_size
                            tar.addfile(info, _Counted(src, progress))
                    except OSError as err:  # e.g. removed or shortened while we read it
                        raise ImageError(f"{e.source}: {err.strerror or err}") from None
        gz.close()
        digest = blob.commit("layer")
    progress.finish()
    return LayerBlob(digest, blob.size, "sha256:" + plain.hash.hexdigest())


def _content_size(entries: list[Entry]) -> int:
    total = 0
    for e in entries:
        if e.kind == "file" and e.source is not None:
            try:
                total += os.stat(e.source).st_size
            except OSError:
                pass  # write_layer says what is wrong with it
    return total


class _Counted:
    """A file whose reads advance a Progress (tarfile copies a file in blocks)."""

    def __init__(self, f: IO[bytes], progress: Progress) -> None:
        self.f = f
        self.progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.progress.advance(len(data))
        return data


def tree_entries(host_root: str, guest_root: str = "/") -> list[Entry]:
    """Everything under a host directory, as entries below guest_root (sockets etc. skipped)."""
    out: list[Entry] = []
    host_root = os.path.abspath(host_root)
    for dirpath, dirnames, filenames in os.walk(host_root):
        dirnames.sort()
        rel = os.path.relpath(dirpath, host_root)
        base = guest_root if rel == "." else os.path.join(guest_root, rel)
        for name in sorted(dirnames + filenames):
            host = os.path.join(dirpath, name)
            guest = os.path.join(base, name)
            try:
                st = os.lstat(host)
                target = os.readlink(host) if stat.S_ISLNK(st.st_mode) else None
            except FileNotFoundError:
                continue  # removed while we walk: as if it had not been there
            except OSError as err:
                raise ImageError(f"{host}: {err.strerror}") from None
            mode = stat.S_IMODE(st.st_mode)
            if target is not None:
                out.append(Entry(guest, "symlink", 0o777, target=target))
            elif stat.S_ISDIR(st.st_mode):
                out.append(Entry(guest, "dir", mode))
            elif stat.S_ISREG(st.st_mode):
                out.append(Entry(guest, "file", mode, source=host))
        # os.walk does not descend into symlinked directories: they stay links
    return out


# ---- extraction


class _HashingReader:
    """Reads a blob while hashing it, so a corrupted layer is refused."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.hash.update(data)
        return data

    def drain(self) -> str:
        while self.read(1 << 20):
            pass
        return "sha256:" + self.hash.hexdigest()


EXPANSION = 100  # default limit: 100 x the compressed layers ...
EXTRA = 64 << 20  # ... + 64 MiB (and never more than the store's free space)


class ExtractLimit:
    """How many bytes of tar stream (headers and file data, holes of sparse files excluded)
    an image may expand to: bounds the disk, time and memory one extraction can take."""

    def __init__(self, limit: int, why: str) -> None:
        self.left = limit
        self.limit = limit
        self.why = why

    @classmethod
    def for_image(cls, compressed: int, store_dir: str) -> ExtractLimit:
        text = os.environ.get("KARN_MAX_EXTRACT")
        if text:
            try:
                limit, why = parse_size(text), "KARN_MAX_EXTRACT"
            except ValueError as err:
                raise UsageError(f"KARN_MAX_EXTRACT={text}: {err}") from None
        else:
            limit = EXTRA + EXPANSION * compressed
            why = f"{EXPANSION} x the compressed layers + {EXTRA >> 20} MiB; see KARN_MAX_EXTRACT"
        st = os.statvfs(store_dir)
        free = st.f_bavail * st.f_frsize
        if free < limit:
            limit, why = free, "the free space of the image store"
        return cls(limit, why)


class _LimitedReader:
    """The uncompressed tar stream of a layer, charged to the image's ExtractLimit."""

    def __init__(self, f: IO[bytes], limit: ExtractLimit, label: str) -> None:
        self.f = f
        self.limit = limit
        self.label = label

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n if 0 <= n <= 1 << 20 else 1 << 20)
        self.limit.left -= len(data)
        if self.limit.left < 0:
            raise ImageError(
                f"{self.label}: the image expands to more than {self.limit.limit / (1 << 20):.1f}"
                " MiB "
                f"(the limit: {self.limit.why})"
            )
        return data


def _archive_path(name: str, label: str) -> list[str]:
    """The components of a tar member name; refuses absolute names, '..' and NUL."""
    if name.startswith("/"):
        raise ImageError(f"{label}: absolute path {name!r} in layer")
    if "\0" in name:
        raise ImageError(f"{label}: path {name!r} in layer has a NUL byte")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"{label}: path {name!r} in layer leaves the root")
    return parts


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_A_DIR = (errno.ELOOP, errno.ENOTDIR)


class _Tree:
    """The root being extracted, reached only through file descriptors.

    Every path is walked one component at a time from the root's fd, each opened with
    O_NOFOLLOW relative to its parent's fd; the walk reads symlinks itself and resolves
    them as the guest would ('..' stops at the root, an absolute target restarts there).
    Every change (mkdir, create, chmod, link, symlink, unlink) is relative to a directory
    fd found this way and names one component, never followed: no entry of any layer can
    make a syscall act on a host path outside the root.
    """

    def __init__(self, root: str) -> None:
        self.fd = os.open(root, _DIR_FLAGS)

    def close(self) -> None:
        os.close(self.fd)

    def _reopen(self, names: list[str]) -> int:
        """The fd of a directory reached by real directories only (a walk's resolved names)."""
        fd = os.dup(self.fd)
        try:
            for name in names:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def walk(self, parts: list[str], create: bool = False) -> tuple[int, list[str]]:
        """An fd of the directory at guest path parts, and its resolved names below the root.

        With create=True missing directories are made (0755), as tar extraction needs.
        Raises FileNotFoundError/NotADirectoryError, or ImageError on a symlink loop.
        """
        pending = list(parts)
        current: list[str] = []
        fd = os.dup(self.fd)
        hops = 0
        try:
            while pending:
                comp = pending.pop(0)
                if comp in ("", "."):
                    continue
                if comp == "..":
                    if current:
                        current.pop()
                        os.close(fd)
                        fd = -1
                        fd = self._reopen(current)
                    continue
                try:
                    child = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    child = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except OSError as err:
                    if err.errno not in _NOT_A_DIR:
                        raise
                    target = self._link(fd, comp)
                    hops += 1
                    if hops > MAX_LINK_HOPS:
                        raise ImageError(
                            f"too many levels of symbolic links at /{'/'.join(parts)}"
                        ) from None
                    if target.startswith("/"):
                        current = []
                        os.close(fd)
                        fd = -1
                        fd = os.dup(self.fd)
                    pending[:0] = target.split("/")
                    continue
                os.close(fd)
                fd = child
                current.append(comp)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        return fd, current

    @staticmethod
    def _link(dir_fd: int, name: str) -> str:
        try:
            return os.readlink(name, dir_fd=dir_fd)
        except OSError as err:
            if err.errno == errno.EINVAL:  # not a symlink: a file where a directory should be
                raise NotADirectoryError(errno.ENOTDIR, "Not a directory", name) from None
            raise


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(dir_fd: int, name: str) -> None:
    """Delete one entry of a directory (a directory recursively); links are not followed."""
    st = _lstat(dir_fd, name)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)  # fd-based: never follows a link out
    else:
        os.unlink(name, dir_fd=dir_fd)


def _open_layer(f: IO[bytes], media_type: str, label: str) -> IO[bytes]:
    if media_type == OCI_LAYER_ZSTD or media_type.endswith("+zstd"):
        raise ImageError(f"{label}: zstd-compressed layers are not supported yet")
    if media_type not in LAYER_TYPES:
        raise ImageError(f"{label}: unsupported layer media type {media_type}")
    if media_type in GZIP_LAYERS:
        return cast(IO[bytes], gzip.GzipFile(fileobj=f, mode="rb"))  # a binary stream
    return f


def extract_layer(root: str, f: IO[bytes], media_type: str, label: str,
                  limit: ExtractLimit) -> None:  # fmt: skip
    """Apply one layer (a file object of its blob) on top of the tree at root."""
    stream = _LimitedReader(_open_layer(f, media_type, label), limit, label)
    created: set[tuple[str, ...]] = set()
    tree = _Tree(root)
    name = ""
    try:
        with tarfile.open(fileobj=cast(IO[bytes], stream), mode="r|") as tar:  # read() only
            for member in tar:
                # TarFile.members (undocumented) indexes past members: a stream needs none
                tar.members.clear()  # type: ignore[attr-defined]
                name = member.name
                _apply(tree, tar, member, created, label)
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error, ValueError,
            OverflowError, UnicodeError) as err:  # fmt: skip
        raise ImageError(f"{label}: layer is not a valid tar archive ({err})") from None
    except NotADirectoryError:
        raise ImageError(f"{label}: {name}: a parent is not a directory") from None
    except OSError as err:
        raise ImageError(f"{label}: extracting {name}: {err.strerror}") from None
    finally:
        tree.close()


def _apply(
    tree: _Tree,
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    created: set[tuple[str, ...]],
    label: str,
) -> None:
    parts = _archive_path(member.name, label)
    if not parts:
        return  # the root directory itself
    *dir_parts, base = parts
    parent, names = tree.walk(dir_parts, create=True)
    try:
        _apply_in(parent, names, base, tree, tar, member, created, label)
    finally:
        os.close(parent)


def _apply_in(
    parent: int,
    names: list[str],
    base: str,
    tree: _Tree,
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    created: set[tuple[str, ...]],
    label: str,
) -> None:
    if base == OPAQUE:
        for child in os.listdir(parent):
            if (*names, child) not in created:
                _remove(parent, child)
        return
    if base.startswith(WHITEOUT):
        hidden = base[len(WHITEOUT) :]
        if hidden in ("", ".", ".."):
            raise ImageError(f"{label}: whiteout {member.name!r} names no entry")
        _remove(parent, hidden)
        return
    mode = member.mode & 0o1777  # no setuid/setgid bits in the host's cache
    st = _lstat(parent, base)
    if member.isdir():
        if st is not None and not stat.S_ISDIR(st.st_mode):
            _remove(parent, base)
            st = None
        if st is None:
            os.mkdir(base, 0o755, dir_fd=parent)
        fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
        try:
            os.fchmod(fd, mode | 0o700)  # stays writable for the next layer and for rm
        finally:
            os.close(fd)
        created.add((*names, base))
        return
    if not (member.issym() or member.islnk() or member.isreg()):
        return  # devices and fifos: the guest has its own /dev
    if st is not None:
        _remove(parent, base)
    if member.issym():
        if "\0" in member.linkname:
            raise ImageError(f"{label}: symlink {member.name!r} has a NUL byte")
        os.symlink(member.linkname, base, dir_fd=parent)
    elif member.islnk():
        _hardlink(parent, base, tree, member, label)
    else:
        _write_file(parent, base, tar, member, mode, label)
    created.add((*names, base))


def _hardlink(parent: int, base: str, tree: _Tree, member: tarfile.TarInfo, label: str) -> None:
    link_parts = _archive_path(member.linkname, label)
    if not link_parts:
        raise ImageError(f"{label}: hardlink {member.name!r} to the root directory")
    src_dir, _ = tree.walk(link_parts[:-1])
    try:
        st = _lstat(src_dir, link_parts[-1])
        if st is None or not stat.S_ISREG(st.st_mode):
            raise ImageError(f"{label}: hardlink {member.name!r} to a missing or non-regular file")
        os.link(link_parts[-1], base, src_dir_fd=src_dir, dst_dir_fd=parent, follow_symlinks=False)
    finally:
        os.close(src_dir)


def _write_file(parent: int, base: str, tar: tarfile.TarFile, member: tarfile.TarInfo,
                mode: int, label: str) -> None:  # fmt: skip
    src = tar.extractfile(member)
    assert src is not None
    blocks = _sparse_map(member, label) if member.sparse is not None else [(0, member.size)]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(base, flags, 0o600, dir_fd=parent)
    with os.fdopen(fd, "wb") as out:
        raw = cast(Any, src).raw  # unbuffered: reading stops at each block's end, never in a hole
        for offset, size in blocks:  # only the data of a sparse file: its holes stay holes
            raw.seek(offset)
            out.seek(offset)
            while size > 0:
                chunk = raw.read(min(size, 1 << 20))
                if not chunk:
                    raise ImageError(f"{label}: {member.name}: unexpected end of data")
                out.write(chunk)
                size -= len(chunk)
        out.truncate(member.size)
        os.fchmod(out.fileno(), mode | 0o400)


def _sparse_map(member: tarfile.TarInfo, label: str) -> list[tuple[int, int]]:
    """A sparse member's data blocks, checked: in order, not overlapping, inside the file."""
    sparse = cast(list[tuple[int, int]], member.sparse or [])  # typeshed: bytes (wrong)
    end = 0
    for offset, size in sparse:
        if offset < end or size < 0 or offset + size > member.size:
            raise ImageError(f"{label}: {member.name}: malformed sparse file map")
        end = offset + size
    return list(sparse)


def extract_image(store: Any, layers: list[dict[str, Any]], dest: str, label: str) -> None:
    """Extract an image's layers into dest (created atomically; absent on failure)."""
    tmp = tempfile.mkdtemp(prefix="rootfs-", dir=store.tmp_dir)
    try:
        os.chmod(tmp, 0o755)
        compressed = sum(os.stat(store.blob_path(x["digest"])).st_size for x in layers)
        limit = ExtractLimit.for_image(compressed, store.tmp_dir)
        for i, layer in enumerate(layers):
            what = f"{label} layer {i + 1}"
            with open(store.blob_path(layer["digest"]), "rb") as f:
                reader = _HashingReader(f)
                try:
                    blob = cast(IO[bytes], reader)  # read() only
                    extract_layer(tmp, blob, layer.get("mediaType", ""), what, limit)
                finally:  # a damaged blob is reported as such, not as the error it caused
                    if reader.drain() != layer["digest"]:
                        raise ImageError(f"{what}: blob {layer['digest']} is corrupted")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not os.path.isdir(dest):  # else: a concurrent run extracted it first
                raise
    except FileNotFoundError as err:
        raise ImageError(f"{label}: blob missing from the store: {err.filename}") from None
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def guess_layer_type(path: str) -> str:
    with open(path, "rb") as f:
        return OCI_LAYER_GZIP if f.read(2) == _GZIP_MAGIC else OCI_LAYER
