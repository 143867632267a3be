"""What an image may decide by itself (docs/images.md, "Trust"): its labels may tighten
karn's default policy, never loosen it without the user's consent at run time
(--trust-image-policy, or the same option on the command line); `karn inspect` shows
what an image asks for."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BUSYBOX, KARN_TIMEOUT
from helpers import karn_in

GIB = 1 << 30
LOOSE_KARNFILE = f"""name = "loose:1"
program = "{BUSYBOX}"
entrypoint = ["{BUSYBOX}"]
memory = "32g"
[policy]
network = "host"
aslr = false
"""
TIGHT_KARNFILE = f"""name = "tight:1"
program = "{BUSYBOX}"
entrypoint = ["{BUSYBOX}"]
memory = "64m"
[policy]
syscalls = ["base"]
network = "none"
threads = 16
open_files = 64
"""
# set as plain labels, as an image from another tool or registry carries them
LABELLED_POLICY = {
    "network": "egress=10.0.0.0/8:443",
    "threads": 4096,
    "open_files": 100000,
    "tmpfs_size": "2g",
    "on_denied": "kill",
    "cpu_time": 5,
    "file_size": "1m",
}
LABELLED_KARNFILE = f"""name = "labelled:1"
program = "{BUSYBOX}"
entrypoint = ["{BUSYBOX}"]
[labels]
"org.karn.cpus" = "4"
"org.karn.policy" = '{json.dumps(LABELLED_POLICY)}'
"""
REFUSAL = "asks for a looser policy than karn's default"


def built(home: Path, tmp_path: Path, karnfile: str) -> str:
    ctx = tmp_path / karnfile.split('"')[1].replace(":", "-")
    ctx.mkdir()
    (ctx / "Karnfile").write_text(karnfile)
    got = karn_in(home, "build", ctx)
    assert got.returncode == 0, got.stderr.decode()
    return karnfile.split('"')[1]


@pytest.fixture
def host_service() -> Iterator[int]:
    """A TCP service on the host's 127.0.0.1 that greets each connection."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.5)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"hello from the host\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def mem_total(proc: subprocess.CompletedProcess[bytes]) -> int:
    assert proc.returncode == 0, proc.stderr.decode()
    first = proc.stdout.decode().splitlines()[0].split()
    assert first[0] == "MemTotal:" and first[2] == "kB"
    return int(first[1]) << 10


def test_a_loosening_image_is_refused_without_consent(home, tmp_path, host_service) -> None:
    image = built(home, tmp_path, LOOSE_KARNFILE)
    reach_host = ("nc", "127.0.0.1", str(host_service))
    got = karn_in(home, "run", image, *reach_host)
    assert got.returncode == 125 and got.stdout == b""
    err = got.stderr.decode()
    assert err.count("\n") == 1 and err.startswith(f"karn: image {image} {REFUSAL} ("), err
    for asked in ("network=host", "aslr=false", "memory=32g", "--trust-image-policy"):
        assert asked in err, err

    # consent: the image's policy is the run's (host network, 32 GiB)
    trusted = karn_in(home, "run", "--trust-image-policy", image, *reach_host)
    assert trusted.returncode == 0, trusted.stderr.decode()
    assert trusted.stdout == b"hello from the host\n"
    meminfo = karn_in(home, "run", "--trust-image-policy", image, "head", "-1", "/proc/meminfo")
    assert mem_total(meminfo) == 32 * GIB

    # the same options on the command line are consent too, one setting at a time
    partly = karn_in(home, "run", "--network", "host", "-m", "1g", image, *reach_host)
    assert partly.returncode == 125
    assert "aslr=false" in partly.stderr.decode()
    assert "network=" not in partly.stderr.decode() and "memory=" not in partly.stderr.decode()
    mine = karn_in(home, "run", "--network", "host", "-m", "1g", "--no-aslr", image, *reach_host)
    assert mine.returncode == 0, mine.stderr.decode()
    assert mine.stdout == b"hello from the host\n"
    # overriding the network keeps the default-deny network, whatever the image says
    own = karn_in(home, "run", "--network", "none", "-m", "1g", "--no-aslr", image, *reach_host)
    assert own.returncode == 1 and b"Connection refused" in own.stderr


def test_a_tightening_image_applies_without_a_flag(home, tmp_path) -> None:
    image = built(home, tmp_path, TIGHT_KARNFILE)
    meminfo = karn_in(home, "run", image, "head", "-1", "/proc/meminfo")
    assert mem_total(meminfo) == 64 << 20
    listed = karn_in(home, "run", image, "ls", "/")  # getdents64 is outside "base"
    assert listed.returncode == 0 and listed.stdout == b"", listed.stderr
    assert b"policy: syscall getdents64 is not in the allow-list" in listed.stderr
    assert REFUSAL.encode() not in listed.stderr
    freed = karn_in(home, "run", "--syscalls", "all", image, "ls", "/")
    assert freed.returncode == 0 and b"bin" in freed.stdout.split()


