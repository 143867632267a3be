"""Interpreters whose standard library is a directory tree beside them (python3.X, perl).

A program recognised here gets its runtime's library trees in the guest root, and the
shared libraries its extension modules need, found by the same ELF analysis as the
program's own (collect.py). Only trees in the standard library places (`/usr/lib`,
`/usr/local/lib`, `/usr/share`, ...) or in places the user shares (the program's directory,
--collect) are taken; a file the invoking user cannot read is left out.
"""

from __future__ import annotations

import os
import time

from karn import log
from karn.image.collect import (
    SYSTEM_LIB_ROOTS,
    CollectRule,
    RootManifest,
    _may_read,
    _trace_links,
    collect_dependencies,
)

# Where a runtime's own library trees may lie besides SYSTEM_LIB_ROOTS: architecture-
# independent modules (Debian's perl keeps its standard library in /usr/share/perl).
RUNTIME_ROOTS = (*SYSTEM_LIB_ROOTS, "/usr/share", "/usr/local/share")


class Runtime:
    """An interpreter, recognised by its file's real name (a pattern that begins with the
    runtime's name), and its library trees: glob patterns relative to its installation
    prefix (the directory above bin/), in which {0}, {1}... are the groups of the name's
    match."""

    __slots__ = ("name", "pattern", "trees")

    def __init__(self, name: str, pattern: str, trees: tuple[str, ...]) -> None:
        self.name = name
        self.pattern = pattern
        self.trees = trees

    def groups(self, filename: str) -> tuple[str, ...] | None:
        """The groups of filename's match if it is this runtime's. Other programs are told
        apart by their name's start: re (and the enum it imports) costs a run ~3 ms."""
        if not filename.startswith(self.name):
            return None
        import re

        match = re.fullmatch(self.pattern, filename)
        return None if match is None else match.groups()


RUNTIMES = (
    # CPython finds its prefix from the executable's path: PREFIX/lib/pythonX.Y/os.py.
    Runtime("python", r"python(\d+\.\d+)", ("lib/python{0}",)),
    # perl's @INC (perl -V) on Debian and on a plain `make install`.
    Runtime("perl", r"perl(?:5\.\d+\.\d+)?", (
        "share/perl/5.*", "share/perl5", "lib/x86_64-linux-gnu/perl/5.*",
        "lib/x86_64-linux-gnu/perl5/5.*", "lib/x86_64-linux-gnu/perl-base", "lib/perl5",
    )),
)


def runtime_of(program: str) -> tuple[Runtime, list[str]] | None:
    """The runtime `program` (a host path) is, and its library trees that exist; None for
    other programs."""
    real = os.path.realpath(program)
    for runtime in RUNTIMES:
        groups = runtime.groups(os.path.basename(real))
        if groups is None:
            continue
        import glob

        prefix = os.path.dirname(os.path.dirname(real))
        trees: list[str] = []
        for pattern in runtime.trees:
            found = glob.glob(os.path.join(prefix, pattern.format(*groups)))
            trees.extend(t for t in sorted(found) if os.path.isdir(t))
        return runtime, trees
    return None


def add_runtime(manifest: RootManifest, program: str, rule: CollectRule) -> None:
    """Put the runtime's library trees and their ELF dependencies in `manifest` (collected
    for `program`); nothing if `program` is no runtime karn knows."""
    found = runtime_of(program)
    if found is None:
        return
    runtime, trees = found
    start = time.perf_counter()
    files: dict[str, str] = {}
    links: dict[str, str] = {}
    modules: list[str] = []
    walked: set[str] = set()
    for tree in trees:
        if not (_under(tree, RUNTIME_ROOTS) or rule.shared(tree)):
            log.warning("%s: %s library tree %s is outside the standard places; pass "
                     "--collect %s to put it in the guest", rule.program, runtime.name,
                     tree, tree)
            continue
        real_tree = _trace_links(tree, links)  # the links on the way (perl/5.36 -> 5.36.0)
        if real_tree not in walked:
            walked.add(real_tree)
            _walk_tree(real_tree, rule, files, links, modules)
    deps = collect_dependencies(modules, rule)
    for path, host in {**files, **deps.files}.items():
        manifest.files.setdefault(path, host)
    for path, target in {**links, **deps.symlinks}.items():
        if path not in manifest.files:
            manifest.symlinks.setdefault(path, target)
    log.debug("%s: %s runtime: %d files, %d extension modules, %d libraries in %.1f ms",
              rule.program, runtime.name, len(files), len(modules), len(deps.files),
              (time.perf_counter() - start) * 1e3)


def _under(path: str, roots: tuple[str, ...]) -> bool:
    real = os.path.realpath(path)
    return any(real == r or real.startswith(r + "/") for r in roots)


def _walk_tree(tree: str, rule: CollectRule, files: dict[str, str], links: dict[str, str],
               modules: list[str]) -> None:
    """Regular files of `tree` the invoking user may read, at their canonical paths, and
    its symlinks as they are (a link leading out of the guest's files dangles there)."""
    pending = [tree]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:  # d_type: no stat per entry
                if entry.is_symlink():
                    links[entry.path] = os.readlink(entry.path)
                elif entry.is_dir():
                    pending.append(entry.path)
                elif entry.is_file() and _readable(entry.path, rule):
                    files[entry.path] = entry.path
                    if entry.name.endswith(".so"):
                        modules.append(entry.path)


def _readable(path: str, rule: CollectRule) -> bool:
    """Would the invoking user be able to read `path` (under sudo: SUDO_UID's user)?"""
    if rule.reader is not None:
        return _may_read(path, rule.reader)
    return os.access(path, os.R_OK)
