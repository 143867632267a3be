"""Path resolution, mounts and filesystems against real host directories (no KVM)."""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import pytest

from karn.abi.errno import SyscallError
from karn.abi.syscalls import SYSCALL_NUMBERS as NR
from karn.kernel.fs.constants import O_ACCMODE, S_IFDIR, S_IFMT, S_IFREG, OFlag
from karn.kernel.fs.context import FsContext
from karn.kernel.fs.fdtable import FdTable
from karn.kernel.fs.filesystem import Rel
from karn.kernel.fs.hostfs import HostDirFs
from karn.kernel.fs.manifestfs import ManifestFs
from karn.kernel.fs.stat import Stat
from karn.kernel.fs.tmpfs import TmpFs
from karn.kernel.mm import AddressSpace, Region
from karn.kernel.process import KernelConfig, Process, Task
from karn.kernel.syscalls import dispatch
from karn.platform.memory import HostGuestMemory

BASE = 0x10000


def task_of(ctx: FsContext) -> Task:
    """A task of a process with ctx as its filesystem (no VM: guest memory is host memory);
    the caller of file operations in these tests."""
    mem = HostGuestMemory(1 << 20, BASE, 1 << 20)
    mm = AddressSpace(mem, Region(BASE, 1 << 20, 1 << 20, 1 << 20))
    mm.map(BASE, 0x4000, 3, "", 0)
    config = KernelConfig(argv=[b"/bin/prog", b"x"], exe_path="/bin/prog")
    proc = Process(mem, mm, ctx, FdTable.with_stdio(), config)
    return Task(proc, 1, None)  # type: ignore[arg-type]


def errno_of(fn, *args, **kwargs) -> int:  # noqa: ANN001
    with pytest.raises(SyscallError) as info:
        fn(*args, **kwargs)
    return info.value.errno


def names(fs: FsContext, path: str) -> set[str]:
    f = fs.open(path, OFlag.RDONLY | OFlag.DIRECTORY)
    try:
        return {e.name for e in fs.dir_entries(f)} - {".", ".."}
    finally:
        f.close()


@pytest.fixture
def rootdir(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("guest passwd\n")
    (root / "bin").mkdir()
    (root / "bin" / "prog").write_bytes(b"\x7fELF guest")
    (root / "lib").mkdir()
    (root / "lib" / "libc.so.6").write_text("libc")
    os.symlink("libc.so.6", root / "lib" / "libc.so")
    os.symlink("/etc/passwd", root / "abs-passwd")
    os.symlink("../../../../../../etc/passwd", root / "up-passwd")
    os.symlink("/", root / "to-root")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    return root


@pytest.fixture
def ctx(rootdir: Path, tmp_path: Path) -> FsContext:
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "data.txt").write_text("volume data")
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "ro.txt").write_text("read only")
    return FsContext.build(
        HostDirFs(str(rootdir)),
        volumes=[(str(vol), "/data", False), (str(ro), "/srv/deep/ro", True)],
    )


def test_absolute_symlink_resolves_inside_guest_root(ctx: FsContext) -> None:
    assert ctx.read_file("/abs-passwd") == b"guest passwd\n"
    assert ctx.resolve("/abs-passwd").path == "/etc/passwd"


def test_dotdot_never_leaves_guest_root(ctx: FsContext) -> None:
    assert ctx.read_file("/../../../../etc/passwd") == b"guest passwd\n"
    assert ctx.read_file("/up-passwd") == b"guest passwd\n"
    assert ctx.resolve("/to-root/../..").path == "/"
    assert ctx.read_file("bin/../../../etc/passwd") == b"guest passwd\n"


def test_relative_symlink_and_cwd(ctx: FsContext) -> None:
    ctx.chdir("/lib")
    assert ctx.read_file("libc.so") == b"libc"
    assert ctx.cwd == "/lib"
    assert errno_of(ctx.chdir, "/etc/passwd") == errno.ENOTDIR


def test_lookup_errors(ctx: FsContext) -> None:
    assert errno_of(ctx.stat, "/loop1") == errno.ELOOP
    assert errno_of(ctx.stat, "/nope") == errno.ENOENT
    assert errno_of(ctx.stat, "/nope/x") == errno.ENOENT
    assert errno_of(ctx.stat, "/etc/passwd/x") == errno.ENOTDIR
    assert errno_of(ctx.stat, "/etc/passwd/") == errno.ENOTDIR
    assert errno_of(ctx.stat, "/" + "a" * 256) == errno.ENAMETOOLONG
    assert errno_of(ctx.stat, "") == errno.ENOENT
    assert ctx.stat("/loop1", follow=False).mode & S_IFMT != S_IFREG


