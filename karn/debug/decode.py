"""strace-style rendering of syscall arguments and results: strings, flags, structs.

A signature is a tuple of argument kinds, one per register argument the trace shows.
Kinds that read guest memory are decoded after the call (so out-parameters such as a
read's buffer or a stat struct are shown filled), and every read is bounds-checked: an
unreadable pointer prints as its address, never fails the trace.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from karn.abi.errno import SyscallError, errno_name
from karn.abi.registers import s32, s64
from karn.abi.signals import signal_name
from karn.kernel.guestmem import GuestMemory

STRING_LIMIT = 32  # bytes of a buffer shown, like strace -s 32
ARRAY_LIMIT = 16
AT_FDCWD = -100

Arg = str  # a kind, optionally "kind:N" (N: the index of the length argument)

# -- flag tables ---------------------------------------------------------------------------

O_FLAGS = [
    (0o100, "O_CREAT"), (0o200, "O_EXCL"), (0o400, "O_NOCTTY"), (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"), (0o4000, "O_NONBLOCK"), (0o10000, "O_DSYNC"), (0o20000, "O_ASYNC"),
    (0o40000, "O_DIRECT"), (0o200000, "O_DIRECTORY"), (0o400000, "O_NOFOLLOW"),
    (0o1000000, "O_NOATIME"), (0o2000000, "O_CLOEXEC"), (0o4010000, "O_SYNC"),
    (0o10000000, "O_PATH"), (0o20200000, "O_TMPFILE"), (0o100000, "O_LARGEFILE"),
]
PROT_FLAGS = [(1, "PROT_READ"), (2, "PROT_WRITE"), (4, "PROT_EXEC")]
MAP_FLAGS = [
    (0x10, "MAP_FIXED"), (0x20, "MAP_ANONYMOUS"), (0x100, "MAP_GROWSDOWN"),
    (0x800, "MAP_DENYWRITE"), (0x1000, "MAP_EXECUTABLE"), (0x2000, "MAP_LOCKED"),
    (0x4000, "MAP_NORESERVE"), (0x8000, "MAP_POPULATE"), (0x10000, "MAP_NONBLOCK"),
    (0x20000, "MAP_STACK"), (0x40000, "MAP_HUGETLB"), (0x100000, "MAP_FIXED_NOREPLACE"),
]
MAP_TYPES = {1: "MAP_SHARED", 2: "MAP_PRIVATE", 3: "MAP_SHARED_VALIDATE"}
AT_FLAGS = [
    (0x100, "AT_SYMLINK_NOFOLLOW"), (0x200, "AT_REMOVEDIR"), (0x400, "AT_SYMLINK_FOLLOW"),
    (0x800, "AT_NO_AUTOMOUNT"), (0x1000, "AT_EMPTY_PATH"),
]
CLONE_FLAGS = [
    (0x100, "CLONE_VM"), (0x200, "CLONE_FS"), (0x400, "CLONE_FILES"),
    (0x800, "CLONE_SIGHAND"), (0x1000, "CLONE_PIDFD"), (0x4000, "CLONE_VFORK"),
    (0x8000, "CLONE_PARENT"), (0x10000, "CLONE_THREAD"), (0x20000, "CLONE_NEWNS"),
    (0x40000, "CLONE_SYSVSEM"), (0x80000, "CLONE_SETTLS"), (0x100000, "CLONE_PARENT_SETTID"),
    (0x200000, "CLONE_CHILD_CLEARTID"), (0x1000000, "CLONE_CHILD_SETTID"),
]
FUTEX_OPS = {
    0: "FUTEX_WAIT", 1: "FUTEX_WAKE", 3: "FUTEX_REQUEUE", 4: "FUTEX_CMP_REQUEUE",
    5: "FUTEX_WAKE_OP", 6: "FUTEX_LOCK_PI", 7: "FUTEX_UNLOCK_PI", 9: "FUTEX_WAIT_BITSET",
    10: "FUTEX_WAKE_BITSET",
}
SIGPROCMASK_HOW = {0: "SIG_BLOCK", 1: "SIG_UNBLOCK", 2: "SIG_SETMASK"}
WHENCE = {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"}
CLOCKS = {
    0: "CLOCK_REALTIME", 1: "CLOCK_MONOTONIC", 2: "CLOCK_PROCESS_CPUTIME_ID",
    3: "CLOCK_THREAD_CPUTIME_ID", 4: "CLOCK_MONOTONIC_RAW", 5: "CLOCK_REALTIME_COARSE",
    6: "CLOCK_MONOTONIC_COARSE", 7: "CLOCK_BOOTTIME", 11: "CLOCK_TAI",
}
FCNTL_CMDS = {
    0: "F_DUPFD", 1: "F_GETFD", 2: "F_SETFD", 3: "F_GETFL", 4: "F_SETFL", 5: "F_GETLK",
    6: "F_SETLK", 7: "F_SETLKW", 1030: "F_DUPFD_CLOEXEC", 1033: "F_ADD_SEALS",
    1034: "F_GET_SEALS",
}
ARCH_PRCTL = {0x1001: "ARCH_SET_GS", 0x1002: "ARCH_SET_FS", 0x1003: "ARCH_GET_FS",
              0x1004: "ARCH_GET_GS", 0x3001: "ARCH_CET_STATUS"}
ADDRESS_FAMILIES = {0: "AF_UNSPEC", 1: "AF_UNIX", 2: "AF_INET", 10: "AF_INET6",
                    16: "AF_NETLINK", 17: "AF_PACKET"}
SOCK_TYPES = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 5: "SOCK_SEQPACKET"}
ACCESS_MODES = [(4, "R_OK"), (2, "W_OK"), (1, "X_OK")]
# the tty and file ioctls programs make most (asm-generic/ioctls.h), named as strace does
IOCTLS = {
    0x5401: "TCGETS", 0x5402: "TCSETS", 0x5403: "TCSETSW", 0x5404: "TCSETSF",
    0x5409: "TCSBRK", 0x540A: "TCXONC", 0x540B: "TCFLSH", 0x540E: "TIOCSCTTY",
    0x540F: "TIOCGPGRP", 0x5410: "TIOCSPGRP", 0x5411: "TIOCOUTQ", 0x5413: "TIOCGWINSZ",
    0x5414: "TIOCSWINSZ", 0x541B: "FIONREAD", 0x5421: "FIONBIO", 0x5422: "TIOCNOTTY",
    0x5429: "TIOCGSID", 0x5450: "FIONCLEX", 0x5451: "FIOCLEX", 0x5452: "FIOASYNC",
    0x80045430: "TIOCGPTN", 0x40045431: "TIOCSPTLCK",
}
S_IFMT = {0o140000: "S_IFSOCK", 0o120000: "S_IFLNK", 0o100000: "S_IFREG", 0o60000: "S_IFBLK",
          0o40000: "S_IFDIR", 0o20000: "S_IFCHR", 0o10000: "S_IFIFO"}

# -- signatures ----------------------------------------------------------------------------

SIGNATURES: dict[str, tuple[Arg, ...]] = {
    "read": ("fd", "obuf:2", "u"), "write": ("fd", "ibuf:2", "u"),
    "pread64": ("fd", "obuf:2", "u", "d"), "pwrite64": ("fd", "ibuf:2", "u", "d"),
    "readv": ("fd", "oiov:2", "u"), "writev": ("fd", "iiov:2", "u"),
    "preadv": ("fd", "oiov:2", "u", "d"), "pwritev": ("fd", "iiov:2", "u", "d"),
    "open": ("path", "oflags", "mode"), "openat": ("dirfd", "path", "oflags", "mode"),
    "creat": ("path", "mode"), "close": ("fd",),
    "stat": ("path", "stat"), "lstat": ("path", "stat"), "fstat": ("fd", "stat"),
    "newfstatat": ("dirfd", "path", "stat", "atflags"),
    "statx": ("dirfd", "path", "atflags", "x", "p"),
    "access": ("path", "amode"), "faccessat": ("dirfd", "path", "amode"),
    "faccessat2": ("dirfd", "path", "amode", "atflags"),
    "lseek": ("fd", "d", "whence"), "dup": ("fd",), "dup2": ("fd", "fd"),
    "dup3": ("fd", "fd", "oflags"), "pipe": ("p",), "pipe2": ("p", "oflags"),
    "fcntl": ("fd", "fcntl", "x"), "ioctl": ("fd", "ioctl", "x"),
    "getdents64": ("fd", "p", "u"), "getcwd": ("ostr", "u"),
    "chdir": ("path",), "fchdir": ("fd",), "mkdir": ("path", "mode"),
    "mkdirat": ("dirfd", "path", "mode"), "rmdir": ("path",), "unlink": ("path",),
    "unlinkat": ("dirfd", "path", "atflags"), "rename": ("path", "path"),
    "renameat": ("dirfd", "path", "dirfd", "path"),
    "renameat2": ("dirfd", "path", "dirfd", "path", "x"),
    "link": ("path", "path"), "linkat": ("dirfd", "path", "dirfd", "path", "atflags"),
    "symlink": ("path", "path"), "symlinkat": ("path", "dirfd", "path"),
    "readlink": ("path", "ostr", "u"), "readlinkat": ("dirfd", "path", "ostr", "u"),
    "chmod": ("path", "mode"), "fchmod": ("fd", "mode"), "fchmodat": ("dirfd", "path", "mode"),
    "chown": ("path", "d", "d"), "fchown": ("fd", "d", "d"), "lchown": ("path", "d", "d"),
    "fchownat": ("dirfd", "path", "d", "d", "atflags"),
    "truncate": ("path", "d"), "ftruncate": ("fd", "d"), "fsync": ("fd",),
    "fdatasync": ("fd",), "statfs": ("path", "p"), "fstatfs": ("fd", "p"),
    "utimensat": ("dirfd", "path", "p", "atflags"), "execve": ("path", "argv", "p"),
    "sendfile": ("fd", "fd", "p", "u"), "copy_file_range": ("fd", "p", "fd", "p", "u", "x"),
    "mmap": ("p", "u", "prot", "mapflags", "fd", "x"), "munmap": ("p", "u"),
    "mprotect": ("p", "u", "prot"), "mremap": ("p", "u", "u", "x", "p"), "brk": ("p",),
    "madvise": ("p", "u", "d"), "msync": ("p", "u", "x"),
    "rt_sigaction": ("sig", "p", "p", "u"), "rt_sigprocmask": ("sighow", "p", "p", "u"),
    "rt_sigreturn": (), "rt_sigsuspend": ("p", "u"), "sigaltstack": ("p", "p"),
    "kill": ("d", "sig"), "tkill": ("d", "sig"), "tgkill": ("d", "d", "sig"),
    "rt_sigqueueinfo": ("d", "sig", "p"), "alarm": ("u",), "pause": (),
    "clone": ("clone", "p", "p", "p", "x"), "clone3": ("p", "u"),
    "exit": ("d",), "exit_group": ("d",), "wait4": ("d", "p", "x", "p"),
    "set_tid_address": ("p",), "set_robust_list": ("p", "u"),
    "futex": ("p", "futex", "u", "p", "p", "u"), "arch_prctl": ("arch_prctl", "p"),
    "clock_gettime": ("clock", "p"), "clock_getres": ("clock", "p"),
    "clock_nanosleep": ("clock", "x", "p", "p"), "nanosleep": ("p", "p"),
    "gettimeofday": ("p", "p"), "time": ("p",),
    "poll": ("p", "u", "d"), "ppoll": ("p", "u", "p", "p", "u"),
    "select": ("d", "p", "p", "p", "p"), "pselect6": ("d", "p", "p", "p", "p", "p"),
    "epoll_create1": ("x",), "epoll_ctl": ("fd", "d", "fd", "p"),
    "epoll_wait": ("fd", "p", "d", "d"), "epoll_pwait": ("fd", "p", "d", "d", "p", "u"),
    "eventfd2": ("u", "x"), "getrandom": ("p", "u", "x"),
    "uname": ("p",), "sysinfo": ("p",), "prlimit64": ("d", "d", "p", "p"),
    "getrlimit": ("d", "p"), "setrlimit": ("d", "p"),
    "sched_getaffinity": ("d", "u", "p"), "sched_yield": (), "membarrier": ("x", "x", "d"),
    "socket": ("family", "socktype", "d"), "connect": ("fd", "sockaddr:2", "u"),
    "bind": ("fd", "sockaddr:2", "u"), "listen": ("fd", "d"),
    "accept": ("fd", "p", "p"), "accept4": ("fd", "p", "p", "x"),
    "sendto": ("fd", "ibuf:2", "u", "x", "sockaddr:5", "u"),
    "recvfrom": ("fd", "obuf:2", "u", "x", "p", "p"),
    "sendmsg": ("fd", "p", "x"), "recvmsg": ("fd", "p", "x"), "shutdown": ("fd", "d"),
    "getsockname": ("fd", "p", "p"), "getpeername": ("fd", "p", "p"),
    "setsockopt": ("fd", "d", "d", "p", "u"), "getsockopt": ("fd", "d", "d", "p", "p"),
    "socketpair": ("family", "socktype", "d", "p"),
}
RETURNS_POINTER = {"mmap", "mremap", "brk", "shmat"}
NO_RETURN = {"exit", "exit_group", "rt_sigreturn"}



# -- rendering -----------------------------------------------------------------------------


def quote(data: bytes, complete: bool = True) -> str:
    """A C string literal as strace prints it; '...' when cut short."""
    out = ['"']
    for b in data[:STRING_LIMIT]:
        c = chr(b)
        if c == '"' or c == "\\":
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append(f"\\{b:o}")
    out.append('"')
    if len(data) > STRING_LIMIT or not complete:
        out.append("...")
    return "".join(out)


def flags(value: int, table: list[tuple[int, str]], zero: str = "0") -> str:
    names = []
    for bit, name in sorted(table, key=lambda t: -bin(t[0]).count("1")):
        if value & bit == bit and bit:
            names.append(name)
            value &= ~bit
    if value:
        names.append(f"{value:#x}")
    return "|".join(names) or zero


def errno_text(err: int) -> str:
    return f"-1 {errno_name(err)} ({os.strerror(err)})"


class Decoder:
    """Renders one syscall's arguments against guest memory."""

    def __init__(self, mem: GuestMemory) -> None:
        self.mem = mem

    def _read(self, addr: int, size: int) -> bytes | None:
        if not addr:
            return None
        try:
            return self.mem.read(addr, size)
        except (SyscallError, ValueError, OverflowError):
            return None

    def _cstring(self, addr: int) -> str:
        if not addr:
            return "NULL"
        try:
            return quote(self.mem.read_cstring(addr, 4096))
        except (SyscallError, ValueError, OverflowError):
            return f"{addr:#x}"

    def ptr(self, addr: int) -> str:
        return "NULL" if not addr else f"{addr:#x}"

    def args(self, name: str, args: tuple[int, ...], result: int | None) -> str:
        kinds = SIGNATURES.get(name)
        if kinds is None:
            return ", ".join(f"{a:#x}" for a in args[: _arity(name)])
        if name in ("open", "openat") and not args[len(kinds) - 2] & 0o20100100:
            kinds = kinds[:-1]  # the mode means something only with O_CREAT or O_TMPFILE
        return ", ".join(self.arg(kind, args, i, result) for i, kind in enumerate(kinds))

    def arg(self, kind: str, args: tuple[int, ...], i: int, result: int | None) -> str:
        value = args[i]
        base, _, param = kind.partition(":")
        length = args[int(param)] if param else 0
        render = _RENDER.get(base)
        if render is None:
            return f"{value:#x}"
        return render(self, value, length, result)

    def result(self, name: str, result: int | None) -> str:
        if result is None:
            return "?"
        value = s64(result)
        if -4096 < value < 0:
            return errno_text(-value)
        if name in RETURNS_POINTER:
            return f"{result:#x}"
        return str(value)

    # -- kinds that need memory -------------------------------------------------------

    def ibuf(self, addr: int, length: int, result: int | None) -> str:
        data = self._read(addr, min(length, STRING_LIMIT + 1))
        return self.ptr(addr) if data is None else quote(data)

    def obuf(self, addr: int, length: int, result: int | None) -> str:
        if result is None or s64(result) < 0:
            return self.ptr(addr)
        data = self._read(addr, min(result, STRING_LIMIT + 1))
        return self.ptr(addr) if data is None else quote(data)

    def ostr(self, addr: int, length: int, result: int | None) -> str:
        if result is None or s64(result) < 0:
            return self.ptr(addr)
        data = self._read(addr, min(result, 4096))
        return self.ptr(addr) if data is None else quote(data.split(b"\0", 1)[0])

    def iov(self, addr: int, count: int, result: int | None, out: bool) -> str:
        if count > 1024:
            return self.ptr(addr)
        raw = self._read(addr, 16 * min(count, ARRAY_LIMIT))
        if raw is None:
            return self.ptr(addr)
        left = s64(result) if (out and result is not None) else 1 << 62
        items = []
        for base, size in struct.iter_unpack("<QQ", raw):
            shown = min(size, max(left, 0))
            left -= size
            if out and (result is None or s64(result) < 0):
                body = self.ptr(base)
            else:
                data = self._read(base, min(shown, STRING_LIMIT + 1)) if shown else b""
                body = self.ptr(base) if data is None else quote(data)
            items.append(f"{{iov_base={body}, iov_len={size}}}")
        more = ", ..." if count > ARRAY_LIMIT else ""
        return "[" + ", ".join(items) + more + "]"

    def stat(self, addr: int, length: int, result: int | None) -> str:
        if result is None or s64(result) < 0:
            return self.ptr(addr)
        raw = self._read(addr, 64)
        if raw is None:
            return self.ptr(addr)
        mode = struct.unpack_from("<I", raw, 24)[0]
        size = struct.unpack_from("<q", raw, 48)[0]
        rdev = struct.unpack_from("<Q", raw, 40)[0]
        kind = S_IFMT.get(mode & 0o170000, f"{mode & 0o170000:#o}")
        tail = f"st_rdev=makedev({rdev >> 8 & 0xFFF:#x}, {rdev & 0xFF:#x})" if kind in (
            "S_IFCHR", "S_IFBLK") else f"st_size={size}"
        return f"{{st_mode={kind}|{mode & 0o7777:04o}, {tail}, ...}}"

    def sockaddr(self, addr: int, length: int, result: int | None) -> str:
        raw = self._read(addr, min(max(length, 2), 128))
        if raw is None or len(raw) < 2:
            return self.ptr(addr)
        family = struct.unpack_from("<H", raw)[0]
        fam = ADDRESS_FAMILIES.get(family, str(family))
        if family == 2 and len(raw) >= 8:
            port = struct.unpack_from(">H", raw, 2)[0]
            ip = ".".join(str(b) for b in raw[4:8])
            return f'{{sa_family={fam}, sin_port=htons({port}), sin_addr=inet_addr("{ip}")}}'
        if family == 10 and len(raw) >= 24:
            import ipaddress

            port = struct.unpack_from(">H", raw, 2)[0]
            ip6 = ipaddress.IPv6Address(raw[8:24])
            return f'{{sa_family={fam}, sin6_port=htons({port}), sin6_addr="{ip6}"}}'
        if family == 1:
            path = raw[2:].split(b"\0", 1)[0] if raw[2:3] != b"\0" else b"@" + raw[3:]
            return f"{{sa_family={fam}, sun_path={quote(path)}}}"
        return f"{{sa_family={fam}, ...}}"

    def argv(self, addr: int, length: int, result: int | None) -> str:
        items: list[str] = []
        for i in range(ARRAY_LIMIT):
            raw = self._read(addr + 8 * i, 8)
            if raw is None:
                return self.ptr(addr)
            ptr = struct.unpack("<Q", raw)[0]
            if not ptr:
                return "[" + ", ".join(items) + "]"
            items.append(self._cstring(ptr))
        return "[" + ", ".join(items) + ", ...]"


