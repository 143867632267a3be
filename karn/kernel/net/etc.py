"""Name-service files for guests whose root has none: getaddrinfo reads /etc/hosts,
/etc/resolv.conf and /etc/nsswitch.conf (and /etc/services for a service name);
/etc/hostname holds the guest's host name, as a container runtime writes it;
getpwnam (nginx, redis) /etc/passwd and /etc/group, which list root and nobody;
getservbyname and getprotobyname the host's /etc/services and /etc/protocols (given as
they are).

`guest_etc_files(exists, hostname, mode)` returns {guest path: content} for the files
the root lacks; `add_to_manifest` writes them to a host cache directory (one file per
distinct content, so nothing accumulates per run) and adds them to a collected root
(karn/run/builder.py calls it where the root manifest is built).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from karn.kernel.hosttmp import temp_dir

NSSWITCH = b"passwd: files\ngroup: files\nhosts: files dns\nnetworks: files\n" \
    b"protocols: files\nservices: files\n"


PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:" \
    b"/usr/sbin/nologin\n"
GROUP = b"root:x:0:\nnogroup:x:65534:\n"


def _hosts(hostname: str) -> bytes:
    return (f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"127.0.1.1\t{hostname}\n").encode()


def _resolv(mode: str) -> bytes:
    """`--network none`: no name server is reachable, so none is listed (lookups fail
    fast). Otherwise the host's name servers (its resolv.conf), which egress rules must
    allow (port 53)."""
    if mode == "none":
        return b"# karn: --network none, no name servers\n"
    try:
        with open("/etc/resolv.conf", "rb") as f:
            lines = [ln for ln in f.read().splitlines()
                     if ln.startswith((b"nameserver", b"search", b"options"))]
    except OSError:
        lines = []
    return b"\n".join(lines) + b"\n"


# Public lookup tables of the host's, the same on every Linux (the netbase package):
# getservbyname and getprotobyname read them. Given as the host's own files, not copies.
HOST_TABLES = ("/etc/services", "/etc/protocols")


def guest_etc_files(exists: Callable[[str], bool], hostname: str, mode: str
                    ) -> dict[str, bytes]:
    """The generated name-service files the root lacks (`exists` says what it has)."""
    wanted: dict[str, bytes] = {
        "/etc/passwd": PASSWD,
        "/etc/group": GROUP,
        "/etc/hosts": _hosts(hostname),
        "/etc/hostname": f"{hostname}\n".encode(),
        "/etc/resolv.conf": _resolv(mode),
        "/etc/nsswitch.conf": NSSWITCH,
    }
    return {path: data for path, data in wanted.items() if not exists(path)}


def _checksum(data: bytes) -> int:
    """The bytes as one number modulo the prime 2**64 - 59 (a polynomial hash in base 256
    whose powers have no short period): a name for the cached copy, the same in every
    process (hash() is not), and 64 bits where crc32 has 32 (two contents of one name
    would rewrite each other's copy)."""
    return int.from_bytes(data, "little") % ((1 << 64) - 59)


def _cached(base: str, name: str, data: bytes) -> str:
    path = os.path.join(base, f"{_checksum(data):016x}-{len(data)}-{name}")
    try:
        with open(path, "rb") as f:
            same = f.read() == data
    except OSError:
        same = False
    if not same:
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    return path


def add_to_manifest(files: dict[str, str], hostname: str, mode: str,
                    exists: Callable[[str], bool] | None = None) -> None:
    """Add the missing name-service files to a root's {guest: host} files (`exists`: what
    the root already has; by default, what `files` lists)."""
    have = exists or (lambda p: p in files)
    generated = guest_etc_files(have, hostname, mode)
    if generated:
        base = os.path.join(temp_dir(), f"karn-etc-{os.getuid()}")
        os.makedirs(base, mode=0o700, exist_ok=True)
        for guest, data in generated.items():
            files[guest] = _cached(base, os.path.basename(guest), data)
    for table in HOST_TABLES:
        if not have(table) and os.path.isfile(table):
            files[table] = table
