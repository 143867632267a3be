"""Images without a registry: build (program, directory, Karnfile, OCI layout, docker
archive, umoci), the store commands, `karn run IMAGE`, reproducible digests, safe layer
extraction with whiteouts, and one-line errors that leave the store as it was."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import BUSYBOX, native_run
from helpers import compile_c, karn_in, source_file
from test_errors import assert_one_error_line


def ok(proc: subprocess.CompletedProcess[bytes]) -> str:
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.decode()


def store_snapshot(home: Path) -> dict[str, bytes]:
    """Every file under the OCI layout (index.json and blobs), for 'store intact' checks."""
    out = {}
    for path in sorted((home / "oci").rglob("*")):
        if path.is_file():
            out[str(path.relative_to(home))] = path.read_bytes()
    return out


@pytest.fixture(scope="session")
def greet() -> Path:
    """A gcc-built dynamic program printing its argv, an env variable, cwd and a file."""
    src = source_file(
        "greet.c",
        "#include <stdio.h>\n#include <stdlib.h>\n#include <unistd.h>\n"
        "int main(int argc, char **argv) {\n"
        '  char cwd[256]; const char *g = getenv("GREETING");\n'
        '  for (int i = 1; i < argc; i++) printf("arg %d: %s\\n", i, argv[i]);\n'
        '  printf("greeting: %s\\n", g ? g : "(none)");\n'
        '  printf("cwd: %s\\n", getcwd(cwd, sizeof cwd) ? cwd : "?");\n'
        '  FILE *f = fopen("/etc/greet.conf", "r"); char line[128];\n'
        '  if (f && fgets(line, sizeof line, f)) printf("conf: %s", line);\n'
        "  return 3;\n}\n"
    )
    return compile_c(src, "greet", flags=("-O1",))


# ---- build and run


def test_busybox_image_runs_like_native(home: Path) -> None:
    digest = ok(karn_in(home, "build", "-t", "bb:1", BUSYBOX)).strip()
    assert digest.startswith("sha256:")
    listing = ok(karn_in(home, "images"))
    assert "bb" in listing and "1" in listing and _image_id(home, "bb:1") in listing
    for argv in (["echo", "hello", "image"], ["sha256sum", "/bin/busybox"], ["ls", "/"]):
        got = karn_in(home, "run", "bb:1", *argv)
        want = native_run(BUSYBOX, *argv)
        if argv[0] == "ls":  # the guest root is the image: bin, usr plus karn's mounts
            # (and /etc, for the name-service files karn adds where the image has none)
            assert ok(got).split() == ["bin", "dev", "etc", "proc", "tmp", "usr"]
            continue
        assert got.returncode == want.returncode
        assert got.stdout == want.stdout


def test_dynamic_program_image_with_karnfile(home: Path, tmp_path: Path, greet: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "greet.conf").write_text("from the karnfile\n")
    (ctx / "Karnfile").write_text(
        f'name = "greet:2"\nprogram = "{greet}"\ncmd = ["one", "two words"]\n'
        'env = { GREETING = "hi there" }\nworkdir = "/etc"\nmemory = "96m"\ncpus = 1\n'
        'ports = ["8080/tcp"]\nvolumes = ["/data"]\nlabels = { team = "core" }\n'
        '[[files]]\nsrc = "greet.conf"\ndst = "/etc/greet.conf"\nmode = "0644"\n'
        '[policy]\nnetwork = "none"\n'
    )
    ok(karn_in(home, "build", ctx))
    got = karn_in(home, "run", "greet:2")
    assert got.returncode == 3, got.stderr.decode()
    assert got.stdout.decode() == (
        "arg 1: one\narg 2: two words\ngreeting: hi there\ncwd: /etc\nconf: from the karnfile\n"
    )
    # ARGS replace cmd, -e and -w override the image, as with docker
    got = karn_in(home, "run", "-e", "GREETING=override", "-w", "/", "greet:2", "x")
    assert got.stdout.decode().splitlines()[:3] == ["arg 1: x", "greeting: override", "cwd: /"]
    # and the same binary run natively (no config file there) agrees on the rest
    native = native_run(greet, "x", extra_env={"GREETING": "override"})
    assert got.stdout.decode().splitlines()[:3] == native.stdout.decode().splitlines()[:3]
    (info,) = json.loads(ok(karn_in(home, "inspect", "greet:2")))
    config = info["Config"]
    assert config["Cmd"] == ["one", "two words"]
    assert config["Entrypoint"] == [str(greet.resolve())]
    assert config["WorkingDir"] == "/etc"
    assert config["ExposedPorts"] == {"8080/tcp": {}}
    assert config["Volumes"] == {"/data": {}}
    assert config["Labels"] == {
        "team": "core",
        "org.karn.memory": str(96 << 20),
        "org.karn.cpus": "1",
        "org.karn.policy": '{"network": "none"}',
    }


def test_same_inputs_give_one_digest(tmp_path: Path, greet: Path) -> None:
    digests = set()
    pinned = {"SOURCE_DATE_EPOCH": "1700000000"}  # `created` is the build time otherwise
    for i in range(2):
        home = tmp_path / f"home{i}"
        for _ in range(2):
            digests.add(ok(karn_in(home, "build", "-t", "g", "--add", f"{BUSYBOX}:/bin/sh",
                                   greet, env=pinned)))
    assert len(digests) == 1, digests
    # a different input gives a different digest
    other = ok(karn_in(tmp_path / "home0", "build", "-t", "g2", "-e", "A=1", greet,
                       env=pinned))
    assert other not in digests


def test_directory_root_image(home: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    (root / "bin" / "cat").symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_text("directory image\n")
    ok(karn_in(home, "build", "-t", "dir", "--entrypoint", "cat", root))
    got = karn_in(home, "run", "dir", "/etc/motd")
    assert ok(got) == "directory image\n"
    got = karn_in(home, "run", "--entrypoint", "/bin/busybox", "dir", "basename", "/a/b")
    assert ok(got) == "b\n"


def _image_id(home: Path, name: str) -> str:
    """The IMAGE ID `karn images` shows: the config's digest, shortened (as podman)."""
    manifest = json.loads((home / "oci" / "blobs" / "sha256" / _digest(home, name)).read_bytes())
    return manifest["config"]["digest"][7:19]


