"""karn's own modules loaded straight from compiled code, for the command line.

Python's path finder and source loader cost ~55 µs a module here before the module's own
code runs (the finder's directory cache and suffix loop, `cache_from_source`, a `FileIO`,
the spec's attributes computed one by one), six system calls among them, and a `karn
run` imports ~100 of karn's modules. This finder, first in sys.meta_path, serves a
`karn.*` module from where the path finder would look (the parent package's directory):

- from the bundle, `karn/__pycache__/bundle.<tag>.bin` (`python3 -m karn.cli.bundle`
  writes it; `make install` does): every module's code in one file, mapped once, each
  module checked by one stat of its source (mtime in ns and size as recorded);
- else from its own `.pyc`, where the path finder would take that same file: this
  interpreter's magic number, timestamp-checked, the source's mtime and size recorded.

Anything else (no bytecode, stale bytecode, hash-checked bytecode, an extension module,
-O, a pycache prefix) goes on to the path finder as before, which compiles what is
missing or stale.
"""

from __future__ import annotations

import _imp
import marshal
import mmap
import os
import sys
from _frozen_importlib import ModuleSpec
from _frozen_importlib_external import MAGIC_NUMBER
from types import CodeType, ModuleType

TYPE_CHECKING = False  # typing's, without importing typing (re, enum and more: ~7 ms)
if TYPE_CHECKING:
    from collections.abc import Sequence

HEADER = 16  # a .pyc's: magic, flags (0: timestamp-checked), source mtime, source size
TAG = sys.implementation.cache_tag
BUNDLE_MAGIC = MAGIC_NUMBER + b"karn"  # then the index's length (8 bytes), the index
BUNDLE_INDEX = len(BUNDLE_MAGIC) + 8  # where the index starts
# the index: {module name: (source path below the package, source mtime in ns, source
# size, a package?, offset of its marshalled code after the index, its length)}
Entry = tuple[str, int, int, bool, int, int]


def bundle_path(package_dir: str) -> str:
    return f"{package_dir}/__pycache__/bundle.{TAG}.bin"


class _Bundle:
    """The bundle of one package directory, mapped (an empty one if it cannot be read)."""

    def __init__(self, package_dir: str) -> None:
        self.root = package_dir
        self.index: dict[str, Entry] = {}
        self.data: memoryview | None = None
        try:
            with open(bundle_path(package_dir), "rb") as f:
                mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        except (OSError, ValueError):  # none (ValueError: an empty file)
            return
        data = memoryview(mapped)
        try:
            if data[: len(BUNDLE_MAGIC)] != BUNDLE_MAGIC:
                return  # another Python's
            size = int.from_bytes(data[len(BUNDLE_MAGIC) : BUNDLE_INDEX], "little")
            index = marshal.loads(data[BUNDLE_INDEX : BUNDLE_INDEX + size])
        except (ValueError, EOFError, TypeError):
            return  # cut short or damaged: each module from its .pyc
        if isinstance(index, dict):
            self.index, self.data = index, data[BUNDLE_INDEX + size :]

    def code(self, name: str, where: str) -> tuple[str, bool, CodeType] | None:
        """The source path, package or not, and code of `name` looked for in directory
        `where`, if the bundle has it and its source is as recorded. (A package made
        since beside a bundled module of the same name is not seen: the bundle would
        need making again, as after any upgrade.)"""
        entry = self.index.get(name)
        if entry is None or self.data is None:
            return None
        rel, mtime_ns, size, package, offset, length = entry
        source = f"{self.root}/{rel}"
        if source.rpartition("/")[0] != (f"{where}/{name.rpartition('.')[2]}" if package
                                         else where):
            return None
        try:
            st = os.stat(source)
        except OSError:
            return None
        if st.st_mtime_ns != mtime_ns or st.st_size != size:
            return None
        try:
            code = marshal.loads(self.data[offset : offset + length])
        except (ValueError, EOFError, TypeError):
            return None
        return (source, package, code) if isinstance(code, CodeType) else None


class KarnBytecodeFinder:
    """A meta path finder and loader for karn's submodules (see the module docstring)."""

    bundle: _Bundle | None = None

    @classmethod
    def find_spec(cls, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if path is None or len(path) != 1 or not name.startswith("karn."):
            return None
        found = cls.bundle.code(name, path[0]) if cls.bundle is not None else None
        if found is None:
            found = _from_pyc(name, path[0])
            if found is None:
                return None
        source, package, code = found
        # the path the source has now, as the source loader sets it (compileall may have
        # been given a relative one; the tree may have moved since the bundle was made)
        _imp._fix_co_filename(code, source)  # type: ignore[attr-defined]
        where, _, file = source.rpartition("/")
        spec = ModuleSpec(name, cls, origin=source,  # type: ignore[arg-type]
                          loader_state=code, is_package=package)
        if package:
            spec.submodule_search_locations = [where]
        spec.has_location = True
        spec.cached = f"{where}/__pycache__/{file[:-3]}.{TAG}.pyc"
        return spec

    @classmethod
    def get_code(cls, name: str) -> CodeType | None:
        """The module's code (runpy's question, `python3 -m karn.MODULE`)."""
        parent = sys.modules[name.rpartition(".")[0]]
        spec = cls.find_spec(name, parent.__path__)
        return spec.loader_state if spec is not None else None

    @staticmethod
    def create_module(spec: ModuleSpec) -> None:
        return None  # the default module

    @staticmethod
    def exec_module(module: ModuleType) -> None:
        spec = module.__spec__
        assert spec is not None
        code, spec.loader_state = spec.loader_state, None
        exec(code, module.__dict__)


def _from_pyc(name: str, where: str) -> tuple[str, bool, CodeType] | None:
    """`name`'s source path, package or not, and code from its .pyc beside the source in
    directory `where`, if the path finder would load that file."""
    leaf = name.rpartition(".")[2]
    package, stem, directory = True, "__init__", f"{where}/{leaf}"
    try:
        source = os.stat(f"{directory}/__init__.py")
    except OSError:
        package, stem, directory = False, leaf, where
        try:
            source = os.stat(f"{directory}/{leaf}.py")
        except OSError:
            return None
    try:
        fd = os.open(f"{directory}/__pycache__/{stem}.{TAG}.pyc", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size)
    except OSError:
        return None
    finally:
        os.close(fd)
    if (len(data) != size or size < HEADER or data[:4] != MAGIC_NUMBER
            or data[4:8] != b"\0\0\0\0"
            or int.from_bytes(data[8:12], "little") != int(source.st_mtime) & 0xFFFFFFFF
            or int.from_bytes(data[12:16], "little") != source.st_size & 0xFFFFFFFF):
        return None
    code = marshal.loads(memoryview(data)[HEADER:])
    return (f"{directory}/{stem}.py", package, code) if isinstance(code, CodeType) else None


def install(package_dir: str) -> None:
    """Put the finder first, once, where its bytecode names are Python's own."""
    if sys.flags.optimize or sys.pycache_prefix is not None:
        return  # other file names: the path finder's work
    if KarnBytecodeFinder not in sys.meta_path:
        KarnBytecodeFinder.bundle = _Bundle(package_dir)
        sys.meta_path.insert(0, KarnBytecodeFinder)
