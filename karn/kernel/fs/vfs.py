"""The mount table and guest path resolution.

Paths are resolved component by component in guest terms, the way Linux's namei does:
".." never climbs above the guest root, symlinks are read and spliced in as guest paths
(absolute targets restart at the guest root), and every step may cross a mount point.
Filesystems only ever see plain, symlink-free components relative to their own root.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from karn.abi.errno import SyscallError
from karn.kernel.fs.constants import NAME_MAX, S_IFDIR, S_IFLNK, S_IFMT, SYMLOOP_MAX, OFlag
from karn.kernel.fs.file import OpenFile
from karn.kernel.fs.filesystem import Filesystem, Rel, new_dev
from karn.kernel.fs.stat import Stat

Comps = tuple[str, ...]
# Paths whose one-step answer is remembered (Vfs.whole): all forgotten past this many, and
# only paths of at most this many characters and components, base included (each
# component is a string object of its own: a guest looking up endless long or deep names
# made the monitor hold 45-90 MiB with 4,096 of them; a program's own paths are shorter)
WHOLES_KEPT = 1024
WHOLE_PATH_KEPT = 256
WHOLE_COMPS_KEPT = 16


def _keepable(path: str, base: Comps) -> bool:
    """Whether Vfs.whole may remember path's answer (its base: () for an absolute path)."""
    return (len(base) + path.count("/") < WHOLE_COMPS_KEPT
            and len(path) + len(base) + sum(map(len, base)) <= WHOLE_PATH_KEPT)


def split_path(path: str) -> list[str]:
    return [c for c in path.split("/") if c and c != "."]


def join_path(comps: Comps | list[str]) -> str:
    return "/" + "/".join(comps)


class Resolved:
    __slots__ = ("comps", "fs", "rel", "stat", "magic", "virtual", "trailing_slash")

    def __init__(
        self,
        comps: Comps,
        fs: Filesystem,
        rel: Rel,
        stat: Stat | None,
        magic: OpenFile | None = None,
        virtual: bool = False,
        trailing_slash: bool = False,
    ) -> None:
        self.comps = comps  # the absolute guest path, normalised, symlinks resolved
        self.fs = fs
        self.rel = rel  # the path inside fs
        self.stat = stat  # None if the last component does not exist (its parent does)
        self.magic = magic  # /proc/self/fd/N: the file it stands for
        self.virtual = virtual  # a directory that exists only to hold a mount point
        self.trailing_slash = trailing_slash

    @property
    def path(self) -> str:
        return join_path(self.comps)

    @property
    def is_dir(self) -> bool:
        return self.stat is not None and self.stat.mode & S_IFMT == S_IFDIR

    def require(self) -> Stat:
        if self.stat is None:
            raise SyscallError(errno.ENOENT)
        return self.stat


class Deferred(Filesystem):
    """Stands in the mount table for a filesystem made on the first lookup below its
    mount point (Vfs.mount_deferred), so that a run that never looks there never imports
    its code. Never looked up itself: Vfs.locate puts the real one in its place."""

    def __init__(self, make: Callable[[], Filesystem]) -> None:
        self.make = make  # (no device number: it is not a filesystem the guest sees)