def test_open_rules(ctx: FsContext) -> None:
    assert errno_of(ctx.open, "/etc", OFlag.WRONLY) == errno.EISDIR
    assert errno_of(ctx.open, "/etc/passwd", OFlag.RDONLY | OFlag.DIRECTORY) == errno.ENOTDIR
    assert (
        errno_of(ctx.open, "/etc/passwd", OFlag.CREAT | OFlag.EXCL | OFlag.WRONLY) == errno.EEXIST
    )
    assert errno_of(ctx.open, "/abs-passwd", OFlag.RDONLY | OFlag.NOFOLLOW) == errno.ELOOP
    assert errno_of(ctx.open, "/newfile/", OFlag.CREAT | OFlag.WRONLY) == errno.EISDIR


def test_host_writes_stay_in_root(ctx: FsContext, task: Task, rootdir: Path,
                                  tmp_path: Path) -> None:
    f = ctx.open("/up-passwd", OFlag.WRONLY | OFlag.TRUNC)
    f.write(task, b"changed")
    f.close()
    assert (rootdir / "etc" / "passwd").read_text() == "changed"
    # A dangling absolute symlink with O_CREAT creates its target inside the root.
    os.symlink("/made-by-guest", rootdir / "dangling")
    ctx.open("/dangling", OFlag.CREAT | OFlag.WRONLY, 0o644).close()
    assert (rootdir / "made-by-guest").exists()
    assert not Path("/made-by-guest").exists()


def test_volumes_and_virtual_mount_points(ctx: FsContext, task: Task, tmp_path: Path) -> None:
    assert ctx.read_file("/data/data.txt") == b"volume data"
    assert ctx.read_file("/srv/deep/ro/ro.txt") == b"read only"
    assert ctx.stat("/srv").mode & S_IFMT == S_IFDIR
    assert names(ctx, "/srv") == {"deep"}
    assert {"data", "srv", "tmp", "dev", "proc", "etc"} <= names(ctx, "/")
    # ".." from a mount's root goes to the guest parent, not the host's.
    assert ctx.read_file("/data/../etc/passwd") == b"guest passwd\n"
    f = ctx.open("/data/new.txt", OFlag.CREAT | OFlag.WRONLY, 0o600)
    f.write(task, b"hi")
    f.close()
    assert (tmp_path / "vol" / "new.txt").read_bytes() == b"hi"