def test_an_image_label_asking_for_more_is_refused(home, tmp_path) -> None:
    image = built(home, tmp_path, LABELLED_KARNFILE)
    got = karn_in(home, "run", image, "true")
    assert got.returncode == 125
    err = got.stderr.decode()
    assert err.count("\n") == 1 and REFUSAL in err, err
    for asked in (
        "network=egress=10.0.0.0/8:443",
        "threads=4096",
        "open_files=100000",
        "tmpfs_size=2g",
        "cpus=4",
    ):
        assert asked in err, err
    for tighter in ("on_denied", "cpu_time", "file_size"):
        assert tighter not in err, err
    assert karn_in(home, "run", "--trust-image-policy", image, "true").returncode == 0


def test_inspect_shows_what_an_image_asks_for(home, tmp_path) -> None:
    loose, tight, labelled = (
        built(home, tmp_path, k) for k in (LOOSE_KARNFILE, TIGHT_KARNFILE, LABELLED_KARNFILE)
    )
    got = karn_in(home, "inspect", loose, tight, labelled)
    assert got.returncode == 0, got.stderr.decode()
    infos = [info["KarnPolicy"] for info in json.loads(got.stdout)]
    assert infos[0] == {
        "memory": 32 * GIB,
        "cpus": None,
        "policy": {"aslr": False, "network": "host"},
        "looser_than_default": ["memory=32g", "aslr=false", "network=host"],
    }
    assert infos[1]["memory"] == 64 << 20
    assert infos[1]["policy"]["syscalls"] == ["base"]
    assert infos[1]["looser_than_default"] == []
    assert infos[2]["cpus"] == 4
    assert infos[2]["policy"]["threads"] == 4096
    assert sorted(infos[2]["looser_than_default"]) == sorted(
        [
            "cpus=4",
            "network=egress=10.0.0.0/8:443",
            "threads=4096",
            "open_files=100000",
            "tmpfs_size=2g",
        ]
    )