def _arity(name: str) -> int:
    """How many arguments the handler takes (all six for a call karn does not serve)."""
    from karn.abi.syscalls import SYSCALL_NUMBERS
    from karn.kernel.syscalls import TABLE

    entry = TABLE.get(SYSCALL_NUMBERS.get(name, -1))
    return 6 if entry is None else entry.arity


def _fd(d: Decoder, v: int, n: int, r: int | None) -> str:
    return str(s32(v))


def _dirfd(d: Decoder, v: int, n: int, r: int | None) -> str:
    return "AT_FDCWD" if s32(v) == AT_FDCWD else str(s32(v))


def _oflags(d: Decoder, v: int, n: int, r: int | None) -> str:
    access = ("O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE")[v & 3]
    rest = flags(v & ~3 & ~0o100000, O_FLAGS, "")
    return access + ("|" + rest if rest else "")


def _mapflags(d: Decoder, v: int, n: int, r: int | None) -> str:
    kind = MAP_TYPES.get(v & 0xF, f"{v & 0xF:#x}")
    rest = flags(v & ~0xF, MAP_FLAGS, "")
    return kind + ("|" + rest if rest else "")


def _table(names: dict[int, str], signed: bool = True) -> Callable[..., str]:
    def render(d: Decoder, v: int, n: int, r: int | None) -> str:
        key = s32(v) if signed else v
        return names.get(key, str(key))

    return render


