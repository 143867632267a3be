"""Gather the files a host program needs to run in a guest (like `ops run` / `ldd`).

The program, its PT_INTERP and its DT_NEEDED closure are found the way the dynamic
linker will look for them inside the guest, and each lands in the guest at the path where
the linker will look (content taken from the host's real path). glibc's search order:

    DT_RPATH of the loader and its loaders (only where there is no DT_RUNPATH),
    [LD_LIBRARY_PATH: deliberately not used; the host environment is not the guest's],
    DT_RUNPATH of the loader, /etc/ld.so.cache (or /etc/ld.so.conf when there is no
    usable cache), then the default directories.

musl's linker (PT_INTERP /lib/ld-musl-x86_64.so.1) is also libc, so its "libc.so" and
friends need no file, and it searches rpath/runpath, then /etc/ld-musl-x86_64.path or
/lib:/usr/local/lib:/usr/lib. Only plain directories are searched, not the
glibc-hwcaps/ subdirectories: the guest's ld.so falls back to the plain copy we provide.

The program's author writes its ELF names, so they only choose among files the user
shares (CollectRule): an absolute name or RPATH elsewhere is not followed, and the
guest's ld.so, finding nothing there, goes on as this search does.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Iterable

from karn import log
from karn.abi.errno import SyscallError
from karn.errors import ImageError
from karn.image.elfinfo import ElfInfo, inspect_elf, is_compatible_elf
from karn.image.shebang import BINPRM_BUF_SIZE, MAX_SCRIPT_DEPTH, parse_shebang

LD_SO_CACHE = "/etc/ld.so.cache"
LD_SO_CONF = "/etc/ld.so.conf"
# Debian's multiarch glibc: what $LIB and $PLATFORM expand to (checked with LD_DEBUG=libs).
DST_LIB = "lib/x86_64-linux-gnu"
DST_PLATFORM = "x86_64"
DEFAULT_DIRS = (
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
)
MUSL_PATH_FILE = "/etc/ld-musl-x86_64.path"
MUSL_DEFAULT_DIRS = ("/lib", "/usr/local/lib", "/usr/lib")
# musl's ld.so answers for these itself ("lib" + name + "."): see load_library in ldso.
_MUSL_BUILTIN = ("c.", "pthread.", "rt.", "m.", "dl.", "util.", "xnet.")

# ld.so.cache (glibc >= 2.32 writes only the new format) and its x86-64 entry flags.
_CACHE_MAGIC_NEW = b"glibc-ld.so.cache1.1"
_CACHE_MAGIC_OLD = b"ld.so-1.7.0"
_CACHE_HEADER = struct.Struct("<20sII")  # magic+version, nlibs, len_strings (then 24 bytes)
_CACHE_ENTRY = struct.Struct("<iIIIQ")  # flags, key, value, osversion, hwcap
_CACHE_FLAGS_X8664 = (0x0303, 0x0001)  # FLAG_ELF_LIBC6|FLAG_X8664_LIB64, or untyped libc6
# The standard library trees: an absolute RPATH, DT_NEEDED or PT_INTERP may point here.
SYSTEM_LIB_ROOTS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib")
_ORIGIN = ("$ORIGIN", "${ORIGIN}")

Reader = tuple[int, frozenset[int]]  # a uid and its groups


class CollectRule:
    """Which host files collection may put in a guest root (docs/images.md, "Collection").

    Without asking: the standard library trees, the program's own directory (and what
    its $ORIGIN paths name) and the paths given with --collect. An absolute DT_NEEDED
    name, RPATH/RUNPATH entry or PT_INTERP elsewhere is not followed. A library found
    through $ORIGIN or ld.so.conf outside those places must be readable by every user. A
    file the invoking user cannot read is never collected: karn checks that under sudo
    (SUDO_UID's user, by mode bits); a plain user's reads are the kernel's to refuse, and
    plain root reads everything, so for root only the places count.
    """

    def __init__(self, program: str, collect: Iterable[str] = (), label: str = "") -> None:
        self.program = label or program  # for messages
        own = os.path.dirname(os.path.realpath(program))
        # (a program in / would share the whole host: there, only its $ORIGIN counts)
        self.places = (*([own] if own != "/" else []), *(os.path.realpath(p) for p in collect))
        self.reader = _sudo_user()
        self.origin_dirs: set[str] = set()  # RPATH/RUNPATH entries made from $ORIGIN
        self.refused: list[str] = []  # files found where collection may not take them

    def shared(self, path: str) -> bool:
        """Is `path` in the standard library trees, the program's directory or --collect?"""
        real = os.path.realpath(path)
        return any(real == p or real.startswith(p.rstrip("/") + "/")
                   for p in (*SYSTEM_LIB_ROOTS, *self.places))  # fmt: skip

    def rpath_dirs(self, entries: list[str], obj: _Loaded) -> list[str]:
        """RPATH/RUNPATH entries, expanded; those from $ORIGIN are the program's own."""
        dirs = [_expand(entry, obj) for entry in entries]
        self.origin_dirs.update(d for d, e in zip(dirs, entries, strict=True)
                                if e.startswith(_ORIGIN))  # fmt: skip
        return dirs

    def may_take(self, directory: str, path: str) -> bool:
        """May the search take `path`, found in the RPATH/RUNPATH `directory`? If not, the
        guest's ld.so finds no copy there either and goes on, as the search does."""
        if directory in self.origin_dirs or self.shared(path):
            return True
        self.refused.append(path)
        return False

    def follow(self, path: str, subject: str) -> str:
        """`path` (an absolute name from the ELF file) if shared; ImageError otherwise."""
        if not self.shared(path):
            raise self._refusal(path, subject, "is outside the standard library directories "
                                "and the program's directory")  # fmt: skip
        return path

    def check(self, path: str, subject: str) -> None:
        """ImageError unless `path`, found by the search, may be collected."""
        real = os.path.realpath(path)
        if not self.shared(real) and not _may_read(real, None):
            raise self._refusal(path, subject, "is not readable by every user and lies "
                                "outside the standard library directories and the program's "
                                "directory")  # fmt: skip
        if self.reader is not None and not _may_read(real, self.reader):
            raise ImageError(f"{self.program}: {subject}: the invoking user (uid "
                             f"{self.reader[0]}) cannot read it, so karn does not collect it")

    def missing(self, name: str, needed_by: str) -> ImageError:
        for path in self.refused:
            if os.path.basename(path) == name:
                return self._refusal(path, f"library {path} (needed by {needed_by})",
                                     "is in an RPATH/RUNPATH directory outside the standard "
                                     "library directories and the program's directory")
        return ImageError(f"{self.program}: library {name} not found (needed by {needed_by})")

    def _refusal(self, path: str, subject: str, why: str) -> ImageError:
        return ImageError(f"{self.program}: {subject} {why}: pass --collect {path} to put it "
                          "in the guest")


def _sudo_user() -> Reader | None:
    """Under sudo, the user who ran it (SUDO_UID, SUDO_GID and that user's groups)."""
    uid, gid = os.environ.get("SUDO_UID", ""), os.environ.get("SUDO_GID", "")
    if os.geteuid() != 0 or not uid.isdigit():
        return None
    import pwd

    group = int(gid) if gid.isdigit() else int(uid)
    try:
        groups = os.getgrouplist(pwd.getpwuid(int(uid)).pw_name, group)
    except KeyError:
        groups = [group]
    return int(uid), frozenset(groups)


def _may_read(real: str, reader: Reader | None) -> bool:
    """May `reader` (None: every user) open the file at the real path `real`? Mode bits
    only: the directories on the way need x, the file r."""
    parts = real.split("/")
    try:
        for i in range(1, len(parts)):
            if not _permits(os.stat("/".join(parts[:i]) or "/"), reader, 1):
                return False
        return _permits(os.stat(real), reader, 4)
    except OSError:
        return False


def _permits(st: os.stat_result, reader: Reader | None, bit: int) -> bool:
    if reader is not None:
        uid, groups = reader
        if st.st_uid == uid:
            return bool(st.st_mode >> 6 & bit)
        if st.st_gid in groups:
            return bool(st.st_mode >> 3 & bit)
    return bool(st.st_mode & bit)


class RootManifest:
    """The guest root filesystem for one program."""

    __slots__ = ("files", "symlinks", "entry", "interpreter", "libraries")

    def __init__(
        self,
        files: dict[str, str],
        symlinks: dict[str, str],
        entry: str,
        interpreter: str | None = None,
        libraries: list[str] | None = None,
    ) -> None:
        self.files = files  # guest absolute path -> host real path of a regular file
        self.symlinks = symlinks  # guest path -> link target
        self.entry = entry  # guest path of the program
        self.interpreter = interpreter  # guest path of PT_INTERP (None: static program)
        self.libraries = [] if libraries is None else libraries  # guest paths, in load order


# The guest's own trees, where no collected file can be placed: /dev is karn's device
# filesystem and /proc its process view. (/tmp and /dev/shm are tmpfs mounts, which
# start with the collected files below them: see run/builder.py.)
SYNTHETIC_TREES = ("/dev/", "/proc/")
SEEDED_UNDER_DEV = "/dev/shm/"


def check_placement(manifest: RootManifest, volumes: Iterable[tuple[str, str]] = ()) -> None:
    """ImageError if the guest would not see its program: a collected file under /dev
    (but /dev/shm) or /proc, or a volume (host, guest) over the program's path that shows
    another file there (its own copy is fine: `-v /tmp:/tmp`). A volume over the other
    collected files (libraries, ld.so.cache) wins, as a mount does."""
    for guest in manifest.files:
        if guest.startswith(SYNTHETIC_TREES) and not guest.startswith(SEEDED_UNDER_DEV):
            tree = guest.split("/", 2)[1]
            raise ImageError(f"{guest}: karn cannot place a program's files under /{tree}, "
                             "the guest's own tree there; copy the program elsewhere")
    volumes = list(volumes)
    if not volumes:
        return
    program = os.path.realpath(manifest.entry)
    paths = {manifest.entry, *(g for g, h in manifest.files.items() if h == program)}
    for host, mount in volumes:
        inside = mount.rstrip("/") + "/"
        for guest in paths:
            if guest == mount or guest.startswith(inside):
                shown = host if guest == mount else os.path.join(host, guest[len(inside):])
                if os.path.realpath(shown) != program:
                    raise ImageError(f"{manifest.entry}: the volume {host}:{mount} hides it "
                                     "in the guest; mount the volume elsewhere or move the "
                                     "program")


class _Loaded:
    """One object in the load graph (a plain class: dataclass set-up costs start-up time)."""

    __slots__ = ("guest", "info", "loader")

    def __init__(self, guest: str, info: ElfInfo, loader: _Loaded | None) -> None:
        self.guest = guest
        self.info = info
        self.loader = loader  # the object whose DT_NEEDED brought this one in


def collect_program(host_path: str, collect: Iterable[str] = (), depth: int = 0
                    ) -> RootManifest:
    """Find the program, its interpreter and its libraries; ImageError if any is missing
    or may not be collected (CollectRule; `collect`: the --collect paths). A `#!` script
    brings the program its line names, with what that needs (the script stays the
    entry: the run starts its interpreter, as execve does)."""
    guest = _locate_program(host_path)
    interpreter = _script_interpreter(guest, host_path)
    if interpreter is not None:
        if depth >= MAX_SCRIPT_DEPTH:
            raise ImageError(f"{host_path}: too many levels of `#!` interpreters")
        try:
            manifest = collect_program(interpreter, collect, depth + 1)
        except ImageError as err:
            raise ImageError(f"{host_path}: `#!` {err}") from None
        manifest.files[guest] = os.path.realpath(guest)
        manifest.entry = guest
        return manifest
    info = inspect_elf(guest, name=host_path)
    manifest = RootManifest(files={guest: os.path.realpath(guest)}, symlinks={}, entry=guest)
    if info.interpreter is None:
        return _mirror_host_links(manifest)  # static: nothing else is opened at load time
    interp = info.interpreter
    if not is_compatible_elf(interp):
        raise ImageError(f"{host_path}: interpreter {interp} not found")
    rule = CollectRule(guest, collect, label=host_path)
    rule.check(rule.follow(interp, f"interpreter {interp}"), f"interpreter {interp}")
    manifest.interpreter = interp
    manifest.files[interp] = os.path.realpath(interp)
    musl = os.path.basename(interp).startswith("ld-musl-")
    resolver = _MuslResolver(rule) if musl else _GlibcResolver(rule)
    main = _Loaded(guest, info, None)
    for lib in _load_closure(main, interp, resolver):
        manifest.libraries.append(lib)
        manifest.files[lib] = os.path.realpath(lib)
    if not musl:
        if os.path.isfile(LD_SO_CACHE):
            manifest.files[LD_SO_CACHE] = os.path.realpath(LD_SO_CACHE)
        # glibc dlopens these itself (pthread_cancel, backtrace); no DT_NEEDED names them.
        for name in GLIBC_DLOPENS:
            path = resolver.find(name, main, main)
            if path is not None:
                rule.check(path, f"library {path}")
                manifest.files.setdefault(path, os.path.realpath(path))
    manifest = _mirror_host_links(manifest)
    from karn.image.runtimes import add_runtime  # (it builds on this module)

    add_runtime(manifest, guest, rule)  # an interpreter's standard library
    return manifest


GLIBC_DLOPENS = ("libgcc_s.so.1",)
GLIBC_INTERPRETER = "/lib64/ld-linux-x86-64.so.2"


def collect_dependencies(host_paths: Iterable[str],
                         rule: CollectRule | None = None) -> RootManifest:
    """Libraries needed by the ELF objects among host_paths that no DT_NEEDED chain from
    the program reaches: modules it dlopens (Python extensions, plugins), found as dlopen
    will find them, canonical. rule: where they may come from (default: each object's own
    rule). Only glibc objects are followed (musl programs rarely dlopen)."""
    manifest = RootManifest(files={}, symlinks={}, entry="")
    if not is_compatible_elf(GLIBC_INTERPRETER):
        return manifest
    shared = None if rule is None else _GlibcResolver(rule)
    inspected: dict[str, ElfInfo] = {}  # libraries many modules share are parsed once
    for path in host_paths:
        if not is_compatible_elf(path):
            continue
        try:
            info = inspect_elf(path)
            if not info.needed or (info.interpreter and "musl" in info.interpreter):
                continue
            resolver = shared or _GlibcResolver(CollectRule(path))
            libs = _load_closure(_Loaded(path, info, None), GLIBC_INTERPRETER, resolver,
                                 inspected)
        except ImageError as err:
            # An object file (.o), or a module whose library the host lacks too: it
            # would not load on the host, and it will not in the guest.
            log.debug("not following %s: %s", path, err)
            continue
        for lib in libs:
            manifest.files.setdefault(lib, os.path.realpath(lib))
    return _mirror_host_links(manifest)


MAX_SYMLINK_HOPS = 40


def _mirror_host_links(manifest: RootManifest) -> RootManifest:
    """Put each file at its canonical path and recreate the host symlinks leading to it.

    The guest then sees what the host's kernel would: /bin/busybox reached through the
    /bin -> usr/bin link, and /proc/self/exe naming /usr/bin/busybox.
    """
    links: dict[str, str] = {}
    files = {_trace_links(guest, links): host for guest, host in manifest.files.items()}
    manifest.files = files
    manifest.symlinks = links
    return manifest


def _trace_links(path: str, links: dict[str, str]) -> str:
    """Resolve path on the host as the kernel would, recording each symlink passed."""
    pending = [c for c in path.split("/") if c]
    current = ""
    hops = 0
    while pending:
        component = pending.pop(0)
        if component == ".":
            continue
        if component == "..":
            current = current.rsplit("/", 1)[0]
            continue
        candidate = f"{current}/{component}"
        if os.path.islink(candidate):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise ImageError(f"{path}: too many levels of symbolic links")
            target = os.readlink(candidate)
            links[candidate] = target
            if target.startswith("/"):
                current = ""
            pending[:0] = [c for c in target.split("/") if c]
        else:
            current = candidate
    return current or "/"


def _script_interpreter(path: str, label: str) -> str | None:
    """The absolute program a `#!` script's line names; None for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(BINPRM_BUF_SIZE)
        script = parse_shebang(head)
    except OSError:
        return None  # inspect_elf says why
    except SyscallError:
        raise ImageError(f"{label}: its `#!` line names no interpreter") from None
    if script is None:
        return None
    interpreter = os.fsdecode(script[0])
    if not interpreter.startswith("/"):
        raise ImageError(f"{label}: `#!` {interpreter}: not an absolute path")
    return interpreter


def _locate_program(host_path: str) -> str:
    """Absolute path of the program: relative to cwd, or searched in $PATH for a bare name."""
    if "/" in host_path:
        path = os.path.abspath(host_path)
        if not os.path.exists(path):
            raise ImageError(f"{host_path}: no such file or directory")
        return path
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        cand = os.path.join(os.path.abspath(d or "."), host_path)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return os.path.normpath(cand)
    raise ImageError(f"{host_path}: command not found in $PATH")


def _load_closure(main: _Loaded, interp: str, resolver: _Resolver,
                  inspected: dict[str, ElfInfo] | None = None) -> list[str]:
    """Breadth-first DT_NEEDED closure, in the order ld.so maps objects (`inspected`: ELF
    files already parsed, shared by the closures of many modules)."""
    cache = {} if inspected is None else inspected

    def inspect(path: str) -> ElfInfo:
        info = cache.get(path)
        if info is None:
            info = cache[path] = inspect_elf(path)
        return info

    interp_info = inspect(interp)
    # Names already satisfied: ld.so matches DT_NEEDED against loaded names and sonames.
    known: dict[str, str] = {os.path.basename(interp): interp}
    if interp_info.soname:
        known[interp_info.soname] = interp
    seen_paths = {main.guest, interp}
    order: list[str] = []
    queue = deque([main])
    while queue:
        obj = queue.popleft()
        for name in obj.info.needed:
            if name in known or resolver.is_builtin(name):
                continue
            path = resolver.find(name, obj, main)
            if path is None:
                raise resolver.rule.missing(name, obj.guest)
            resolver.rule.check(path, f"library {path} (needed by {obj.guest})")
            known[name] = path
            if path in seen_paths:
                continue
            seen_paths.add(path)
            info = inspect(path)
            if info.soname:
                known.setdefault(info.soname, path)
            order.append(path)
            queue.append(_Loaded(path, info, obj))
    return order


class _Resolver:
    """Where the guest's dynamic linker will find a DT_NEEDED name."""

    def __init__(self, rule: CollectRule) -> None:
        self.rule = rule

    def is_builtin(self, name: str) -> bool:
        return False

    def find(self, name: str, obj: _Loaded, main: _Loaded) -> str | None:
        if "/" in name:  # a path, used as is (relative ones against the cwd)
            path = os.path.abspath(_expand(name, obj))
            if not is_compatible_elf(path):
                return None
            if name.startswith(_ORIGIN):
                return path
            return self.rule.follow(path, f"library {path} (needed by {obj.guest})")
        return _first_in(name, self.search_dirs(obj, main), self.rule) or _first_in(
            name, self.system_dirs())

    def search_dirs(self, obj: _Loaded, main: _Loaded) -> list[str]:
        """The RPATH/RUNPATH directories, in search order."""
        raise NotImplementedError

    def system_dirs(self) -> list[str]:
        """The linker's own directories, searched after those."""
        raise NotImplementedError


class _GlibcResolver(_Resolver):
    def __init__(self, rule: CollectRule) -> None:
        super().__init__(rule)
        self._cache: _LdSoCache | None = None
        self._cache_read = False
        self._conf_dirs: list[str] | None = None

    def find(self, name: str, obj: _Loaded, main: _Loaded) -> str | None:
        if "/" in name:
            return super().find(name, obj, main)
        found = _first_in(name, self.search_dirs(obj, main), self.rule)
        if found is None:
            found = self._from_cache(name)
        return found or _first_in(name, DEFAULT_DIRS)

    def search_dirs(self, obj: _Loaded, main: _Loaded) -> list[str]:
        dirs: list[str] = []
        if not obj.info.runpath:
            # DT_RPATH of the loading object, then of each object up the chain that
            # loaded it, then the executable's; an object with DT_RUNPATH is skipped.
            chain: list[_Loaded] = []
            walk: _Loaded | None = obj
            while walk is not None:
                chain.append(walk)
                walk = walk.loader
            if main not in chain:
                chain.append(main)
            for o in chain:
                if not o.info.runpath:
                    dirs.extend(self.rule.rpath_dirs(o.info.rpath, o))
        dirs.extend(self.rule.rpath_dirs(obj.info.runpath, obj))
        return dirs

    def _from_cache(self, name: str) -> str | None:
        if not self._cache_read:
            self._cache, self._cache_read = _read_ld_so_cache(LD_SO_CACHE), True
        if self._cache is not None:
            path = self._cache.get(name)
            return path if path and is_compatible_elf(path) else None
        if self._conf_dirs is None:  # no usable cache: ldconfig's configuration instead
            self._conf_dirs = _read_ld_so_conf(LD_SO_CONF, set())
        return _first_in(name, self._conf_dirs)


class _MuslResolver(_Resolver):
    def __init__(self, rule: CollectRule) -> None:
        super().__init__(rule)
        self._sys_dirs: list[str] | None = None

    def is_builtin(self, name: str) -> bool:
        return name.startswith("lib") and name[3:].startswith(_MUSL_BUILTIN)

    def search_dirs(self, obj: _Loaded, main: _Loaded) -> list[str]:
        dirs: list[str] = []
        walk: _Loaded | None = obj
        while walk is not None:  # musl: rpath (runpath wins if both) up the needed_by chain
            dirs.extend(self.rule.rpath_dirs(walk.info.runpath or walk.info.rpath, walk))
            walk = walk.loader
        return dirs

    def system_dirs(self) -> list[str]:
        if self._sys_dirs is None:
            self._sys_dirs = _read_musl_path(MUSL_PATH_FILE)
        return self._sys_dirs


def _first_in(name: str, dirs: list[str] | tuple[str, ...],
              rule: CollectRule | None = None) -> str | None:  # fmt: skip
    """The first directory holding `name`; with `rule`, only where the rule may take it."""
    for d in dirs:
        cand = os.path.normpath(os.path.join(os.path.abspath(d), name))
        # ld.so skips wrong-class/machine files and goes on
        if is_compatible_elf(cand) and (rule is None or rule.may_take(d, cand)):
            return cand
    return None


def _expand(path: str, obj: _Loaded) -> str:
    """Expand $ORIGIN, $LIB, $PLATFORM (and ${...}) as ld.so does for `obj`'s paths."""
    if "$" not in path:
        return path
    origin = os.path.dirname(obj.guest)  # where the guest's ld.so sees the object
    for var, value in (("ORIGIN", origin), ("LIB", DST_LIB), ("PLATFORM", DST_PLATFORM)):
        path = path.replace("${" + var + "}", value).replace("$" + var, value)
    return path


class _LdSoCache:
    """The x86-64 entries of glibc's ld.so.cache, looked up by soname. Names are compared
    as bytes in place: a program needs two or three of the ~600 entries, and decoding
    them all cost ~0.6 ms of a dynamic program's start-up. A runtime's modules need
    dozens (python3: ~70, each a scan of the entries): past SCANS lookups the names are
    indexed once."""

    SCANS = 8

    def __init__(self, data: bytes, base: int, entries: list[tuple[int, int]]) -> None:
        self._data, self._base, self._entries = data, base, entries
        self._scans = 0
        self._index: dict[bytes, int] | None = None  # soname -> its first entry's value

    def get(self, name: str) -> str | None:
        """The first entry's path for `name` (as ld.so takes it); None if none, or if
        that entry is unreadable."""
        data, base, needle = self._data, self._base, name.encode()
        value = self._lookup(needle)
        if value is None:
            return None
        try:
            return data[base + value : data.index(b"\0", base + value)].decode()
        except (ValueError, UnicodeDecodeError):
            return None

    def _lookup(self, needle: bytes) -> int | None:
        data, base = self._data, self._base
        if self._index is None and self._scans >= self.SCANS:
            self._index = {}
            for key, value in self._entries:
                start = base + key
                end = data.find(b"\0", start)
                if end >= 0:
                    self._index.setdefault(data[start:end], value)
        if self._index is not None:
            return self._index.get(needle)
        self._scans += 1
        needle += b"\0"
        for key, value in self._entries:
            if data.startswith(needle, base + key):
                return value
        return None


def _read_ld_so_cache(path: str) -> _LdSoCache | None:
    """The x86-64 entries of glibc's ld.so.cache; None if absent or unusable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    base = 0
    if data.startswith(_CACHE_MAGIC_OLD):  # old+new combined: skip the old table
        (nlibs,) = struct.unpack_from("<I", data, 12)
        base = (16 + nlibs * 12 + 7) & ~7
    if data[base : base + len(_CACHE_MAGIC_NEW)] != _CACHE_MAGIC_NEW:
        return None
    try:
        _, nlibs, _ = _CACHE_HEADER.unpack_from(data, base)
        entries = _CACHE_ENTRY.iter_unpack(data[base + 48 : base + 48 + nlibs * _CACHE_ENTRY.size])
        # other ABIs, and glibc-hwcaps variants (we ship the baseline), left out
        return _LdSoCache(data, base, [(key, value) for flags, key, value, _, hwcap in entries
                                       if flags in _CACHE_FLAGS_X8664 and not hwcap])
    except struct.error:
        return None


def _read_ld_so_conf(path: str, seen: set[str]) -> list[str]:
    """Directories listed by ld.so.conf, following `include` globs (relative to the file)."""
    import glob  # rarely needed (no usable ld.so.cache), and it pulls in re/fnmatch

    if path in seen:
        return []
    seen.add(path)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    dirs: list[str] = []
    for line in lines:
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "include":
            for pattern in words[1:]:
                pattern = os.path.join(os.path.dirname(path), pattern)
                for inc in sorted(glob.glob(pattern)):
                    dirs.extend(_read_ld_so_conf(inc, seen))
        elif words[0] != "hwcap":
            dirs.extend(w.split("=", 1)[0] for w in line.split("#", 1)[0].replace(",", " ").split())
    return [d for d in dirs if d.startswith("/")]


def _read_musl_path(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return list(MUSL_DEFAULT_DIRS)
    return [d for d in text.replace(":", "\n").split() if d]