def test_a_system_partition_needs_its_own_opt_in(tmp_path) -> None:
    """`karn system` runs an image partition as `karn run`: the consent is in the system
    file, per partition (options = ["--trust-image-policy"])."""
    state = Path(tempfile.mkdtemp(prefix="ks-", dir="/tmp"))  # short: UNIX socket paths
    try:
        home = state / "home"
        image = built(home, tmp_path, LOOSE_KARNFILE)
        env = {**os.environ, "KARN_STATE_DIR": str(state), "KARN_HOME": str(home)}
        for name, options in (("refused", ""), ("trusted", 'options = ["--trust-image-policy"]')):
            path = tmp_path / f"{name}.toml"
            path.write_text(
                f'name = "{name}"\n[partitions.a]\nimage = "{image}"\n'
                f'args = ["head", "-1", "/proc/meminfo"]\n{options}\n'
            )
            up = subprocess.run(
                [sys.executable, "-m", "karn", "system", "up", str(path)],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if name == "refused":
                assert up.returncode != 0
                assert f"a | karn: image {image} {REFUSAL}" in up.stdout, up.stdout
                assert "exited with status 125" in up.stderr
            else:
                assert up.returncode == 0, up.stdout + up.stderr
                assert f"a | MemTotal: {32 * GIB >> 10} kB" in " ".join(up.stdout.split()), (
                    up.stdout
                )
    finally:
        shutil.rmtree(state, ignore_errors=True)


# ---- V5: what collection may take from the host


PROGRAMS = Path(__file__).resolve().parent / "programs"


def gcc(*args: str | os.PathLike[str]) -> None:
    got = subprocess.run(["gcc", "-O1", *map(str, args)], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr


def library(path: Path, soname: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    gcc("-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", path, PROGRAMS / "collect_probe_lib.c")
    return path


def probe(out: Path, *link: str | os.PathLike[str]) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    gcc("-o", out, PROGRAMS / "collect_probe.c", *link)
    return out


def run(*args: str | os.PathLike[str], env: dict[str, str] | None = None):  # noqa: ANN201
    return subprocess.run(
        [sys.executable, "-m", "karn", "run", *map(str, args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=KARN_TIMEOUT * 2,
        env={**os.environ, **(env or {})},
    )


def refused(got: subprocess.CompletedProcess[bytes], lib: Path) -> None:
    err = got.stderr.decode()
    assert got.returncode != 0 and got.stdout == b"", err
    assert err.count("\n") == 1 and err.startswith("karn: ") and str(lib) in err, err


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory outside /tmp (the guest's /tmp is a tmpfs) that any user may enter:
    programs here, and the host's "secret" libraries in a root-only directory beside them."""
    path = Path(tempfile.mkdtemp(prefix="karn-trust-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def secret_dir(place: Path) -> Path:
    secret = place / "secret"
    secret.mkdir(mode=0o700)
    return secret


def test_an_absolute_needed_name_is_not_collected_without_collect(place) -> None:
    lib = library(secret_dir(place) / "libsecret.so", str(place / "secret" / "libsecret.so"))
    exe = probe(place / "app" / "abs", lib)  # DT_NEEDED is the absolute soname
    needed = subprocess.run(["readelf", "-d", exe], capture_output=True, text=True).stdout
    assert f"Shared library: [{lib}]" in needed
    got = run(exe, lib)
    refused(got, lib)
    assert "--collect" in got.stderr.decode()
    allowed = run("--collect", lib, exe, lib)
    assert allowed.returncode == 0, allowed.stderr.decode()
    assert allowed.stdout.decode() == f"{lib}: readable\n"


def test_build_follows_the_same_collection_rule(place, tmp_path) -> None:
    """karn build refuses the same names as karn run, and takes --collect (or the
    Karnfile's collect list); the image then runs with the library inside it."""
    home = tmp_path / "home"
    lib = library(secret_dir(place) / "libsecret.so", str(place / "secret" / "libsecret.so"))
    exe = probe(place / "app" / "abs", lib)
    got = karn_in(home, "build", "-t", "abs:1", exe)
    refused(got, lib)
    assert "--collect" in got.stderr.decode()
    got = karn_in(home, "build", "-t", "abs:1", "--collect", lib, "--cmd", str(lib), exe)
    assert got.returncode == 0, got.stderr.decode()
    ran = karn_in(home, "run", "abs:1")
    assert ran.returncode == 0, ran.stderr.decode()
    assert ran.stdout.decode() == f"{lib}: readable\n"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Karnfile").write_text(f'name = "abs:2"\nprogram = "{exe}"\ncollect = ["{lib}"]\n')
    got = karn_in(home, "build", ctx)
    assert got.returncode == 0, got.stderr.decode()


@pytest.mark.parametrize("tags", ["--disable-new-dtags", "--enable-new-dtags"])
def test_an_absolute_rpath_outside_the_program_is_not_searched(place, tags) -> None:
    lib = library(secret_dir(place) / "libprobe.so", "libprobe.so")
    exe = probe(
        place / "app" / "rpath", f"-L{lib.parent}", "-lprobe", f"-Wl,{tags},-rpath,{lib.parent}"
    )
    refused(run(exe, lib), lib)
    for allow in (lib, lib.parent):  # the file, or a directory holding it
        allowed = run("--collect", allow, exe, lib)
        assert allowed.returncode == 0, allowed.stderr.decode()
        assert allowed.stdout.decode() == f"{lib}: readable\n"


def test_origin_and_the_programs_directory_still_work(place, native) -> None:
    lib = library(place / "app" / "lib" / "libprobe.so", "libprobe.so")
    relative = probe(
        place / "app" / "bin" / "origin", f"-L{lib.parent}", "-lprobe", "-Wl,-rpath,$ORIGIN/../lib"
    )
    inside = probe(
        place / "app" / "inside", f"-L{lib.parent}", "-lprobe", f"-Wl,-rpath,{lib.parent}"
    )  # absolute, beneath the program's directory
    for exe in (relative, inside):
        got = run(exe, lib)
        assert got.returncode == 0, got.stderr.decode()
        assert got.stdout == native(exe, lib).stdout == f"{lib}: readable\n".encode()


def test_origin_outside_the_program_takes_only_public_files(place) -> None:
    """$ORIGIN/.. leaving the program's directory for a root-only file is refused even
    for root (who could read it), unless given with --collect."""
    lib = library(secret_dir(place) / "libprobe.so", "libprobe.so")
    exe = probe(
        place / "app" / "bin" / "escape",
        f"-L{lib.parent}",
        "-lprobe",
        "-Wl,-rpath,$ORIGIN/../../secret",
    )
    got = run(exe, lib)
    refused(got, lib)
    assert "not readable by every user" in got.stderr.decode()
    allowed = run("--collect", lib, exe, lib)
    assert allowed.returncode == 0, allowed.stderr.decode()
    assert allowed.stdout.decode() == f"{lib}: readable\n"


def test_under_sudo_a_file_the_user_cannot_read_is_never_collected(place) -> None:
    """SUDO_UID names the invoking user: a library beside the program that only root may
    read stays out of the guest even with --collect; once readable, it is collected."""
    nobody = {"SUDO_UID": "65534", "SUDO_GID": "65534"}
    private = place / "app" / "private"
    lib = library(private / "libprobe.so", "libprobe.so")
    private.chmod(0o700)
    exe = probe(place / "app" / "sudo", f"-L{private}", "-lprobe", "-Wl,-rpath,$ORIGIN/private")
    for extra in ((), ("--collect", lib)):
        got = run(*extra, exe, "/", env=nobody)
        refused(got, lib)
        assert "(uid 65534) cannot read it" in got.stderr.decode()
    assert run(exe, "/").returncode == 0  # root itself may: its own file, its own directory
    private.chmod(0o755)
    got = run(exe, "/", env=nobody)
    assert got.returncode == 0 and got.stdout == b"/: readable\n", got.stderr.decode()