def _futex(d: Decoder, v: int, n: int, r: int | None) -> str:
    name = FUTEX_OPS.get(v & 0x7F, str(v & 0x7F))
    if v & 128:
        name += "_PRIVATE"
    if v & 256:
        name += "|FUTEX_CLOCK_REALTIME"
    return name


_RENDER: dict[str, Callable[[Decoder, int, int, int | None], str]] = {
    "d": lambda d, v, n, r: str(s64(v)),
    "u": lambda d, v, n, r: str(v),
    "x": lambda d, v, n, r: f"{v:#x}",
    "p": lambda d, v, n, r: d.ptr(v),
    "mode": lambda d, v, n, r: f"{v & 0o7777:#o}" if v else "0",
    "amode": lambda d, v, n, r: flags(v, ACCESS_MODES, "F_OK"),
    "ioctl": lambda d, v, n, r: IOCTLS.get(v & 0xFFFFFFFF, f"{v:#x}"),
    "fd": _fd,
    "dirfd": _dirfd,
    "path": lambda d, v, n, r: d._cstring(v),
    "ibuf": Decoder.ibuf,
    "obuf": Decoder.obuf,
    "ostr": Decoder.ostr,
    "iiov": lambda d, v, n, r: d.iov(v, n, r, out=False),
    "oiov": lambda d, v, n, r: d.iov(v, n, r, out=True),
    "stat": Decoder.stat,
    "sockaddr": Decoder.sockaddr,
    "argv": Decoder.argv,
    "oflags": _oflags,
    "prot": lambda d, v, n, r: flags(v, PROT_FLAGS, "PROT_NONE"),
    "mapflags": _mapflags,
    "atflags": lambda d, v, n, r: flags(v, AT_FLAGS),
    "clone": lambda d, v, n, r: flags(v & ~0xFF, CLONE_FLAGS)
    + (f"|{signal_name(v & 0xFF)}" if v & 0xFF else ""),
    "sig": lambda d, v, n, r: signal_name(v) if 0 < v < 65 else str(s32(v)),
    "sighow": _table(SIGPROCMASK_HOW),
    "whence": _table(WHENCE),
    "clock": _table(CLOCKS),
    "fcntl": _table(FCNTL_CMDS),
    "arch_prctl": _table(ARCH_PRCTL),
    "family": _table(ADDRESS_FAMILIES),
    "socktype": lambda d, v, n, r: SOCK_TYPES.get(v & 0xF, str(v & 0xF))
    + ("|SOCK_NONBLOCK" if v & 0o4000 else "") + ("|SOCK_CLOEXEC" if v & 0o2000000 else ""),
    "futex": _futex,
}


def expand_filter(text: str) -> frozenset[str]:
    """--trace=FILTER: comma-separated syscall names and classes (file, desc, net, memory,
    signal, process, time; strace's %file form too). ValueError names what is unknown."""
    from karn.kernel.syscall_groups import expand

    return expand(text)
