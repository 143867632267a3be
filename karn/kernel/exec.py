"""execve and execveat (man 2 execve), in the calling process's own VM (docs/design/
processes.md, section 5.1).

Everything that can fail with an errno happens before the point of no return: the path
resolved in the guest's filesystem (root, volumes, tmpfs; never a host path), `#!`
interpreters followed, the ELF program and its PT_INTERP read and checked, argv and envp
copied out of guest memory. Then, as Linux's begin_new_exec: the other threads end (the
caller takes the pid), the old mappings go, close-on-exec fds close, caught signals
return to their default action, POSIX timers go, and the loader maps the new program
with a fresh ASLR placement. A failure past that point kills the process with SIGSEGV,
as Linux does; before it, the call fails and the old program runs on.
"""

from __future__ import annotations

import errno
import os
import struct
import time

from karn import log
from karn.abi.errno import SyscallError
from karn.abi.registers import s32
from karn.abi.signals import NSIG, SIGSEGV
from karn.errors import ImageError
from karn.hints import TYPE_CHECKING, NamedTuple
from karn.image.shebang import BINPRM_BUF_SIZE, MAX_SCRIPT_DEPTH, parse_shebang
from karn.kernel import caps
from karn.kernel.fs.constants import (
    AT_EMPTY_PATH,
    AT_FDCWD,
    AT_SYMLINK_NOFOLLOW,
    S_IFLNK,
    S_IFMT,
    S_IFREG,
    X_OK,
    OFlag,
)
from karn.kernel.fs.file import read_prefix
from karn.kernel.fs.sysutil import base_of, path_arg
from karn.kernel.limits import RLIMIT_STACK
from karn.kernel.process import ThreadExit
from karn.kernel.signals import SIG_IGN, AltStack, SigAction
from karn.kernel.sys_timer import delete_posix_timer
from karn.loader.aslr import choose_placement, mmap_top
from karn.loader.program import ElfFile, Executable, map_executable, open_elf

if TYPE_CHECKING:
    from karn.kernel.fs.file import OpenFile
    from karn.kernel.fs.stat import Stat
    from karn.kernel.process import Process, Task

PAGE = 4096
MAX_ARG_STRLEN = 32 * PAGE  # one argument or environment string, with its NUL
ARG_MAX = 32 * PAGE  # the least room for them all, whatever RLIMIT_STACK says
STK_LIM = 8 << 20  # Linux's _STK_LIM: at most 3/4 of it for them all
ELF_MAGIC = b"\x7fELF"
INITIAL_RFLAGS = 0x2  # as the first program starts (platform/vcpu.py start)
DE_THREAD_KICK = 0.05  # seconds between reminders to threads told to end
FCW_INIT, MXCSR_INIT, XSTATE_X87_SSE = 0x37F, 0x1F80, 0x3


class _Program(NamedTuple):
    """An executable file found, open for reading (pread: no offset is moved)."""

    path: str  # its guest path, symlinks resolved (mappings, /proc/self/exe)
    file: OpenFile
    owned: bool  # opened here (closed when read); else the guest's own fd's file

    def close(self) -> None:
        if self.owned:
            self.file.close()


# -- finding the file -----------------------------------------------------------------


def _check_executable(st: Stat) -> None:
    fmt = st.mode & S_IFMT
    if fmt == S_IFLNK:  # AT_SYMLINK_NOFOLLOW on a symlink
        raise SyscallError(errno.ELOOP)
    if fmt != S_IFREG or not st.mode & 0o111:  # the guest is root: any execute bit
        raise SyscallError(errno.EACCES)


def _open_file(file: OpenFile) -> _Program:
    """An open file description as execve's program (fexecve, /proc/self/fd/N)."""
    _check_executable(file.stat())
    return _Program(file.path, file, owned=False)


def _open_path(task: Task, path: str, base: tuple[str, ...] | None, follow: bool) -> _Program:
    r = task.process.fs.resolve(path, base, follow)
    if r.magic is not None:
        return _open_file(r.magic)
    st = r.require()
    if r.virtual:  # a directory that only holds a mount point
        raise SyscallError(errno.EACCES)
    _check_executable(st)
    r.fs.access(r.rel, X_OK)
    return _Program(r.path, r.fs.open(r.rel, int(OFlag.RDONLY), 0, r.path), owned=True)


