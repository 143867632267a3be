"""Linux x86-64 file ABI constants, as the guest sees them (not the host's `os` values)."""


class OFlag:
    """open(2) flags, plain ints (an enum.IntFlag cost start-up time and made every
    `flags & OFlag.X` build a flag object)."""

    __slots__ = ()

    RDONLY = 0
    WRONLY = 0o1
    RDWR = 0o2
    CREAT = 0o100
    EXCL = 0o200
    NOCTTY = 0o400
    TRUNC = 0o1000
    APPEND = 0o2000
    NONBLOCK = 0o4000
    DSYNC = 0o10000
    ASYNC = 0o20000
    DIRECT = 0o40000
    LARGEFILE = 0o100000
    DIRECTORY = 0o200000
    NOFOLLOW = 0o400000
    NOATIME = 0o1000000
    CLOEXEC = 0o2000000
    SYNC = 0o4010000
    PATH = 0o10000000
    TMPFILE = 0o20200000


O_ACCMODE = 0o3
# Flags that F_SETFL may change (the rest of F_SETFL's argument is ignored, as in Linux).
O_SETFL_MASK = OFlag.APPEND | OFlag.NONBLOCK | OFlag.ASYNC | OFlag.DIRECT | OFlag.NOATIME
# Flags that exist only at open time and are not kept in the file description.
O_OPEN_ONLY = int(OFlag.CREAT | OFlag.EXCL | OFlag.NOCTTY | OFlag.TRUNC | OFlag.CLOEXEC)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_REMOVEDIR = 0x200
AT_EACCESS = 0x200
AT_SYMLINK_FOLLOW = 0x400
AT_NO_AUTOMOUNT = 0x800
AT_EMPTY_PATH = 0x1000
AT_STATX_SYNC_TYPE = 0x6000

S_IFMT = 0o170000
S_IFSOCK = 0o140000
S_IFLNK = 0o120000
S_IFREG = 0o100000
S_IFBLK = 0o060000
S_IFDIR = 0o040000
S_IFCHR = 0o020000
S_IFIFO = 0o010000

DT_UNKNOWN = 0
DT_FIFO = 1
DT_CHR = 2
DT_DIR = 4
DT_BLK = 6
DT_REG = 8
DT_LNK = 10
DT_SOCK = 12


def dtype_of(mode: int) -> int:
    return (mode & S_IFMT) >> 12


SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE = 0, 1, 2, 3, 4

F_OK, X_OK, W_OK, R_OK = 0, 1, 2, 4

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

PATH_MAX = 4096
NAME_MAX = 255
SYMLOOP_MAX = 40

# statfs f_type magic numbers
TMPFS_MAGIC = 0x01021994
PROC_SUPER_MAGIC = 0x9FA0
EXT4_SUPER_MAGIC = 0xEF53
ST_RDONLY = 1
ST_VALID = 0x20