class Vfs:
    def __init__(self, root: Filesystem) -> None:
        self._mounts: dict[Comps, Filesystem] = {(): root}
        self._made: dict[Comps, Filesystem] = {}  # deferred mounts' filesystems, once made
        self._depths: list[int] = [0]  # distinct mount depths, deepest first
        self._virtual: dict[Comps, set[str]] = {}  # dir -> child names that are mounts
        self._virtual_dev = new_dev()
        # mount point -> the way to it (_way_to): plain, not, or what to check each time
        self._ways: dict[Comps, bool | tuple[tuple[Filesystem, Rel], ...]] = {}
        # path (with its base if relative) -> _whole(); emptied when the mounts change
        self._wholes: dict[object, tuple[Comps, Filesystem, Rel, int] | bool] = {}

    def mount(self, guest_path: str, fs: Filesystem) -> None:
        comps = tuple(split_path(guest_path))
        if comps in self._mounts and comps:
            raise ValueError(f"two filesystems mounted at {guest_path}")
        self._mounts[comps] = fs
        self._depths = sorted({len(c) for c in self._mounts}, reverse=True)
        self._forget_ways()
        for i in range(len(comps)):
            self._virtual.setdefault(comps[:i], set()).add(comps[i])

    def mount_deferred(self, guest_path: str, make: Callable[[], Filesystem]) -> None:
        """Mount the filesystem make() returns, made on the first lookup below guest_path
        (make must import what it needs: a module imported then is one more to load
        before a host fork made while other threads run, see FsContext)."""
        self.mount(guest_path, Deferred(make))

    def _make(self, comps: Comps, deferred: Deferred) -> Filesystem:
        """The deferred mount's filesystem, the same for every thread: without a lock (one
        held at a host fork would stay held in the child), threads making it at once
        keep the first one stored."""
        fs = self._made.setdefault(comps, deferred.make())
        self._mounts[comps] = fs
        return fs

    def replace(self, guest_path: str, fs: Filesystem) -> None:
        """Put fs in the place of the filesystem mounted at guest_path."""
        comps = tuple(split_path(guest_path))
        if comps not in self._mounts:
            raise ValueError(f"nothing mounted at {guest_path}")
        self._mounts[comps] = fs
        self._forget_ways()

    def _forget_ways(self) -> None:
        """The mounts changed: what was remembered of lookups goes. New dictionaries, not
        cleared ones: a lookup another thread began before the change stores its answer
        in the old one (cleared, it would keep naming the filesystem replaced, as at a
        fork's move of a tmpfs to the host)."""
        self._ways = {}
        self._wholes = {}

    def mount_list(self) -> list[tuple[str, Filesystem]]:
        """Every mount (deferred ones made now: the list is for what looks at them all)."""
        return [(join_path(c), self._make(c, fs) if isinstance(fs, Deferred) else fs)
                for c, fs in sorted(self._mounts.items())]

    def mount_children(self, comps: Comps) -> set[str]:
        """Names directly below comps that are mount points or lead to one."""
        return self._virtual.get(comps, set())

    def locate(self, comps: Comps) -> tuple[Filesystem, Rel]:
        n = len(comps)
        for depth in self._depths:
            if depth <= n:
                fs = self._mounts.get(comps[:depth])
                if fs is not None:
                    if fs.__class__ is Deferred:
                        fs = self._make(comps[:depth], fs)
                    return fs, comps[depth:]
        raise AssertionError("the root mount is missing")

    def lstat(self, comps: Comps) -> tuple[Stat, bool]:
        """(stat, virtual): a missing dir on the way to a mount point is shown as a dir."""
        fs, rel = self.locate(comps)
        try:
            return fs.lstat(rel), False
        except SyscallError as err:
            if err.errno not in (errno.ENOENT, errno.ENOTDIR) or comps not in self._virtual:
                raise
            return Stat(
                mode=S_IFDIR | 0o755,
                ino=hash(comps) & 0xFFFFFFFF,
                dev=self._virtual_dev,
                nlink=2,
                size=4096,
            ), True

    def whole(self, path: str, base: Comps) -> tuple[Comps, Filesystem, Rel] | None:
        """(components, filesystem, path inside it) of a path one lookup there can find:
        no '..', '.' or trailing slash, a filesystem that can say (whole_lookups), and
        the way to its mount point plain (_plain_above). None: only the walk can say. A
        host path of N components then costs one host lookup, not N. What the path
        string and the mounts decide is remembered (a program looks the same paths up
        again and again: a web server its pages, an interpreter its modules); the way
        to a mount is asked each time (a writable one may change)."""
        wholes = self._wholes  # (the one of the mounts this lookup saw: _forget_ways)
        relative = path[:1] != "/"
        key = (path, base) if relative else path
        found = wholes.get(key)
        if found is None:
            found = self._whole(path, base)
            if _keepable(path, base if relative else ()):
                if len(wholes) >= WHOLES_KEPT:
                    wholes.clear()
                wholes[key] = found
        if found is False:
            return None
        comps, fs, rel, top = found  # type: ignore[misc]
        if top > 1 and not self._plain_above(comps[:top]):
            return None
        return comps, fs, rel

    def _whole(self, path: str, base: Comps) -> tuple[Comps, Filesystem, Rel, int] | bool:
        """whole()'s answer as far as the path and the mounts decide: False, or
        (components, filesystem, path in it, depth of its mount point)."""
        if not path or path[-1] == "/":
            return False
        parts = split_path(path)
        if ".." in parts or path.rsplit("/", 1)[-1] == ".":
            return False
        comps = tuple(parts) if path[0] == "/" else (*base, *parts)
        fs, rel = self.locate(comps)
        if not fs.whole_lookups:
            return False
        return comps, fs, rel, len(comps) - len(rel)

    def _plain_above(self, mount: Comps) -> bool:
        """Whether every step on the way to the mount point is a mount point or a
        directory, no symlink, which the walk would pass straight through. A volume at
        /usr/share/nginx/html, as users mount a site, then costs no walk per request (an
        open 2x dearer). Steps of a read-only filesystem (an image's root, most often)
        are looked at once; a run of steps of a writable one is checked at each lookup,
        by one host lookup (Filesystem.plain_dirs): the guest, another thread or another
        process sharing it may rename, remove or replace a step by a symlink."""
        ways = self._ways
        way = ways.get(mount)
        if way is None:
            way = ways[mount] = self._way_to(mount)
        if isinstance(way, bool):
            return way
        return all(fs.plain_dirs(rel) for fs, rel in way)

    def _way_to(self, mount: Comps) -> bool | tuple[tuple[Filesystem, Rel], ...]:
        """True: every step is a mount point or a read-only filesystem's directory (one
        missing there shows as a directory on the way to the mount, as in the walk);
        False: a read-only step is something else (a symlink: Debian's /lib); else each
        run of steps in one writable filesystem, as (filesystem, its deepest step
        there)."""
        checks: list[tuple[Filesystem, Rel]] = []
        for depth in range(1, len(mount)):
            step = mount[:depth]
            if step in self._mounts:
                continue
            fs, rel = self.locate(step)
            if not fs.readonly:
                if checks and checks[-1][0] is fs and checks[-1][1] == rel[:-1]:
                    checks[-1] = (fs, rel)  # the run goes on: one lookup checks it all
                else:
                    checks.append((fs, rel))
                continue
            try:
                st, _ = self.lstat(step)
            except SyscallError:
                return False
            if st.mode & S_IFMT != S_IFDIR:
                return False
        return tuple(checks) or True

    def _resolve_whole(self, path: str, base: Comps, follow: bool) -> Resolved | None:
        """path found by one lookup (whole); None when that fails (the walk says which
        error, or finds a missing last component's parent) or ends at a symlink to
        follow."""
        found = self.whole(path, base)
        if found is None:
            return None
        comps, fs, rel = found
        try:
            st = fs.lstat(rel)
        except SyscallError:
            return None
        if follow and st.mode & S_IFMT == S_IFLNK:
            return None
        return Resolved(comps, fs, rel, st)

    def open_whole(self, path: str, base: Comps, flags: int) -> OpenFile | None:
        """The file an open without O_CREAT or O_PATH finds, opened by its filesystem in
        one step where it can (opens_whole); None when that fails (a symlink on the way
        or at the end): the walk then decides, as before. A missing component (ENOENT:
        every one before it a directory, no symlink) is the walk's answer too, unless a
        mount below the path could make it a directory the walk shows."""
        found = self.whole(path, base)
        if found is None or not found[1].opens_whole:
            return None
        comps, fs, rel = found
        try:
            return fs.open(rel, flags & ~int(OFlag.EXCL), 0, join_path(comps))
        except SyscallError as err:
            if err.errno == errno.ENOENT and self._missing_for_the_walk(comps, rel):
                raise
            return None

    def _missing_for_the_walk(self, comps: Comps, rel: Rel) -> bool:
        """After the one-step open of rel (comps below its mount point) said ENOENT:
        whether the walk would say so too: no mount below the path that could show a step
        as a directory, and no name longer than NAME_MAX (the walk's ENAMETOOLONG, where
        the host allows such names)."""
        top = len(comps) - len(rel)
        return not any(comps[:depth] in self._virtual
                       for depth in range(top + 1, len(comps) + 1)) and \
            all(len(name.encode(errors="surrogateescape")) <= NAME_MAX for name in rel)

    def resolve(self, path: str, base: Comps, follow: bool = True) -> Resolved:
        """Resolve path (relative ones from base, a directory's guest components).

        follow: whether a symlink in the last component is followed. The last component
        may be missing (stat None) as long as its parent exists, for creating calls.
        """
        if not path:
            raise SyscallError(errno.ENOENT)
        last_raw = path.rstrip("/").rsplit("/", 1)[-1]
        trailing = (path.endswith("/") or last_raw in (".", "..")) and path.strip("/") != ""
        if trailing:
            follow = True  # "link/" and "link/." mean the directory the link points to
        whole = self._resolve_whole(path, base, follow)
        if whole is not None:
            return whole
        pending = split_path(path)
        pending.reverse()
        comps: list[str] = [] if path.startswith("/") else list(base)
        links = 0
        st: Stat | None = None
        virtual = False
        if not pending:  # "/" or "." or the base itself
            st, virtual = self.lstat(tuple(comps))
        while pending:
            name = pending.pop()
            if name == "..":
                if comps:
                    comps.pop()
                if not pending:
                    st, virtual = self.lstat(tuple(comps))
                continue
            if len(name.encode(errors="surrogateescape")) > NAME_MAX:
                raise SyscallError(errno.ENAMETOOLONG)
            comps.append(name)
            key = tuple(comps)
            last = not pending
            try:
                st, virtual = self.lstat(key)
            except SyscallError as err:
                if err.errno == errno.ENOENT and last:
                    st, virtual = None, False
                    break
                raise
            fmt = st.mode & S_IFMT
            if fmt == S_IFLNK and (follow or not last):
                links += 1
                if links > SYMLOOP_MAX:
                    raise SyscallError(errno.ELOOP)
                fs, rel = self.locate(key)
                magic = fs.magic_link(rel)
                if magic is not None:
                    if last:
                        return Resolved(key, fs, rel, magic.stat(), magic, False, trailing)
                    if not magic.is_dir:
                        raise SyscallError(errno.ENOTDIR)
                    target = magic.path
                else:
                    target = fs.readlink(rel)
                comps.pop()
                if target.startswith("/"):
                    comps.clear()
                elif not target:
                    raise SyscallError(errno.ENOENT)
                parts = split_path(target)
                if not parts:  # a link to "/" or "."
                    st, virtual = self.lstat(tuple(comps))
                pending.extend(reversed(parts))
                continue
            if not last and fmt != S_IFDIR:
                raise SyscallError(errno.ENOTDIR)
        key = tuple(comps)
        if trailing and st is not None and st.mode & S_IFMT != S_IFDIR:
            raise SyscallError(errno.ENOTDIR)
        fs, rel = self.locate(key)
        return Resolved(key, fs, rel, st, None, virtual, trailing)