def _open_program(task: Task, dirfd: int, path: str, flags: int) -> tuple[_Program, str]:
    """The program execveat names, and the filename it goes by (a `#!` interpreter's
    argument, AT_EXECFN, comm): the path as given, or /dev/fd/N[/path] as Linux makes
    it."""
    fd = s32(dirfd)
    if not path:
        if not flags & AT_EMPTY_PATH:
            raise SyscallError(errno.ENOENT)
        if fd == AT_FDCWD:
            return _open_path(task, ".", None, True), "."
        return _open_file(task.process.fds.get(fd)), f"/dev/fd/{fd}"
    program = _open_path(task, path, base_of(task, dirfd, path),
                         not flags & AT_SYMLINK_NOFOLLOW)
    name = path if fd == AT_FDCWD or path.startswith("/") else f"/dev/fd/{fd}/{path}"
    return program, name


def _open_interpreter(task: Task, path: str) -> _Program:
    return _open_path(task, path, None, True)


def _busy(proc: Process, st: Stat) -> bool:
    """ETXTBSY: the file is open for writing (an fd, or a shared writable mapping)."""
    files = [f for _fd, f in proc.fds.items()]
    files += [f for f, _off, _len in proc.mm.shared_files.values()]
    for f in files:
        if not (f.is_regular and f.writable):
            continue
        try:
            other = f.stat()
        except SyscallError:
            continue
        if (other.dev, other.ino) == (st.dev, st.ino):
            return True
    return False


# -- arguments ------------------------------------------------------------------------


