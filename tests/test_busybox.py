"""busybox-static applets: byte-identical stdout and the same exit status as native.

Native runs use the data directory as their working directory; karn runs mount the same
directory with `-v DIR:/data:ro -w /data`, so both see the same files. TZ=UTC on both.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import socket
import stat
import tarfile
from pathlib import Path

import pytest
from conftest import BUSYBOX, GUEST_DEFAULT_ENV

pytestmark = pytest.mark.breadth  # make test-quick leaves these out

FIXED_MTIME = 1_600_000_000  # 2020-09-13, so listings don't depend on when tests ran
ENV = dict(GUEST_DEFAULT_ENV, TZ="UTC")

LINES = """\
apple pie
banana split
cherry tart
apple crumble
date loaf
elderberry wine
banana bread
fig roll
apple pie
grape juice
needle in a haystack
"""


def _make_data(root: Path) -> None:
    rng = random.Random(1234)
    (root / "lines.txt").write_text(LINES)
    (root / "sorted.txt").write_text("".join(sorted(LINES.splitlines(keepends=True))))
    (root / "numbers.txt").write_text(
        "".join(f"item{i:02d} {rng.randint(-500, 5000)}\n" for i in range(40))
    )
    (root / "table.csv").write_text(
        "".join(f"{i},{rng.choice(['red', 'green', 'blue'])},{i * i}\n" for i in range(25))
    )
    (root / "empty.txt").write_text("")
    (root / "small.bin").write_bytes(bytes(range(256)))
    (root / "random.bin").write_bytes(rng.randbytes(300_000))
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    (root / "big.txt").write_text(
        "".join(" ".join(rng.choice(words) for _ in range(12)) + "\n" for _ in range(40_000))
    )
    (root / "other.txt").write_text(LINES.replace("banana", "BANANA") + "extra line\n")
    (root / "encoded.b64").write_text(
        __import__("base64").encodebytes(b"decoded by base64 -d\n" * 20).decode()
    )
    sums = "".join(
        f"{hashlib.md5((root / n).read_bytes()).hexdigest()}  {n}\n"
        for n in ("lines.txt", "small.bin", "empty.txt")
    )
    (root / "checksums.md5").write_text(sums)
    (root / "lines.txt.gz").write_bytes(gzip.compress(LINES.encode() * 50, mtime=FIXED_MTIME))
    sub = root / "sub"
    (sub / "deeper").mkdir(parents=True)
    for i in range(5):
        (sub / f"file{i}.txt").write_text(f"file {i}\nneedle {i}\n" * (i + 1))
    (sub / "deeper" / "leaf.dat").write_bytes(b"\x00\x01leaf\n" * 100)
    (sub / "script.sh").write_text("echo not run\n")
    os.chmod(sub / "script.sh", 0o755)
    os.chmod(sub / "file3.txt", 0o600)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in ("lines.txt", "small.bin"):
            info = tar.gettarinfo(str(root / name), arcname=name)
            info.uid, info.gid, info.uname, info.gname = 1000, 1000, "user", "group"
            info.mtime = FIXED_MTIME
            with open(root / name, "rb") as fh:
                tar.addfile(info, fh)
    (root / "archive.tar").write_bytes(buf.getvalue())
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (FIXED_MTIME, FIXED_MTIME))
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bbdata")
    _make_data(root)
    return root


def run_both(native, karn, data: Path, args, input: bytes | None = None, karn_opts=()):
    expected = native(BUSYBOX, *args, cwd=data, env=ENV, input=input)
    got = karn(
        "-e",
        "TZ=UTC",
        "-v",
        f"{data}:/data:ro",
        "-w",
        "/data",
        *karn_opts,
        BUSYBOX,
        *args,
        input=input,
    )
    return expected, got


STDIN_TEXT = LINES.encode()

# (test id, busybox arguments, stdin[, mark])
CASES = [
    ("echo", ["echo", "hello", "world"], None),
    ("echo-n", ["echo", "-n", "no newline"], None),
    ("echo-e", ["echo", "-e", "tab\\there\\nnext"], None),
    ("cat", ["cat", "lines.txt", "small.bin"], None),
    ("cat-stdin", ["cat"], STDIN_TEXT * 100),
    ("cat-missing", ["cat", "missing.txt"], None),
    ("ls", ["ls"], None),
    ("ls-ln", ["ls", "-ln"], None),
    ("ls-lnR", ["ls", "-lnR", "sub"], None),
    ("ls-lan-sub", ["ls", "-lan", "sub"], None),
    ("ls-missing", ["ls", "missing"], None),
    ("sha256sum", ["sha256sum", "lines.txt", "random.bin", "big.txt", "empty.txt"], None),
    ("sha256sum-stdin", ["sha256sum"], STDIN_TEXT),
    ("md5sum", ["md5sum", "lines.txt", "random.bin", "big.txt"], None),
    ("md5sum-check", ["md5sum", "-c", "checksums.md5"], None),
    ("sha1sum", ["sha1sum", "random.bin"], None),
    ("sha512sum", ["sha512sum", "big.txt"], None),
    ("wc", ["wc", "lines.txt", "big.txt", "empty.txt"], None),
    ("wc-l-stdin", ["wc", "-l"], STDIN_TEXT * 7),
    ("sort", ["sort", "lines.txt"], None),
    ("sort-nk2", ["sort", "-n", "-k2", "numbers.txt"], None),
    ("sort-big", ["sort", "big.txt"], None),
    ("uniq-c", ["uniq", "-c", "sorted.txt"], None),
    ("grep-n", ["grep", "-n", "apple", "lines.txt"], None),
    ("grep-c", ["grep", "-c", "a", "lines.txt", "other.txt"], None),
    ("grep-nomatch", ["grep", "no-such-text", "lines.txt"], None),
    ("grep-r", ["grep", "-r", "needle", "sub"], None),
    ("sed", ["sed", "s/apple/APPLE/g; /date/d", "lines.txt"], None),
    ("sed-n", ["sed", "-n", "2,4p", "lines.txt"], None),
    ("awk-sum", ["awk", "{ s += $2 } END { print s, NR }", "numbers.txt"], None),
    ("awk-csv", ["awk", "-F,", "{ print $3, toupper($2) }", "table.csv"], None),
    ("tr", ["tr", "a-z", "A-Z"], STDIN_TEXT),
    ("tr-d", ["tr", "-d", "aeiou"], STDIN_TEXT),
    ("head", ["head", "-n", "3", "lines.txt"], None),
    ("head-c-binary", ["head", "-c", "100", "random.bin"], None),
    ("tail", ["tail", "-n", "2", "lines.txt"], None),
    ("tail-c", ["tail", "-c", "50", "big.txt"], None),
    ("cut", ["cut", "-d,", "-f2", "table.csv"], None),
    ("cut-c", ["cut", "-c", "1-5", "lines.txt"], None),
    ("find", ["find", "."], None),
    ("find-name", ["find", ".", "-name", "*.txt"], None),
    ("find-type", ["find", "sub", "-type", "f"], None),
    ("du-s", ["du", "-s", "."], None),
    ("du-a", ["du", "-a", "sub"], None),
    ("base64", ["base64", "small.bin"], None),
    ("base64-d", ["base64", "-d", "encoded.b64"], None),
    ("seq", ["seq", "1", "20"], None),
    ("seq-step", ["seq", "0", "3", "30"], None),
    ("printf", ["printf", "%s-%05d|%x|%.2f\\n", "x", "42", "255", "3.14159"], None),
    ("expr-mul", ["expr", "6", "*", "7"], None),
    ("expr-length", ["expr", "length", "hello"], None),
    ("expr-zero", ["expr", "0"], None),
    ("date-epoch", ["date", "-u", "-d", "@0"], None),
    ("date-format", ["date", "-u", "-d", "@1234567890", "+%Y-%m-%d %H:%M:%S %a %j"], None),
    ("uname-s", ["uname", "-s"], None),
    ("uname-m", ["uname", "-m"], None),
    (
        "stat-c",
        [
            "stat",
            "-c",
            "%n %s %a %F %h %u %g %Y",
            "lines.txt",
            "sub",
            "sub/file3.txt",
            "sub/script.sh",
        ],
        None,
    ),
    ("od-c", ["od", "-c", "lines.txt"], None),
    ("od-x", ["od", "-An", "-tx1", "small.bin"], None),
    ("od-devzero", ["od", "-An", "-tx1", "-N16", "/dev/zero"], None),
    ("xxd", ["xxd", "small.bin"], None),
    ("hexdump", ["hexdump", "-C", "small.bin"], None),
    ("tac", ["tac", "lines.txt"], None),
    ("nl", ["nl", "lines.txt"], None),
    ("rev", ["rev", "lines.txt"], None),
    ("fold", ["fold", "-w", "7", "lines.txt"], None),
    ("paste", ["paste", "-d:", "lines.txt", "other.txt"], None),
    ("comm", ["comm", "sorted.txt", "sorted.txt"], None),
    ("cmp-differ", ["cmp", "lines.txt", "other.txt"], None),
    ("diff", ["diff", "lines.txt", "other.txt"], None),
    ("cksum", ["cksum", "lines.txt", "random.bin"], None),
    ("strings", ["strings", "sub/deeper/leaf.dat"], None),
    ("basename", ["basename", "/a/b/c.txt", ".txt"], None),
    ("dirname", ["dirname", "/a/b/c.txt"], None),
    ("true", ["true"], None),
    ("false", ["false"], None),
    ("test-f", ["test", "-f", "lines.txt"], None),
    ("test-d-missing", ["test", "-d", "missing"], None),
    ("gzip-c", ["gzip", "-c", "lines.txt"], None),
    ("gunzip-c", ["gunzip", "-c", "lines.txt.gz"], None),
    ("zcat", ["zcat", "lines.txt.gz"], None),
    ("bzip2-c", ["bzip2", "-c", "big.txt"], None),
    ("tar-tv", ["tar", "-tvf", "archive.tar"], None),
    ("tar-x-O", ["tar", "-xOf", "archive.tar", "lines.txt"], None),
    ("dd", ["dd", "if=random.bin", "bs=1000", "skip=3", "count=5"], None),
    ("factor", ["factor", "600851475143", "1234567"], None),
    ("bc", ["bc"], b"2^64\nscale=10; 22/7\n"),
    ("id-u", ["id", "-u"], None),
    ("id-g", ["id", "-g"], None),
    (
        "sh-builtins",
        ["sh", "-c", "x=6; echo $((x*7)); for i in a b c; do echo $i; done; exit 3"],
        None,
    ),
    ("sh-read", ["sh", "-c", "read line; echo got:$line"], b"input line\n"),
    ("readlink-proc-exe", ["readlink", "/proc/self/exe"], None),
    ("sleep", ["sleep", "0.1"], None),
    ("wc-c-devnull", ["wc", "-c", "/dev/null"], None),
]


def _param(case):
    return pytest.param(case[1], case[2], id=case[0], marks=case[3:])


@pytest.mark.parametrize("args,stdin", [_param(c) for c in CASES])
def test_applet_matches_native(args, stdin, data, native, karn, same):
    expected, got = run_both(native, karn, data, args, stdin)
    same(expected, got, "busybox " + " ".join(args))


def test_applet_count():
    applets = {case[1][0] for case in CASES if len(case) == 3}
    assert len(applets) >= 25, sorted(applets)


def test_env_applet(data, native, karn):
    """`env` shows the guest environment: karn's defaults plus -e (order aside)."""
    expected, got = run_both(native, karn, data, ["env"])
    assert got.returncode == expected.returncode == 0, got.stderr.decode()
    assert sorted(got.stdout.splitlines()) == sorted(expected.stdout.splitlines())