def test_remembered_lookups_follow_a_replaced_mount_and_stay_bounded(
        ctx: FsContext, tmp_path: Path) -> None:
    """One-step lookups are remembered by path: a mount replaced since (a tmpfs moved to
    the host at a fork does this) is found anew, and a guest looking up ever new names
    leaves at most WHOLES_KEPT of them in the monitor, none longer than
    WHOLE_PATH_KEPT."""
    from karn.kernel.fs import vfs as vfsmod

    other = tmp_path / "other"
    other.mkdir()
    (other / "data.txt").write_text("replaced")
    assert ctx.read_file("/data/data.txt") == b"volume data"
    assert ctx.read_file("/data/data.txt") == b"volume data"  # (remembered)
    ctx.vfs.replace("/data", HostDirFs(str(other)))
    assert ctx.read_file("/data/data.txt") == b"replaced"
    for i in range(vfsmod.WHOLES_KEPT + 10):
        assert errno_of(ctx.stat, f"/data/none-{i}") == errno.ENOENT
    assert len(ctx.vfs._wholes) <= vfsmod.WHOLES_KEPT
    ctx.vfs._wholes.clear()
    long = "/data/" + "/".join(["x" * 100] * (vfsmod.WHOLE_PATH_KEPT // 100 + 1))
    assert errno_of(ctx.stat, long) == errno.ENOENT
    assert ctx.vfs._wholes == {}  # a long path is not kept
    assert ctx.read_file("/data/data.txt") == b"replaced"


def test_a_lookup_under_way_as_a_mount_is_replaced_is_not_remembered(
        rootdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup that found a filesystem just replaced (another thread moved /tmp to the
    host at a fork, between the lookup and its remembering) does not leave later lookups
    finding the old one."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "f").write_text("shared")
    ctx = FsContext.build(HostDirFs(str(rootdir), True))
    vfs = ctx.vfs
    ctx.open("/tmp/f", OFlag.CREAT | OFlag.WRONLY, 0o644).close()
    old = vfs.locate(("tmp",))[0]
    assert isinstance(old, TmpFs)
    lookup = vfs._whole

    def replaced_meanwhile(path: str, base: tuple[str, ...]) -> object:
        found = lookup(path, base)
        vfs.replace("/tmp", HostDirFs(str(shared)))
        monkeypatch.undo()
        return found

    monkeypatch.setattr(vfs, "_whole", replaced_meanwhile)
    path = "/tmp//f"  # (not looked up yet: /tmp/f was, by the open)
    assert ctx.resolve(path).fs is old  # (begun before the move: as Linux may answer)
    assert ctx.read_file(path) == b"shared"
    assert ctx.resolve(path).fs is not old


def test_remembered_lookups_cost_the_monitor_little(ctx: FsContext) -> None:
    """A guest that looks up as many new, deep, long paths of undecodable names as it
    can (one string object a component) makes the monitor hold a few MiB at most."""
    import tracemalloc

    from karn.kernel.fs import vfs as vfsmod

    name = "\udc80" * 14
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(vfsmod.WHOLES_KEPT * 2):
            path = "/data/" + "/".join([name] * (vfsmod.WHOLE_COMPS_KEPT - 3)) + f"/{i}"
            if len(path) > vfsmod.WHOLE_PATH_KEPT:
                path = path[len(path) - vfsmod.WHOLE_PATH_KEPT + 1:]
            ctx.vfs.whole(path, ("data",))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(ctx.vfs._wholes) > 0
    assert held < 8 << 20, f"{held / (1 << 20):.1f} MiB"


def test_whole_path_lookups_agree_with_the_walk(ctx: FsContext, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A path inside one filesystem is looked up, or opened, at once (Vfs.whole); each
    path below resolves and opens as the component-by-component walk makes it, error or not:
    symlinks on the way (a volume's link to an absolute guest path must reach the guest's
    /etc, not the host's), links at the end, missing and wrong components, mounts."""
    vol = tmp_path / "vol"
    os.symlink("/etc", vol / "guest-etc")
    (vol / "sub").mkdir()
    os.symlink("../data.txt", vol / "sub" / "up")
    paths = ["/data/guest-etc/passwd", "/data/sub/up", "/data/sub", "/data/data.txt",
             "/lib/libc.so", "/abs-passwd", "/to-root/etc/passwd", "/etc/passwd",
             "/srv/deep/ro/ro.txt", "/srv/deep", "/data/nope", "/data/nope/x",
             "/data/data.txt/x", "/loop1", "/data/sub/up/x", "/tmp", "/"]

    def outcome(path: str, follow: bool) -> object:
        try:
            r = ctx.resolve(path, follow=follow)
        except SyscallError as err:
            return err.errno
        return r.path, r.rel, type(r.fs), r.stat and (r.stat.mode, r.stat.ino, r.stat.size)

    def opened(path: str, flags: int) -> object:
        try:
            f = ctx.open(path, flags)
        except SyscallError as err:
            return err.errno
        try:
            st = f.stat()
            return f.path, st.mode, st.ino
        finally:
            f.close()

    open_flags = (OFlag.RDONLY, OFlag.RDONLY | OFlag.NOFOLLOW, OFlag.RDONLY | OFlag.DIRECTORY,
                  OFlag.WRONLY)

    def outcomes() -> dict:
        return {**{(p, f): outcome(p, f) for p in paths for f in (True, False)},
                **{(p, int(f)): opened(p, f) for p in paths for f in open_flags}}

    found = outcomes()
    assert found[("/data/guest-etc/passwd", True)][0] == "/etc/passwd"
    assert found[("/data/guest-etc/passwd", int(OFlag.RDONLY))][0] == "/etc/passwd"
    monkeypatch.setattr(HostDirFs, "whole_lookups", False)
    monkeypatch.setattr(HostDirFs, "opens_whole", False)
    monkeypatch.setattr(TmpFs, "whole_lookups", False)
    assert found == outcomes()


def test_a_single_name_opens_as_openat2_would(tmp_path: Path) -> None:
    """hostfs.openat2 opens a single name with a plain openat: it follows nothing and stays
    below the directory as openat2 does (a name in a subdirectory still goes through
    openat2, the reference): a file opens, a link is refused (ELOOP) or, with O_PATH,
    opened itself, and '..' cannot leave."""
    import stat as pystat

    from karn.kernel.fs.hostfs import openat2

    for parent in (tmp_path, tmp_path / "sub"):
        parent.mkdir(exist_ok=True)
        (parent / "file").write_text("x")
        os.symlink("file", parent / "link")
        os.symlink("/etc/passwd", parent / "out")
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)

    def result(path: str, flags: int) -> object:
        try:
            fd = openat2(root, path, flags)
        except SyscallError as err:
            return errno.errorcode[err.errno]
        try:
            return pystat.S_IFMT(os.fstat(fd).st_mode)
        finally:
            os.close(fd)

    try:
        for name in ("file", "link", "out", "."):
            for flags in (os.O_RDONLY, os.O_PATH):
                single = result(name, flags)
                assert single == result(f"sub/{name}", flags), (name, flags)
                if name in ("link", "out"):
                    assert single == ("ELOOP" if flags == os.O_RDONLY else pystat.S_IFLNK)
        assert result("file", os.O_RDONLY) == pystat.S_IFREG
        assert result("..", os.O_RDONLY) == result("..", os.O_PATH) == "ELOOP"
        assert result("sub/..", os.O_RDONLY) == pystat.S_IFDIR  # (below the root: allowed)
    finally:
        os.close(root)


def test_openat2_in_c_answers_as_through_ctypes(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The C binding of openat2 (_hostcalls.c, built by the install) and the ctypes call
    used where it is not built open and refuse the same paths, with the same errors."""
    import stat

    from karn.kernel.fs import hostfs

    assert hostfs._load_hostcalls() is not None, "karn/kernel/fs/_hostcalls.c is not built"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "file").write_text("x")
    os.symlink("file", tmp_path / "d" / "link")
    os.symlink("/etc", tmp_path / "d" / "out")
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    cases = [("d/file", os.O_RDONLY), ("d/file", os.O_PATH), ("d/link", os.O_RDONLY),
             ("d/link", os.O_PATH), ("d/out/passwd", os.O_RDONLY), ("d/../d/file", 0),
             ("../x", 0), ("d/none", 0), ("d/file/x", 0), ("", os.O_DIRECTORY),
             ("d/file", os.O_DIRECTORY), ("d/new", os.O_CREAT | os.O_WRONLY | os.O_EXCL)]

    def results() -> list[object]:
        out: list[object] = []
        for path, flags in cases:
            try:
                fd = hostfs.openat2(root, path, flags, 0o600 if flags & os.O_CREAT else 0)
            except SyscallError as err:
                out.append(errno.errorcode[err.errno])
                continue
            st = os.fstat(fd)
            out.append((stat.S_IFMT(st.st_mode), st.st_size, os.get_inheritable(fd)))
            os.close(fd)
        os.unlink(tmp_path / "d" / "new")
        return out

    try:
        in_c = results()
        monkeypatch.setattr(hostfs, "_hostcalls", None)
        assert results() == in_c
    finally:
        os.close(root)
    assert in_c[0] == in_c[5] == (stat.S_IFREG, 1, False)
    assert in_c[6] == in_c[4] == "ELOOP" and in_c[7] == "ENOENT"
    assert in_c[8] == in_c[10] == "ENOTDIR"


def test_readonly_volume_gives_erofs(ctx: FsContext) -> None:
    assert errno_of(ctx.open, "/srv/deep/ro/ro.txt", OFlag.WRONLY) == errno.EROFS
    assert errno_of(ctx.open, "/srv/deep/ro/x", OFlag.CREAT | OFlag.WRONLY) == errno.EROFS
    r = ctx.resolve("/srv/deep/ro/ro.txt")
    assert errno_of(r.fs.unlink, r.rel) == errno.EROFS
    assert errno_of(r.fs.mkdir, ("d",), 0o755) == errno.EROFS
    # Reading with O_CREAT of an existing file is allowed on a read-only mount.
    ctx.open("/srv/deep/ro/ro.txt", OFlag.RDONLY | OFlag.CREAT).close()


def test_tmpfs_namespace(ctx: FsContext, task: Task) -> None:
    tmp = ctx.resolve("/tmp").fs
    assert isinstance(tmp, TmpFs)
    tmp.mkdir(("d",), 0o755)
    f = ctx.open("/tmp/d/a", OFlag.CREAT | OFlag.RDWR, 0o666)
    assert f.write(task, b"hello") == 5
    assert f.lseek(0, 0) == 0
    buf = bytearray(10)
    assert f.readinto(task, memoryview(buf)) == 5 and buf[:5] == b"hello"
    assert f.stat().mode == S_IFREG | 0o644  # umask 022
    assert errno_of(tmp.rmdir, ("d",)) == errno.ENOTEMPTY
    tmp.rename(("d", "a"), ("b",), 0)
    assert ctx.read_file("/tmp/b") == b"hello"
    tmp.symlink("/tmp/b", ("link",))
    assert ctx.read_file("/tmp/link") == b"hello"
    tmp.rmdir(("d",))
    assert errno_of(ctx.stat, "/tmp/d") == errno.ENOENT
    tmp.mkdir(("e",), 0o755)
    tmp.mkdir(("e", "f"), 0o755)
    assert errno_of(tmp.rename, ("e",), ("e", "f", "g"), 0) == errno.EINVAL
    assert errno_of(tmp.rename, ("b",), ("e",), 0) == errno.EISDIR
    assert errno_of(tmp.unlink, ("e",)) == errno.EISDIR
    tmp.unlink(("b",))
    # The open description keeps the data after unlink, like Linux.
    f.lseek(0, 0)
    assert f.readinto(task, memoryview(buf)) == 5
    f.close()


def test_tmpfs_size_cap() -> None:
    fs = FsContext.build(TmpFs())
    tmp = TmpFs(size_limit=8192)
    fs.vfs.mount("/small", tmp)
    task = task_of(fs)
    f = fs.open("/small/f", OFlag.CREAT | OFlag.WRONLY)
    f.write(task, b"x" * 8192)
    assert errno_of(f.write, task, b"y") == errno.ENOSPC
    f.truncate(0)
    f.lseek(0, 0)
    assert f.write(task, b"y") == 1


def test_manifest_root(tmp_path: Path) -> None:
    host = tmp_path / "libc.so.6"
    host.write_bytes(b"LIBC")
    prog = tmp_path / "prog"
    prog.write_bytes(b"PROG")
    prog.chmod(0o755)
    root = ManifestFs(
        {"/usr/lib/x86_64-linux-gnu/libc.so.6": str(host), "/app/prog": str(prog)},
        {"/lib": "usr/lib", "/lib64": "/usr/lib"},
    )
    ctx = FsContext.build(root)
    assert {"usr", "app", "lib", "lib64", "tmp", "dev", "proc"} <= names(ctx, "/")
    assert names(ctx, "/usr/lib") == {"x86_64-linux-gnu"}
    assert ctx.read_file("/lib/x86_64-linux-gnu/libc.so.6") == b"LIBC"
    assert ctx.read_file("/lib64/x86_64-linux-gnu/libc.so.6") == b"LIBC"
    assert ctx.stat("/app/prog").mode == S_IFREG | 0o755
    assert errno_of(ctx.open, "/app/prog", OFlag.WRONLY) == errno.EROFS
    assert errno_of(ctx.open, "/app/new", OFlag.CREAT | OFlag.WRONLY) == errno.EROFS
    assert errno_of(ctx.stat, "/app/prog/x") == errno.ENOTDIR
    with pytest.raises(ValueError):
        ManifestFs({"/a": str(host), "/a/b": str(host)})


def test_dev_and_proc(ctx: FsContext) -> None:
    caller = task_of(FsContext.build(TmpFs()))  # not of ctx: its /proc stays without one
    null = ctx.open("/dev/null", OFlag.RDWR)
    assert null.write(caller, b"abc") == 3
    assert null.readinto(caller, memoryview(bytearray(4))) == 0
    full = ctx.open("/dev/full", OFlag.WRONLY)
    assert errno_of(full.write, caller, b"x") == errno.ENOSPC
    buf = bytearray(b"\xff" * 100)
    assert ctx.open("/dev/zero", OFlag.RDONLY).readinto(caller, memoryview(buf)) == 100
    assert buf == bytes(100)
    assert ctx.resolve("/dev/stdout", follow=False).fs.readlink(("stdout",)) == "/proc/self/fd/1"
    # /proc needs a process; without one it is empty rather than wrong.
    assert errno_of(ctx.stat, "/proc/self") == errno.ENOENT
    assert "cpuinfo" in names(ctx, "/proc")


def test_fdtable_dup_cloexec_and_limit(ctx: FsContext) -> None:
    fds = FdTable(limit=8)
    f = ctx.open("/etc/passwd", OFlag.RDONLY)
    a = fds.install(f)
    b = fds.install(f, cloexec=True)
    assert (a, b) == (0, 1) and f.refs == 2
    assert fds.get_cloexec(1) and not fds.get_cloexec(0)
    fds.close(0)
    assert fds.install(f) == 0  # lowest free
    fds.install_at(5, f)
    assert fds.install(f, lowest=5) == 6
    fds.close_range(0, 7)
    assert f.refs == 0
    assert errno_of(fds.get, 0) == errno.EBADF
    for _ in range(8):
        fds.install(ctx.open("/etc/passwd", OFlag.RDONLY))
    assert errno_of(fds.install, f) == errno.EMFILE
    assert errno_of(fds.install_at, 8, f) == errno.EBADF
    fds.close_all()


def test_stdio_fds_are_duplicates() -> None:
    fds = FdTable.with_stdio()
    assert fds.fds() == [0, 1, 2]
    out = fds.get(1)
    assert out.host_fd() not in (0, 1, 2)
    assert out.flags & O_ACCMODE in (OFlag.WRONLY, OFlag.RDWR)
    fds.close_all()
    os.fstat(1)  # the monitor's own stdout is still open


# -- the syscall handlers, on real guest memory (an mmap; no vCPU needed) ----------------

PATH, BUF, STATBUF = BASE, BASE + 0x1000, BASE + 0x3000


@pytest.fixture
def task(ctx: FsContext) -> Task:
    return task_of(ctx)


def call(task: Task, name: str, *args: int) -> int:
    return dispatch(task, NR[name], tuple(a & (2**64 - 1) for a in args))


def put_path(task: Task, path: str, at: int = PATH) -> int:
    task.mem.write(at, path.encode() + b"\0")
    return at


def test_handlers_open_read_stat_getdents(task: Task) -> None:
    fd = call(task, "openat", -100, put_path(task, "/abs-passwd"), 0, 0)
    assert fd == 3
    assert call(task, "read", fd, BUF, 1 << 40) == 13  # a huge count is not an allocation
    assert task.mem.read(BUF, 13) == b"guest passwd\n"
    assert call(task, "read", fd, BUF, 100) == 0
    assert call(task, "lseek", fd, 6, 0) == 6
    assert call(task, "pread64", fd, BUF, 6, 0) == 6
    assert call(task, "fstat", fd, STATBUF) == 0
    assert struct.unpack_from("<q", task.mem.read(STATBUF + 48, 8))[0] == 13
    assert call(task, "write", fd, BUF, 1) == -errno.EBADF
    assert call(task, "close", fd) == 0
    assert call(task, "close", fd) == -errno.EBADF
    assert call(task, "statx", -100, put_path(task, "/etc"), 0, 0x7FF, STATBUF) == 0
    assert struct.unpack_from("<H", task.mem.read(STATBUF + 28, 2))[0] & S_IFMT == S_IFDIR
    d = call(task, "open", put_path(task, "/"), OFlag.DIRECTORY, 0)
    seen: list[str] = []
    while (n := call(task, "getdents64", d, BUF, 256)) > 0:
        raw, off = task.mem.read(BUF, n), 0
        while off < n:
            reclen = struct.unpack_from("<H", raw, off + 16)[0]
            seen.append(raw[off + 19 : off + reclen].split(b"\0")[0].decode())
            off += reclen
    assert n == 0 and {".", "..", "etc", "tmp", "proc", "data", "srv"} <= set(seen)
    assert call(task, "getdents64", d, BUF, 8) == 0
    call(task, "lseek", d, 0, 0)
    assert call(task, "getdents64", d, BUF, 8) == -errno.EINVAL


def test_handlers_paths_and_fds(task: Task) -> None:
    assert call(task, "mkdir", put_path(task, "/tmp/d"), 0o755) == 0
    assert call(task, "mkdir", put_path(task, "/tmp/d"), 0o755) == -errno.EEXIST
    assert call(task, "chdir", put_path(task, "/tmp/d")) == 0
    assert call(task, "getcwd", BUF, 100) == len("/tmp/d") + 1
    assert call(task, "getcwd", BUF, 3) == -errno.ERANGE
    fd = call(task, "creat", put_path(task, "f"), 0o600)
    task.mem.write(BUF, b"abc")
    assert call(task, "write", fd, BUF, 3) == 3
    assert call(task, "dup2", fd, 10) == 10
    assert call(task, "fcntl", 10, 1, 0) == 0  # F_GETFD
    assert call(task, "fcntl", fd, 1030, 20) == 20  # F_DUPFD_CLOEXEC
    assert call(task, "fcntl", 20, 1, 0) == 1
    assert call(task, "readlink", put_path(task, f"/proc/self/fd/{fd}"), BUF, 100) == len(
        "/tmp/d/f"
    )
    assert task.mem.read(BUF, 8) == b"/tmp/d/f"
    assert (
        call(task, "rename", put_path(task, "f"), put_path(task, "/data/f", PATH + 512))
        == -errno.EXDEV
    )
    assert call(task, "rmdir", put_path(task, "/tmp/d")) == -errno.ENOTEMPTY
    assert call(task, "unlink", put_path(task, "f")) == 0
    assert call(task, "rmdir", put_path(task, "/tmp/d")) == 0
    assert call(task, "unlink", put_path(task, "/srv/deep/ro/ro.txt")) == -errno.EROFS
    assert call(task, "rmdir", put_path(task, "/tmp")) == -errno.EBUSY
    assert call(task, "access", put_path(task, "/srv/deep/ro/ro.txt"), 2) == -errno.EROFS
    assert call(task, "access", put_path(task, "/bin/prog"), 4) == 0
    assert call(task, "pipe2", BUF, OFlag.CLOEXEC) == 0
    r, w = struct.unpack("<ii", task.mem.read(BUF, 8))
    task.mem.write(BUF + 64, b"ping")
    assert call(task, "write", w, BUF + 64, 4) == 4
    assert call(task, "ioctl", r, 0x541B, BUF + 128) == 0  # FIONREAD
    assert task.mem.read_u32(BUF + 128) == 4
    assert call(task, "read", r, BUF + 256, 100) == 4
    assert call(task, "ioctl", r, 0x5401, BUF) == -errno.ENOTTY
    assert call(task, "readlink", put_path(task, f"/proc/self/fd/{r}"), BUF, 100) > 0
    assert task.mem.read(BUF, 5) == b"pipe:"
    assert call(task, "close_range", 3, 0xFFFFFFFF, 0) == 0
    assert task.process.fds.fds() == [0, 1, 2]


def test_handlers_proc(task: Task) -> None:
    fd = call(task, "open", put_path(task, "/proc/self/maps"), 0, 0)
    n = call(task, "read", fd, BUF, 4096)
    assert task.mem.read(BUF, n).startswith(b"00010000-00014000 rw-p 00000000 00:00 0")
    fd = call(task, "open", put_path(task, "/proc/self/cmdline"), 0, 0)
    assert task.mem.read(BUF, call(task, "read", fd, BUF, 100)) == b"/bin/prog\0x\0"
    assert call(task, "readlink", put_path(task, "/proc/self/exe"), BUF, 100) == 9
    # /dev/stdout -> /proc/self/fd/1 -> the guest's fd 1 (a magic link)
    out = call(task, "open", put_path(task, "/dev/stdout"), OFlag.WRONLY, 0)
    assert out > 2 and call(task, "write", out, BUF, 0) == 0


def test_a_volume_deep_in_the_root_is_found_in_one_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path below a volume at /usr/share/site (as users mount a web site) is looked up in
    one step: the walk's lookups of /usr and /usr/share are not made again, for a missing
    file either. A symlink on the way is followed, as the walk does. Under a writable root
    (an OCI bundle's) the way is checked at each lookup (one host lookup, no walk): after
    the guest swaps /usr or /usr/share with a symlink (renameat2 RENAME_EXCHANGE), paths
    follow the symlink, not into the volume."""
    root, site, other = tmp_path / "root", tmp_path / "site", tmp_path / "root" / "other"
    (root / "usr" / "share").mkdir(parents=True)
    (other / "share" / "site").mkdir(parents=True)
    (other / "share" / "site" / "page").write_text("other")
    os.symlink("other", root / "linked")
    site.mkdir()
    (site / "page").write_text("volume")
    lookups: list[Rel] = []
    real_lstat = HostDirFs.lstat

    def counted(fs: HostDirFs, rel: Rel) -> Stat:
        lookups.append(rel)
        return real_lstat(fs, rel)

    monkeypatch.setattr(HostDirFs, "lstat", counted)

    def page(task: Task, path: str) -> str:
        fd = call(task, "openat", -100, put_path(task, path), 0, 0)
        assert fd >= 0, errno.errorcode[-fd]
        n = call(task, "read", fd, BUF, 100)
        assert call(task, "close", fd) == 0
        return task.mem.read(BUF, n).decode()

    def task_with_root(readonly: bool) -> Task:
        return task_of(FsContext.build(HostDirFs(str(root), readonly),
                                       volumes=[(str(site), "/usr/share/site", False),
                                                (str(site), "/linked/share/site", False)]))

    task = task_with_root(readonly=True)
    assert page(task, "/usr/share/site/page") == "volume"
    lookups.clear()
    assert page(task, "/usr/share/site/page") == "volume"
    assert call(task, "openat", -100, put_path(task, "/usr/share/site/nope"), 0, 0) \
        == -errno.ENOENT
    assert lookups == []  # one step each: openat in the volume, nothing on the way
    assert page(task, "/linked/share/site/page") == "other"  # the link is followed

    task = task_with_root(readonly=False)
    assert page(task, "/usr/share/site/page") == "volume"
    lookups.clear()
    assert page(task, "/usr/share/site/page") == "volume"
    assert lookups == []  # no walk
    assert call(task, "symlink", put_path(task, "/other/share"),
                put_path(task, "/to-share", BUF)) == 0
    assert call(task, "renameat2", -100, put_path(task, "/to-share"), -100,
                put_path(task, "/usr/share", BUF), 2) == 0
    assert page(task, "/usr/share/site/page") == "other"  # the step below, too
    assert call(task, "renameat2", -100, put_path(task, "/to-share"), -100,
                put_path(task, "/usr/share", BUF), 2) == 0
    assert page(task, "/usr/share/site/page") == "volume"
    assert call(task, "symlink", put_path(task, "/other"), put_path(task, "/to-other", BUF)) \
        == 0
    assert call(task, "renameat2", -100, put_path(task, "/to-other"), -100,  # swapped:
                put_path(task, "/usr", BUF), 2) == 0  # RENAME_EXCHANGE (a missing /usr
    assert page(task, "/usr/share/site/page") == "other"  # would be a mount's way: EBUSY)


@pytest.mark.parametrize("binding", ["C", "Python"])
def test_a_host_mount_lstat_sees_what_the_host_sees_and_follows_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, binding: str
) -> None:
    """HostDirFs.lstat of a path of two names or more: one C call (_hostcalls), or three
    host calls where that binding is not built. Both give the host's lstat of the file or
    of a last-name symlink itself, and follow no symlink on the way, however it points
    (ELOOP; ENOTDIR as the parent's own name), with the host's errno for a missing or
    non-directory step."""
    from karn.kernel.fs import hostfs

    if binding == "Python":
        monkeypatch.setattr(hostfs, "_hostcalls", None)
        monkeypatch.setattr(hostfs, "_hostcalls_looked_for", True)
    else:
        assert hostfs._load_hostcalls() is not None, "karn/kernel/fs/_hostcalls.c not built"
    root = tmp_path / "vol"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "page").write_text("x" * 612)
    os.symlink("page", root / "a" / "b" / "link")
    os.symlink(str(tmp_path), root / "a" / "out")  # outside the mount
    os.symlink("b", root / "a" / "in")  # inside, but a symlink all the same
    fs = HostDirFs(str(root), readonly=True)
    for rel in [("a", "b", "page"), ("a", "b", "link"), ("a", "b"), ("a", "out")]:
        host = os.lstat(root.joinpath(*rel))
        st = fs.lstat(rel)
        assert (st.mode, st.ino, st.dev, st.nlink, st.size, st.mtime_ns, st.ctime_ns) == (
            host.st_mode, host.st_ino, host.st_dev, host.st_nlink, host.st_size,
            host.st_mtime_ns, host.st_ctime_ns), rel
    (root / "a" / "b" / "c").mkdir()
    assert errno_of(fs.lstat, ("a", "out", "vol", "a")) == errno.ELOOP
    assert errno_of(fs.lstat, ("a", "in", "c", "x")) == errno.ELOOP
    assert errno_of(fs.lstat, ("a", "out", "vol")) == errno.ENOTDIR  # the parent's last
    assert errno_of(fs.lstat, ("a", "in", "page")) == errno.ENOTDIR  # name: not a dir
    assert errno_of(fs.lstat, ("a", "nope", "page")) == errno.ENOENT
    assert errno_of(fs.lstat, ("a", "b", "nope")) == errno.ENOENT
    assert errno_of(fs.lstat, ("a", "b", "page", "x")) == errno.ENOTDIR