class _ArgSpace:
    """Room for the argument and environment strings, as Linux's bprm_stack_limits:
    a quarter of RLIMIT_STACK, at most 3/4 of 8 MiB, at least ARG_MAX, less the
    pointers; each string at most MAX_ARG_STRLEN. E2BIG past either."""

    def __init__(self, proc: Process) -> None:
        stack = proc.rlimits[RLIMIT_STACK][0]
        self.left = max(min(STK_LIM // 4 * 3, stack // 4), ARG_MAX)

    def take_pointers(self, count: int) -> None:
        self.left -= 8 * count
        if self.left <= 0:
            raise SyscallError(errno.E2BIG)

    def take(self, text: bytes) -> bytes:
        size = len(text) + 1
        if size > MAX_ARG_STRLEN or size > self.left:
            raise SyscallError(errno.E2BIG)
        self.left -= size
        return text


def _pointers(task: Task, array: int, room: int) -> list[int]:
    """A NULL-terminated array of string pointers (argv, envp); a NULL array is empty."""
    out: list[int] = []
    while array:
        ptr = task.mem.read_u64(array + 8 * len(out))
        if not ptr:
            break
        out.append(ptr)
        if 8 * len(out) >= room:  # more pointers than the strings could ever have room for
            raise SyscallError(errno.E2BIG)
    return out


def _strings(task: Task, pointers: list[int], space: _ArgSpace) -> list[bytes]:
    out = []
    for ptr in pointers:
        try:
            text = task.mem.read_cstring(ptr, MAX_ARG_STRLEN)
        except SyscallError as err:
            if err.errno == errno.ENAMETOOLONG:
                raise SyscallError(errno.E2BIG) from None
            raise
        out.append(space.take(bytes(text)))
    return out


def _arguments(task: Task, argv: int, envp: int, filename: str) -> tuple[list[bytes],
                                                                         list[bytes],
                                                                         _ArgSpace]:
    space = _ArgSpace(task.process)
    arg_ptrs = _pointers(task, argv, space.left)
    env_ptrs = _pointers(task, envp, space.left)
    space.take_pointers(max(len(arg_ptrs), 1) + len(env_ptrs))
    space.take(os.fsencode(filename))
    env = _strings(task, env_ptrs, space)
    args = _strings(task, arg_ptrs, space)
    if not args:  # Linux gives a program started with no argv an empty argv[0]
        args = [space.take(b"")]
    return args, env, space


# -- the new program, checked ---------------------------------------------------------


class _Image(NamedTuple):
    executable: Executable
    argv: list[bytes]
    exe_path: str  # what /proc/self/exe shows: the ELF file mapped


def _find_image(task: Task, program: _Program, filename: str, argv: list[bytes],
                space: _ArgSpace) -> _Image:
    """Follow `#!` interpreters to an ELF program; read and check it and its PT_INTERP."""
    proc = task.process
    depth = 0
    while True:
        try:
            if _busy(proc, program.file.stat()):
                raise SyscallError(errno.ETXTBSY)
            head = bytes(read_prefix(program.file, BINPRM_BUF_SIZE))
            if head.startswith(ELF_MAGIC):
                main = _open_elf(program, errno.ENOEXEC)
                return _Image(_with_interpreter(task, main), argv, program.path)
            script = parse_shebang(head)
        finally:
            program.close()
        if script is None:
            raise SyscallError(errno.ENOEXEC)
        interp, arg = script
        extra = [space.take(interp), *([space.take(arg)] if arg is not None else [])]
        argv = [*extra, space.take(os.fsencode(filename)), *argv[1:]]
        filename = os.fsdecode(interp)
        program = _open_interpreter(task, filename)
        depth += 1
        if depth > MAX_SCRIPT_DEPTH:  # checked once the next one is open, as Linux does
            program.close()
            raise SyscallError(errno.ELOOP)


def _open_elf(program: _Program, bad: int) -> ElfFile:
    """The program or interpreter checked (errno `bad` if it is no usable ELF); a host
    file's own fd kept to map it from, another file read whole."""
    try:
        return open_elf(program.file, program.path)
    except ImageError:
        raise SyscallError(bad) from None
    except SyscallError as err:  # too big to read whole: karn cannot hold it
        raise SyscallError(errno.ENOMEM if err.errno == errno.EFBIG else err.errno) from None


def _with_interpreter(task: Task, main: ElfFile) -> Executable:
    if not main.info.interpreter:
        return Executable(main, None)
    try:
        interp = _open_interpreter(task, main.info.interpreter)
        try:
            return Executable(main, _open_elf(interp, errno.ELIBBAD))
        finally:
            interp.close()
    except BaseException:
        main.close()
        raise


# -- past the point of no return ------------------------------------------------------


def _end_other_threads(task: Task) -> None:
    """Linux's de_thread: every other thread ends first; the caller takes the pid."""
    proc = task.process
    told: dict[int, float] = {}
    while True:
        if task.exit_requested or proc.exit_status is not None:
            raise ThreadExit  # the process is ending (or another execve won): so does this
        with proc.signal_lock:
            others = [t for t in proc.tasks.values() if t is not task]
        if not others:
            break
        now = time.monotonic()
        for other in others:
            if now - told.get(id(other), 0.0) >= DE_THREAD_KICK:
                told[id(other)] = now
                other.exit_requested = True
                other.interrupt()
        time.sleep(0.001)
    with proc.signal_lock:
        if task.tid != proc.pid:
            del proc.tasks[task.tid]
            task.tid = proc.pid
            proc.tasks[task.tid] = task


def _reset_process(task: Task) -> None:
    """What execve resets: close-on-exec fds, caught signals (ignored ones stay ignored),
    the alternate stack, POSIX timers, the robust list and clear_child_tid, membarrier
    registrations (a new mm's); the capability sets are a new program's. The blocked
    mask, pending signals and interval timers (alarm, setitimer) stay."""
    proc = task.process
    proc.membarrier = 0
    caps.executed(proc.identity)
    fds = proc.fds
    for fd in fds.fds():
        if fds.get_cloexec(fd):
            fds.close(fd)
    with proc.signal_lock:
        for sig in range(1, NSIG + 1):
            if proc.actions[sig].handler == SIG_IGN:
                proc.actions[sig] = SigAction(SIG_IGN)
            else:
                proc.actions[sig] = SigAction()
    task.altstack = AltStack()
    task.saved_mask = None
    for timer in list(proc.posix_timers.values()):
        delete_posix_timer(proc, timer)
    proc.futex.robust_list(task)  # one set in the guest before is gone too
    task.robust_list = task.robust_list_len = task.clear_child_tid = 0


def _initial_fpu(size: int) -> bytes:
    """An XSAVE image with x87 and SSE in their reset state, every other component init."""
    state = bytearray(size)
    struct.pack_into("<H", state, 0, FCW_INIT)
    struct.pack_into("<I", state, 24, MXCSR_INIT)
    struct.pack_into("<Q", state, 512, XSTATE_X87_SSE)
    return bytes(state)


def _take_identity(task: Task, image: _Image, envp: list[bytes], filename: str,
                   name: str) -> None:
    """What /proc and `karn ps` show of the new program, set before the table hears of
    the exec: a vfork parent released then already sees the child as the new program.
    The name first: a reader that sees the new command line sees the new name too (one
    waiting for the exec reads cmdline, then comm)."""
    proc = task.process
    task.comm = os.fsencode(os.path.basename(name))[:15]
    proc.config.argv = image.argv
    proc.config.envp = envp
    proc.config.exe_path = image.exe_path
    proc.exec_path = filename


def _replace_image(task: Task, image: _Image, envp: list[bytes], filename: str) -> None:
    from karn.kernel.sys_mm import write_back

    proc = task.process
    settings = proc.load_settings
    assert settings is not None
    mm = proc.mm
    if mm.shared_files:  # dirty shared pages reach their files before the mappings go
        write_back(proc.mem, mm, 0, mm.region.user_end, forget=True)
    placement = choose_placement(settings.randomize)
    mm.discard_all(mmap_top(mm.region.user_end, placement))
    _reset_process(task)
    loaded = map_executable(proc.mem, mm, image.executable, image.argv, envp, settings.cpu,
                            placement, settings.clock, os.fsencode(filename))
    cpu = task.vcpu
    regs = dict.fromkeys(cpu.get_context(), 0)
    regs.update(rip=loaded.rip, rsp=loaded.rsp, rflags=INITIAL_RFLAGS)
    cpu.set_context(regs)
    cpu.set_fpu(_initial_fpu(cpu.xsave_size))
    cpu.set_fs_base(0)
    cpu.set_gs_base(0)
    proc.image = loaded


# -- the calls ------------------------------------------------------------------------


def _execveat(task: Task, dirfd: int, pathname: int, argv: int, envp: int, flags: int) -> int:
    flags = s32(flags)
    if flags & ~(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW):
        raise SyscallError(errno.EINVAL)
    proc = task.process
    if proc.load_settings is None:
        raise SyscallError(errno.ENOSYS)
    path = path_arg(task, pathname)
    while not proc.exec_lock.acquire(timeout=DE_THREAD_KICK):
        if task.exit_requested or proc.exit_status is not None:
            raise ThreadExit  # another thread's execve is ending this one
    try:
        program, filename = _open_program(task, dirfd, path, flags)
        # comm: the name execve was given; by fd, the file's own name (as Linux 6.x)
        name = program.path if filename.startswith("/dev/fd/") else filename
        try:
            args, env, space = _arguments(task, argv, envp, filename)
        except BaseException:
            program.close()
            raise
        image = _find_image(task, program, filename, args, space)
        try:
            _end_other_threads(task)
            try:
                # The table hears of the exec at the point of no return, as Linux's
                # exec_mmap releases a vfork parent: the parent runs on while the new
                # image is loaded.
                _take_identity(task, image, env, filename, name)
                proc.execed()
                _replace_image(task, image, env, filename)
            except (SyscallError, ImageError, OSError, ValueError) as err:
                log.warning("execve %s failed past the point of no return (%s); the "
                            "process is killed with SIGSEGV, as Linux does", filename, err)
                proc.terminate_by_signal(SIGSEGV, core=False)
                raise ThreadExit from None
        finally:
            image.executable.close()  # mapped: the mappings hold the files now
    finally:
        proc.exec_lock.release()
    return 0


def sys_execve(task: Task, pathname: int, argv: int, envp: int) -> int:
    return _execveat(task, AT_FDCWD, pathname, argv, envp, 0)


def sys_execveat(task: Task, dirfd: int, pathname: int, argv: int, envp: int,
                 flags: int) -> int:
    return _execveat(task, dirfd, pathname, argv, envp, flags)


HANDLERS = {
    "execve": sys_execve,
    "execveat": sys_execveat,
}