def _digest(home: Path, name: str) -> str:
    return json.loads(ok(karn_in(home, "inspect", name)))[0]["Digest"][7:]


def test_rm_prune_and_tags(home: Path, greet: Path) -> None:
    ok(karn_in(home, "build", "-t", "a", greet))
    ok(karn_in(home, "tag", "a", "b:2"))
    assert karn_in(home, "run", "b:2").returncode == 3  # greet's status; extracts the root
    assert len(list((home / "rootfs").iterdir())) == 1
    assert "untagged" in ok(karn_in(home, "rm", "a"))
    assert ok(karn_in(home, "images", "-q")).split() == [_image_id(home, "b:2")]
    assert "deleted" in ok(karn_in(home, "rm", "b:2"))
    assert list((home / "oci" / "blobs" / "sha256").iterdir()) == []
    assert list((home / "rootfs").iterdir()) == []
    # an image that lost its tag to a rebuild stays as <none> until prune
    ok(karn_in(home, "build", "-t", "c", greet))
    ok(karn_in(home, "build", "-t", "c", "-e", "X=1", greet))
    assert "<none>" in ok(karn_in(home, "images"))
    ok(karn_in(home, "prune"))
    assert "<none>" not in ok(karn_in(home, "images"))
    assert len(ok(karn_in(home, "images", "-q")).split()) == 1


def test_root_is_extracted_once(home: Path) -> None:
    ok(karn_in(home, "build", "-t", "bb", BUSYBOX))
    ok(karn_in(home, "run", "bb", "true"))
    (root,) = (home / "rootfs").iterdir()
    marker = root / "usr" / "bin" / "busybox"
    before = marker.stat().st_ino
    ok(karn_in(home, "run", "bb", "true"))
    assert marker.stat().st_ino == before  # the cached root was used, not re-extracted


# ---- hand-made layers: whiteouts and hostile archives


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755
    return info, None