def test_hostname_applet(data, native, karn, same):
    host = socket.gethostname()
    expected, got = run_both(native, karn, data, ["hostname"], karn_opts=("--hostname", host))
    same(expected, got, "busybox hostname")


def test_urandom_length(data, native, karn):
    expected, got = run_both(native, karn, data, ["head", "-c", "1000", "/dev/urandom"])
    assert got.returncode == expected.returncode == 0, got.stderr.decode()
    assert len(got.stdout) == len(expected.stdout) == 1000
    assert got.stdout != expected.stdout


def _snapshot(root: Path) -> list[tuple[str, str, int, bytes | str]]:
    """Names, kinds, permission bits and contents of a tree (not times or owners)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath, name)
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out.append((rel, "link", 0, os.readlink(p)))
            elif stat.S_ISDIR(st.st_mode):
                out.append((rel, "dir", stat.S_IMODE(st.st_mode), b""))
            else:
                out.append((rel, "file", stat.S_IMODE(st.st_mode), p.read_bytes()))
    return out


WRITE_STEPS: list[tuple[list[str], bytes | None]] = [
    (["touch", "new.txt"], None),
    (["mkdir", "-p", "made/inner"], None),
    (["tee", "made/teed.txt"], b"tee wrote this\n"),
    (["cp", "lines.txt", "copy.txt"], None),
    (["mv", "copy.txt", "made/moved.txt"], None),
    (["sed", "-i", "s/apple/pear/", "made/moved.txt"], None),
    (["ln", "-s", "lines.txt", "link.txt"], None),
    (["cat", "link.txt"], None),
    (["truncate", "-s", "1000", "grown.bin"], None),
    (["chmod", "640", "new.txt"], None),
    (["rm", "small.bin"], None),
    (["rmdir", "made/inner"], None),
    (["ls", "-1", "made"], None),
    (["split", "-l", "4", "lines.txt", "part."], None),
    (["gzip", "sorted.txt"], None),
    (["rm", "-r", "sub"], None),
    (["ls", "-1"], None),
]


@pytest.mark.slow
def test_writable_volume(tmp_path, native, karn, same):
    """Writes through a read-write volume leave the same tree as native writes."""
    native_dir, karn_dir = tmp_path / "native", tmp_path / "karn"
    for d in (native_dir, karn_dir):
        d.mkdir()
        _make_data(d)
    for args, stdin in WRITE_STEPS:
        expected = native(BUSYBOX, *args, cwd=native_dir, env=ENV, input=stdin)
        got = karn(
            "-e", "TZ=UTC", "-v", f"{karn_dir}:/data", "-w", "/data", BUSYBOX, *args, input=stdin
        )
        same(expected, got, "busybox " + " ".join(args))
    assert _snapshot(karn_dir) == _snapshot(native_dir)


def test_readonly_volume_refuses_writes(data, karn):
    before = _snapshot(data)
    got = karn("-v", f"{data}:/data:ro", "-w", "/data", BUSYBOX, "touch", "new-file.txt")
    assert got.returncode != 0
    assert b"Read-only file system" in got.stderr, got.stderr.decode(errors="replace")
    assert _snapshot(data) == before


def test_guest_tmp_is_private(tmp_path, karn):
    """Guest /tmp is an in-memory tmpfs: a file made there does not appear on the host."""
    marker = f"karn-private-{os.getpid()}"
    got = karn(BUSYBOX, "touch", f"/tmp/{marker}")
    assert got.returncode == 0, got.stderr.decode(errors="replace")
    assert not os.path.exists(f"/tmp/{marker}")


def test_host_files_invisible(karn):
    """Only the collected program (and volumes) are visible: not the host's /etc."""
    assert os.path.exists("/etc/os-release")
    got = karn(BUSYBOX, "cat", "/etc/os-release")
    assert got.returncode != 0
    assert got.stdout == b""


def test_volume_path_cannot_escape(tmp_path, karn):
    """`..` and symlinks inside a volume do not reach the host outside it."""
    vol = tmp_path / "vol"
    vol.mkdir()
    (tmp_path / "secret.txt").write_text("host secret\n")
    os.symlink("../secret.txt", vol / "escape")
    os.symlink("/etc/os-release", vol / "absolute")
    for target in (
        "/data/../secret.txt",
        "/data/escape",
        "/data/absolute",
        "/data/../../../../etc/os-release",
    ):
        got = karn("-v", f"{vol}:/data:ro", BUSYBOX, "cat", target)
        assert b"host secret" not in got.stdout, target
        assert b"PRETTY_NAME" not in got.stdout, target