def write_layout(path: Path, layers: list[bytes], config: dict, tag: str = "t") -> None:
    """An OCI layout with one image made of the given (uncompressed) layer tars."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        hexd = hashlib.sha256(data).hexdigest()
        (blobs / hexd).write_bytes(data)
        return "sha256:" + hexd

    diff_ids, descs = [], []
    for raw in layers:
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        gz = gzip.compress(raw, mtime=0)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": put(gz), "size": len(gz)})  # fmt: skip
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": config,
                      "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()  # fmt: skip
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(cfg), "size": len(cfg)},
        "layers": descs,
    }).encode()  # fmt: skip
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    entry = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put(manifest),
        "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


BB = Path(BUSYBOX).read_bytes()


def test_whiteouts_and_opaque_dirs(home: Path, tmp_path: Path) -> None:
    lower = _tar([
        _file("bin/busybox", BB, 0o755),
        _file("etc/keep", b"keep\n"), _file("etc/gone", b"gone\n"),
        _file("data/old1", b"1"), _file("data/old2", b"2"),
        _file("dir/sub/file", b"x"),
    ])  # fmt: skip
    upper = _tar([
        _file("etc/.wh.gone", b""),
        _file("data/new", b"n"), _file("data/.wh..wh..opq", b""),
        _file("dir/.wh.sub", b""),
    ])  # fmt: skip
    write_layout(tmp_path / "layout", [lower, upper], {"Entrypoint": ["/bin/busybox"]})
    ok(karn_in(home, "build", "-t", "wh", "--from", f"oci:{tmp_path / 'layout'}:t"))
    # (/etc also shows the name-service files karn adds to an image that lacks them; the
    # service and protocol tables are the host's, where it has them)
    etc = ["group", "hostname", "hosts", "keep", "nsswitch.conf", "passwd", "resolv.conf"]
    etc += [name for name in ("protocols", "services") if os.path.exists(f"/etc/{name}")]
    assert ok(karn_in(home, "run", "wh", "ls", "/etc", "/data", "/dir")) == (
        "/data:\nnew\n\n/dir:\n\n/etc:\n" + "".join(f"{n}\n" for n in sorted(etc))
    )


@pytest.mark.parametrize(
    "member, problem",
    [
        (_file("../escape", b"x"), "leaves the root"),
        (_file("/abs-escape", b"x"), "absolute"),
        (_special("evil-link", tarfile.LNKTYPE, "../../../../etc/passwd"), "leaves the root"),
    ],
)
def test_hostile_layers_are_refused(home, tmp_path, member, problem) -> None:
    layer = _tar([_file("bin/busybox", BB, 0o755), member])
    write_layout(tmp_path / "layout", [layer], {"Entrypoint": ["/bin/busybox"]})
    ok(karn_in(home, "build", "-t", "evil", "--from", f"oci:{tmp_path / 'layout'}:t"))
    proc = karn_in(home, "run", "evil", "true")
    assert_one_error_line(proc, None, problem)
    assert list((home / "rootfs").iterdir()) == []  # no half-extracted root left
    assert not (home / "escape").exists() and not Path("/abs-escape").exists()


def test_symlinked_parent_stays_inside(home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    layer = _tar([
        _file("bin/busybox", BB, 0o755),
        _special("up", tarfile.SYMTYPE, "../../../../.." + str(outside)),
        _special("abs", tarfile.SYMTYPE, str(outside)),
        _file("up/pwned1", b"1"), _file("abs/pwned2", b"2"),
    ])  # fmt: skip
    write_layout(tmp_path / "layout", [layer], {"Entrypoint": ["/bin/busybox"]})
    ok(karn_in(home, "build", "-t", "links", "--from", f"oci:{tmp_path / 'layout'}:t"))
    ok(karn_in(home, "run", "links", "true"))
    (root,) = (home / "rootfs").iterdir()
    inside = root / str(outside).lstrip("/")
    # written inside the image, where the guest resolves the links, and not on the host
    assert (inside / "pwned1").read_bytes() == b"1"
    assert (inside / "pwned2").read_bytes() == b"2"
    assert list(outside.iterdir()) == []


# ---- other tools' images


def test_umoci_image_from_rootfs_tar(home: Path, tmp_path: Path) -> None:
    """An image made by umoci from a plain root filesystem tar runs under karn."""
    layout = tmp_path / "umoci-layout"
    rootfs_tar = tmp_path / "rootfs.tar"
    rootfs_tar.write_bytes(_tar([_file("bin/busybox", BB, 0o755), _file("hello.txt", b"hi\n")]))
    for cmd in (
        ["umoci", "init", "--layout", layout],
        ["umoci", "new", "--image", f"{layout}:base"],
        ["umoci", "raw", "add-layer", "--image", f"{layout}:base", rootfs_tar],
        ["umoci", "config", "--image", f"{layout}:base", "--config.entrypoint", "/bin/busybox",
         "--config.cmd", "cat", "--config.cmd", "/hello.txt"],
    ):  # fmt: skip
        subprocess.run(list(map(str, cmd)), check=True, capture_output=True)
    ok(karn_in(home, "build", "-t", "umo", "--from", f"oci:{layout}:base"))
    assert ok(karn_in(home, "run", "umo")) == "hi\n"


def test_docker_archive_from_skopeo(home: Path, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    layer = _tar([_file("bin/busybox", BB, 0o755), _file("etc/motd", b"docker archive\n")])
    write_layout(layout, [layer], {"Entrypoint": ["/bin/busybox", "cat"], "Cmd": ["/etc/motd"]})
    archive = tmp_path / "image.tar"
    subprocess.run(["skopeo", "copy", f"oci:{layout}:t", f"docker-archive:{archive}:x/y:1"],
                   check=True, capture_output=True)  # fmt: skip
    ok(karn_in(home, "build", "-t", "fromdocker", "--from", f"docker-archive:{archive}"))
    assert ok(karn_in(home, "run", "fromdocker")) == "docker archive\n"


def test_store_is_an_oci_layout_skopeo_reads(home: Path, tmp_path: Path) -> None:
    ok(karn_in(home, "build", "-t", "bb:1", BUSYBOX))
    out = tmp_path / "copy"
    subprocess.run(["skopeo", "copy", f"oci:{home / 'oci'}:bb:1", f"oci:{out}:bb"],
                   check=True, capture_output=True)  # fmt: skip
    other = tmp_path / "home2"
    ok(karn_in(other, "build", "-t", "again", "--from", f"oci:{out}:bb"))
    assert ok(karn_in(other, "run", "again", "echo", "round trip")) == "round trip\n"


def test_save_and_load_an_oci_archive_skopeo_reads_and_writes(home: Path,
                                                                 tmp_path: Path) -> None:
    """`karn save` writes what skopeo's oci-archive: reads (podman's save format); an
    archive skopeo writes loads back into another store with its name."""
    ok(karn_in(home, "build", "-t", "bb:1", BUSYBOX))
    saved = tmp_path / "bb.tar"
    assert ok(karn_in(home, "save", "-o", saved, "bb:1")) == ""
    inspected = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{saved}:bb:1"],
                                          check=True, capture_output=True).stdout)
    listed = json.loads(ok(karn_in(home, "images", "--format", "json")))
    assert inspected["Digest"] == listed[0]["Digest"]
    again = tmp_path / "again.tar"
    subprocess.run(["skopeo", "copy", f"oci-archive:{saved}:bb:1",
                    f"oci-archive:{again}:copied:2"], check=True, capture_output=True)
    other = tmp_path / "home2"
    assert ok(karn_in(other, "load", "-i", again)) == "Loaded image: copied:2\n"
    assert ok(karn_in(other, "run", "copied:2", "echo", "loaded")) == "loaded\n"
    # stdin and stdout too, and the same image gives the same archive
    streamed = karn_in(home, "save", "bb:1")
    assert streamed.returncode == 0 and streamed.stdout == saved.read_bytes()
    third = tmp_path / "home3"
    assert ok(karn_in(third, "load", input=streamed.stdout)) == "Loaded image: bb:1\n"


@pytest.mark.parametrize("member", ["/etc/evil", "../evil", "blobs/link"])
def test_load_refuses_a_hostile_or_broken_archive(home: Path, tmp_path: Path,
                                                  member: str) -> None:
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo(member)
        if member == "blobs/link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            tar.addfile(info, io.BytesIO(b""))
    proc = karn_in(home, "load", "-i", archive)
    assert_one_error_line(proc, 125)
    assert not (tmp_path / "evil").exists() and not Path("/etc/evil").exists()
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar" * 100)
    assert_one_error_line(karn_in(home, "load", "-i", garbage), 125)


def test_rmi_removes_images_only(home: Path, state_env: dict[str, str]) -> None:
    ok(karn_in(home, "build", "-t", "gone:1", BUSYBOX))
    assert ok(karn_in(home, "rmi", "gone:1")).startswith("deleted sha256:")
    assert ok(karn_in(home, "images", "-q")) == ""
    proc = karn_in(home, "rmi", "gone:1")
    assert_one_error_line(proc, 1)


# ---- errors: one line, store intact


@pytest.mark.parametrize(
    "karnfile, key",
    [
        ('program = "/bin/busybox"\nmemroy = "1g"\n', "memroy"),
        ('program = "/bin/busybox"\nmemory = "lots"\n', "memory"),
        ('program = "/bin/busybox"\ncmd = [1, 2]\n', "cmd"),
        ('program = "/bin/busybox"\nenv = "A=1"\n', "env"),
        ('program = "/bin/busybox"\ncpus = 0\n', "cpus"),
        ('program = "/bin/busybox"\nports = ["http"]\n', "ports"),
        ('program = "/bin/busybox"\n[[files]]\nsrc = "x"\ndst = "rel"\n', "files[0].dst"),
        ('program = "/bin/busybox"\nroot = "/"\n', "root"),
        ('program = "/bin/busybox"\nworkdir = "etc"\n', "workdir"),
        ('program = "/bin/busybox\n', "invalid toml"),
    ],
)
def test_malformed_karnfile(home: Path, tmp_path: Path, karnfile: str, key: str) -> None:
    ok(karn_in(home, "build", "-t", "keep", BUSYBOX))
    before = store_snapshot(home)
    (tmp_path / "Karnfile").write_text(karnfile)
    assert_one_error_line(karn_in(home, "build", "-t", "x", tmp_path), None, key)
    assert store_snapshot(home) == before


@pytest.mark.parametrize(
    "args, text",
    [
        (["build", "-t", "x", "/no/such/program"], "no such file"),
        (["build", "-t", "x", "--add", "/no/such/file:/f", BUSYBOX], "/no/such/file"),
        (["build", "-t", "Bad Name", BUSYBOX], "invalid image reference"),
        (["build", "-t", "x", "--from", "oci:/no/such/layout"], "not an oci layout"),
        (["run", "nosuch:1"], "not found"),
        (["inspect", "nosuch"], "not found"),
        (["rm", "nosuch"], "not found"),
        (["tag", "nosuch", "x"], "not found"),
        (["run", "--entrypoint", "./nothere/x", "keep"], "no such file in the image"),
        (["run", "--entrypoint", "nothere", "keep"], "not found in the image"),
    ],
)
def test_bad_input_one_line_store_intact(home: Path, args: list[str], text: str) -> None:
    ok(karn_in(home, "build", "-t", "keep", BUSYBOX))
    before = store_snapshot(home)
    assert_one_error_line(karn_in(home, *args), None, text)
    assert store_snapshot(home) == before
    assert list((home / "tmp").iterdir()) == []


@pytest.mark.parametrize(
    "options, text",
    [
        (["--syscalls", "nosuchcall"], "nosuchcall"),
        (["--ulimit", "nofile=many"], "--ulimit"),
        (["--cpus", "0"], "--cpus"),
        (["--memory", "1m"], "--memory"),
        (["--workdir", "relative"], "--workdir"),
        (["--network", "everywhere"], "--network"),
        (["--publish", "http"], "--publish"),
        (["--volume", "/no/such/dir:/data"], "/no/such/dir"),
        (["--trace=nosuchcall"], "--trace"),
        (["-d", "--gdb", "1234"], "--gdb"),
    ],
)
def test_bad_options_are_refused_before_any_pull(home: Path, options: list[str],
                                                 text: str) -> None:
    """What the command line alone decides is checked before karn contacts a registry:
    the run fails on the option, and the registry (a listening socket) sees no one."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as registry:
        registry.setblocking(False)
        image = f"127.0.0.1:{registry.getsockname()[1]}/app:1"
        assert_one_error_line(karn_in(home, "run", *options, image), 125, text)
        with pytest.raises(BlockingIOError):
            registry.accept()  # a pull would have connected (and waits in the backlog)


def test_corrupted_blob_in_store_is_refused(home: Path) -> None:
    ok(karn_in(home, "build", "-t", "bb", BUSYBOX))
    (info,) = json.loads(ok(karn_in(home, "inspect", "bb")))
    layer = home / "oci" / "blobs" / "sha256" / info["Manifest"]["layers"][0]["digest"][7:]
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(layer, 0o644)
    layer.write_bytes(bytes(data))
    assert_one_error_line(karn_in(home, "run", "bb", "true"), None, "corrupt")
    assert list((home / "rootfs").iterdir()) == []


def test_help_for_every_command(home: Path) -> None:
    for cmd in ("build", "images", "inspect", "tag", "rm", "prune", "push", "pull", "login",
                "logout", "run"):  # fmt: skip
        out = ok(karn_in(home, cmd, "--help"))
        assert out.startswith("usage: karn " + cmd), out
