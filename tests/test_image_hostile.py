"""Hostile images: layers, manifests, configs and indexes written by an attacker.

Each archive is built here, imported with `karn build --from ...` and extracted by
`karn run IMAGE` (karn's real path), and the test checks what a user would see: files
outside the store untouched, one `karn:` error line, the store as it was.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
from helpers import karn_in
from test_errors import assert_one_error_line
from test_images import BB, _file, _special, _tar, ok, store_snapshot, write_layout

pytestmark = pytest.mark.breadth  # make test-quick leaves these out

CONFIG = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/busybox", "true"]},
          "rootfs": {"type": "layers", "diff_ids": []}}  # fmt: skip


def docker_archive(
    path: Path,
    layers: list[bytes],
    config: object = CONFIG,
    manifest: object | None = None,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """A `docker save` archive: manifest.json, config.json and one tar per layer."""
    files = {f"l{i}.tar": data for i, data in enumerate(layers)}
    if manifest is None:
        manifest = [{"Config": "config.json", "Layers": list(files)}]
    files["config.json"] = config if isinstance(config, bytes) else json.dumps(config).encode()
    files["manifest.json"] = (
        manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    )
    files.update(extra or {})
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _dir(name: str, mode: int) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    return info, None


def tree_state(top: Path) -> dict[str, tuple[int, bytes | str | None]]:
    """Every path under top with its mode and content (or link target)."""
    out: dict[str, tuple[int, bytes | str | None]] = {str(top): (top.lstat().st_mode, None)}
    for path in sorted(top.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            out[str(path)] = (st.st_mode, os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            out[str(path)] = (st.st_mode, path.read_bytes())
        else:
            out[str(path)] = (st.st_mode, None)
    return out


def make_victims(tmp_path: Path) -> Path:
    """Files and a directory outside the store that a hostile layer aims at."""
    victim = tmp_path / "victim"
    (victim / "dir").mkdir(parents=True)
    (victim / "shadow").write_text("secret\n")
    os.chmod(victim / "shadow", 0o600)
    os.chmod(victim / "dir", 0o700)
    (victim / "dir" / "keep").write_text("keep\n")
    return victim


def build_and_run(home: Path, archive: Path, name: str) -> None:
    """Import an archive and run it: the run extracts its layers (errors are fine)."""
    ok(karn_in(home, "build", "-t", name, "--from", f"docker-archive:{archive}"))
    proc = karn_in(home, "run", name)
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()


# ---- V1: metadata operations never follow a link out of the root


@pytest.mark.parametrize("target", ["shadow", "dir"])
def test_directory_mode_does_not_follow_a_later_symlink(home: Path, tmp_path: Path,
                                                         target: str) -> None:  # fmt: skip
    """A directory entry, then a symlink of the same name: chmod must not reach the target."""
    victim = make_victims(tmp_path)
    before = tree_state(victim)
    aim = str(victim / target)
    layer = _tar([
        _file("bin/busybox", BB, 0o755),
        _dir("x", 0o1777), _special("x", tarfile.SYMTYPE, aim),
        _dir("y/", 0o1777), _special("y", tarfile.SYMTYPE, "../../../../../../../" + aim),
        _dir("z", 0o777), _special("z", tarfile.LNKTYPE, "bin/busybox"), _dir("z", 0o777),
    ])  # fmt: skip
    build_and_run(home, docker_archive(tmp_path / "v1.tar", [layer]), "v1:1")
    assert tree_state(victim) == before
    (root,) = (home / "rootfs").iterdir()  # extracted, with the links as the layer said
    assert os.readlink(root / "x") == aim


def test_directory_mode_across_layers(home: Path, tmp_path: Path) -> None:
    """A lower layer's symlink, an upper layer's directory entry of the same name."""
    victim = make_victims(tmp_path)
    before = tree_state(victim)
    lower = _tar([_file("bin/busybox", BB, 0o755),
                  _special("x", tarfile.SYMTYPE, str(victim / "shadow")),
                  _special("d", tarfile.SYMTYPE, str(victim / "dir"))])  # fmt: skip
    upper = _tar([_dir("x", 0o1777), _dir("d/sub", 0o777), _file("d/keep", b"pwned", 0o777)])
    build_and_run(home, docker_archive(tmp_path / "v1b.tar", [lower, upper]), "v1b:1")
    assert tree_state(victim) == before


# ---- R5: OCI layouts are checked blob by blob; index nesting is bounded

IDX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def oci_layout(path: Path, index: object, blobs: dict[str, bytes] | None = None) -> Path:
    (path / "blobs" / "sha256").mkdir(parents=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_text(json.dumps(index))
    for hexd, data in (blobs or {}).items():
        (path / "blobs" / "sha256" / hexd).write_bytes(data)
    return path


def _desc(media_type: str, data: bytes, **extra: object) -> dict[str, object]:
    return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data), **extra}  # fmt: skip


def test_self_referencing_index_is_refused(home: Path, tmp_path: Path) -> None:
    """An index naming itself by a digest its content does not have used to loop forever."""
    fake = "a" * 64
    inner = {"schemaVersion": 2, "manifests": [
        {"mediaType": IDX, "digest": "sha256:" + fake, "size": 1,
         "platform": {"os": "linux", "architecture": "amd64"}}]}  # fmt: skip
    layout = oci_layout(tmp_path / "loop", {"schemaVersion": 2, "manifests": inner["manifests"]},
                        {fake: json.dumps(inner).encode()})  # fmt: skip
    ok(karn_in(home, "build", "-t", "keep", "--root", tmp_path / "loop", "--entrypoint", "/x"))
    before = store_snapshot(home)
    proc = karn_in(home, "build", "-t", "x", "--from", f"oci:{layout}", timeout=60)
    assert_one_error_line(proc, None, "does not match its digest")
    assert store_snapshot(home) == before


def test_deeply_nested_indexes_are_refused(home: Path, tmp_path: Path) -> None:
    """Indexes with correct digests nested deeper than karn follows: refused, not followed."""
    blobs: dict[str, bytes] = {}
    desc = {"mediaType": MANIFEST, "digest": "sha256:" + "b" * 64, "size": 10}
    for _ in range(20):
        data = json.dumps({"schemaVersion": 2, "manifests": [desc]}).encode()
        blobs[hashlib.sha256(data).hexdigest()] = data
        desc = _desc(IDX, data)
    layout = oci_layout(tmp_path / "deep", {"schemaVersion": 2, "manifests": [desc]}, blobs)
    proc = karn_in(home, "build", "-t", "x", "--from", f"oci:{layout}", timeout=60)
    assert_one_error_line(proc, None, "indexes nested more than")


# ---- R6/R7: malformed manifests, indexes and configs give one line


GOOD_LAYER = _tar([_file("bin/busybox", BB, 0o755)])


@pytest.mark.parametrize(
    "manifest, config, extra, text",
    [
        (b"not json", None, {}, "manifest.json: not valid JSON"),
        pytest.param(
            b"[" * 100000 + b"]" * 100000,
            None,
            {},
            "manifest.json: not valid JSON",
            id="deeply-nested",
        ),
        (b'[{"Layers":["l0.tar"]}]', None, {}, "'Config' is required"),
        (b'[{"Config":5,"Layers":["l0.tar"]}]', None, {}, "Config: must be string"),
        (b'[{"Config":"config.json","Layers":5}]', None, {}, "Layers: must be array"),
        (b'[{"Config":"config.json","Layers":[5]}]', None, {}, "Layers[0]: must be string"),
        (b'{"Config":"config.json"}', None, {}, "must be array"),
        (b"[]", None, {}, "must not be empty"),
        (b'[{"Config":"/","Layers":[]}]', None, {}, "missing from the archive"),
        (b'[{"Config":"../../../etc/passwd","Layers":[]}]', None, {}, "missing"),
        (None, b"[1,2]", {}, "must be object"),
        (None, b'{"rootfs":5,"config":"x"}', {}, "must be object"),
        (None, b'{"config":"x"}', {}, "config: must be object or null"),
        (None, b'{"config":{"Cmd":"sh"}}', {}, "config.Cmd: must be array or null"),
        (None, b'{"config":{"Env":[1]}}', {}, "config.Env[0]: must be string"),
        (None, b'{"config":{"Labels":{"a":1}}}', {}, "config.Labels.a: must be string"),
        (b'[{"Config":"c","Layers":[]}]', None, {"c": b""}, "not valid JSON"),
    ],
)
def test_malformed_docker_archive(home: Path, tmp_path: Path, manifest: bytes | None,
                                  config: bytes | None, extra: dict[str, bytes],
                                  text: str) -> None:  # fmt: skip
    ok(karn_in(home, "build", "-t", "keep", "--root", tmp_path, "--entrypoint", "/x"))
    before = store_snapshot(home)
    archive = docker_archive(tmp_path / "bad.tar", [GOOD_LAYER], config=config or CONFIG,
                             manifest=manifest, extra=extra)  # fmt: skip
    proc = karn_in(home, "build", "-t", "x", "--from", f"docker-archive:{archive}")
    assert_one_error_line(proc, None, text)
    assert store_snapshot(home) == before
    assert list((home / "tmp").iterdir()) == []


def test_docker_archive_member_links(home: Path, tmp_path: Path) -> None:
    """Layers named through links inside the archive (as old `docker save` wrote) import;
    a chain of links too long to follow is refused."""
    archive = docker_archive(tmp_path / "a.tar", [GOOD_LAYER])
    with tarfile.open(archive, "a") as tar:
        for i in range(3000):  # a long chain: tarfile's own lookup recursed on each
            tar.addfile(
                _special(f"chain{i}", tarfile.SYMTYPE, f"chain{i - 1}" if i else "l0.tar")[0]
            )
        tar.addfile(_special("hard", tarfile.LNKTYPE, "l0.tar")[0])
        manifest = json.dumps([{"Config": "config.json", "Layers": ["hard", "chain3"]}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    ok(karn_in(home, "build", "-t", "links", "--from", f"docker-archive:{archive}"))
    assert ok(karn_in(home, "run", "links", "/bin/busybox", "echo", "linked")) == "linked\n"
    with tarfile.open(archive, "a") as tar:
        manifest = json.dumps([{"Config": "config.json", "Layers": ["chain2999"]}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    proc = karn_in(home, "build", "-t", "x", "--from", f"docker-archive:{archive}")
    assert_one_error_line(proc, None, "too many levels of links")


@pytest.mark.parametrize(
    "index, text",
    [
        ([1, 2], "index.json: the document: must be object"),
        ({"schemaVersion": 2, "manifests": "x"}, "manifests: must be array"),
        ({"schemaVersion": 2, "manifests": [{"mediaType": MANIFEST}]}, "'digest' is required"),
        ({"schemaVersion": 2, "manifests": [{"mediaType": MANIFEST, "size": 2,
                                             "digest": "sha256:../../../../etc/passwd"}]},
         "malformed digest"),
        ({"schemaVersion": 2, "manifests": [{"mediaType": MANIFEST, "size": "2",
                                             "digest": "sha256:" + "c" * 64}]},
         "size: must be integer"),
    ],
)  # fmt: skip
def test_malformed_oci_index(home: Path, tmp_path: Path, index: object, text: str) -> None:
    layout = oci_layout(tmp_path / "layout", index)
    assert_one_error_line(karn_in(home, "build", "-t", "x", "--from", f"oci:{layout}"), None, text)


@pytest.mark.parametrize(
    "manifest, text",
    [
        ({"mediaType": MANIFEST, "config": 5, "layers": []}, "config: must be object"),
        ({"mediaType": MANIFEST, "config": {"digest": "sha256:" + "d" * 64, "size": 2}},
         "'layers' is required"),
        ({"mediaType": MANIFEST, "config": {"digest": "sha256:" + "d" * 64, "size": 2},
          "layers": [{"digest": 3, "size": 1}]}, "layers[0].digest: must be string"),
        ({"mediaType": MANIFEST, "config": {"digest": "sha256:" + "d" * 64, "size": 2},
          "layers": []}, "missing blob"),
    ],
)  # fmt: skip
def test_malformed_oci_manifest(home: Path, tmp_path: Path, manifest: object, text: str) -> None:
    data = json.dumps(manifest).encode()
    desc = _desc(MANIFEST, data)
    layout = oci_layout(tmp_path / "layout", {"schemaVersion": 2, "manifests": [desc]},
                        {str(desc["digest"])[7:]: data})  # fmt: skip
    assert_one_error_line(karn_in(home, "build", "-t", "x", "--from", f"oci:{layout}"), None, text)


def test_config_not_an_object_is_refused_before_the_store(home: Path, tmp_path: Path) -> None:
    """An image whose config.config is a string used to import, then fail `karn run` and
    `karn build --from` with a traceback."""
    layout = tmp_path / "layout"
    write_layout(layout, [GOOD_LAYER], "x")  # type: ignore[arg-type]
    proc = karn_in(home, "build", "-t", "x", "--from", f"oci:{layout}:t")
    assert_one_error_line(proc, None, "config: must be object or null")
    assert not (home / "oci" / "index.json").exists() or "x:" not in ok(karn_in(home, "images"))


# ---- R8: a build directory whose entries vanish while karn reads it


def test_build_root_with_vanishing_entries(home: Path) -> None:
    """/proc/self/fd lists the fd karn opened to read it, gone when karn looks at it."""
    proc = karn_in(home, "build", "-t", "vanish", "--entrypoint", "/x", "--root", "/proc/self/fd")
    assert b"Traceback" not in proc.stderr, proc.stderr.decode()
    assert proc.returncode == 0, proc.stderr.decode()


# ---- V7: whiteouts name one entry of their own directory


@pytest.mark.parametrize("whiteout", [".wh...", ".wh..", "sub/.wh...", "link/.wh...", ".wh."])
def test_whiteout_cannot_leave_the_root(home: Path, tmp_path: Path, whiteout: str) -> None:
    """'.wh...' whited out '..': the extraction root's parent ($KARN_HOME/tmp) was deleted.
    The link aims at a victim directory, never at the host's root: on a regression this
    test must not delete the machine it runs on (once, it took /etc with it)."""
    victim = make_victims(tmp_path)
    before = tree_state(victim)
    lower = _tar([_file("bin/busybox", BB, 0o755), _dir("sub", 0o755),
                  _special("link", tarfile.SYMTYPE, str(victim / "dir"))])  # fmt: skip
    upper = _tar([_file(whiteout, b"")])
    build_and_run(home, docker_archive(tmp_path / "wh.tar", [lower, upper]), "wh:1")
    (home / "tmp" / "other-pull").write_text("in flight")  # what a concurrent pull has there
    proc = karn_in(home, "run", "wh:1")
    assert_one_error_line(proc, None, "names no entry")
    assert (home / "tmp" / "other-pull").read_text() == "in flight"
    assert (home / "oci" / "index.json").exists()
    assert list((home / "rootfs").iterdir()) == []
    assert tree_state(victim) == before


def test_opaque_whiteout_below_a_symlink_stays_inside(home: Path, tmp_path: Path) -> None:
    """An opaque whiteout in a directory reached through a symlink to '..' or the host's
    root empties the image's directory, never the host's."""
    victim = make_victims(tmp_path)
    before = tree_state(victim)
    lower = _tar([_file("bin/busybox", BB, 0o755),
                  _special("up", tarfile.SYMTYPE, "../../../../../../../.." + str(victim)),
                  _special("abs", tarfile.SYMTYPE, str(victim / "dir"))])  # fmt: skip
    upper = _tar([_file("up/.wh..wh..opq", b""), _file("abs/.wh..wh..opq", b""),
                  _file("abs/.wh.keep", b""), _file("up/.wh.shadow", b"")])  # fmt: skip
    build_and_run(home, docker_archive(tmp_path / "opq.tar", [lower, upper]), "opq:1")
    assert tree_state(victim) == before
    assert ok(karn_in(home, "run", "opq:1", "/bin/busybox", "echo", "ran")) == "ran\n"


# ---- R3: extraction is bounded; sparse files stay sparse


def sparse_member(name: str, realsize: int, blocks: list[tuple[int, bytes]]) -> bytes:
    """One PAX (GNU sparse 1.0) member: the map, then only the data blocks."""
    lines = [str(len(blocks))] + [f"{off}\n{len(data)}" for off, data in blocks]
    sparse_map = ("\n".join(lines) + "\n").encode()
    sparse_map += b"\0" * (-len(sparse_map) % 512)
    payload = sparse_map + b"".join(data for _, data in blocks)
    info = tarfile.TarInfo(f"GNUSparseFile.0/{name}")
    info.size = len(payload)
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                        "GNU.sparse.name": name, "GNU.sparse.realsize": str(realsize)}  # fmt: skip
    return info.tobuf(tarfile.PAX_FORMAT) + payload + b"\0" * (-len(payload) % 512)


def test_sparse_member_stays_sparse(home: Path, tmp_path: Path) -> None:
    """A 1 GiB sparse file with 2 data blocks: extracted with its holes, read back right."""
    gib = 1 << 30
    layer = sparse_member("big", gib, [(4096, b"head"), (gib - 4096, b"tail")]) + _tar(
        [_file("bin/busybox", BB, 0o755)])  # fmt: skip
    archive = docker_archive(tmp_path / "sparse.tar", [gzip.compress(layer)])
    assert archive.stat().st_size < 4 << 20  # busybox and a few bytes of the big file
    build_and_run(home, archive, "sparse:1")
    (root,) = (home / "rootfs").iterdir()
    big = root / "big"
    assert big.stat().st_size == gib
    assert big.stat().st_blocks * 512 < 1 << 20  # holes, not a GiB of zeros on disk
    with open(big, "rb") as f:
        f.seek(4096)
        assert f.read(8) == b"head\0\0\0\0"
        f.seek(gib - 4096)
        assert f.read() == b"tail" + b"\0" * 4092
    got = karn_in(home, "run", "sparse:1", "/bin/busybox", "stat", "-c", "%s", "/big")
    assert ok(got).split()[0] == str(gib)


@pytest.mark.slow
def test_zero_bomb_is_bounded(home: Path, tmp_path: Path) -> None:
    """256 MiB of zeros in a small gzip layer: refused at the default limit (one line, no
    root, nothing left in the store's tmp/); KARN_MAX_EXTRACT lowers or raises the limit."""
    size = 256 << 20

    class Zeros:
        def read(self, n: int) -> bytes:
            return bytes(n)

    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", compresslevel=9) as z, \
            tarfile.open(fileobj=z, mode="w|") as tar:  # fmt: skip
        info, data = _file("bin/busybox", BB, 0o755)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("zeros")
        info.size = size
        tar.addfile(info, Zeros())  # type: ignore[arg-type]
    archive = docker_archive(tmp_path / "bomb.tar", [gz.getvalue()])
    assert archive.stat().st_size < 2 << 20
    ok(karn_in(home, "build", "-t", "bomb:1", "--from", f"docker-archive:{archive}"))
    proc = karn_in(home, "run", "bomb:1", "/bin/busybox", "true")
    assert_one_error_line(proc, None, "expands to more than", "KARN_MAX_EXTRACT")
    assert list((home / "rootfs").iterdir()) == []
    assert list((home / "tmp").iterdir()) == []
    proc = karn_in(home, "run", "bomb:1", "/bin/busybox", "true", env={"KARN_MAX_EXTRACT": "1m"})
    assert_one_error_line(proc, None, "more than 1.0 MiB")
    proc = karn_in(home, "run", "bomb:1", "/bin/busybox", "true", env={"KARN_MAX_EXTRACT": "x"})
    assert_one_error_line(proc, None, "KARN_MAX_EXTRACT=x")
    got = karn_in(home, "run", "bomb:1", "/bin/busybox", "stat", "-c", "%s", "/zeros",
                  env={"KARN_MAX_EXTRACT": "1g"})  # fmt: skip
    assert ok(got).split()[0] == str(size)


@pytest.mark.parametrize("blocks", [[(100, b"a"), (50, b"b")], [(0, b"abc"), (1, b"d")],
                                    [(4090, b"0123456789")]])  # fmt: skip
def test_malformed_sparse_map(home: Path, tmp_path: Path, blocks: list[tuple[int, bytes]]) -> None:
    layer = sparse_member("bad", 4096, blocks) + _tar([_file("bin/busybox", BB, 0o755)])
    build_and_run(home, docker_archive(tmp_path / "badsparse.tar", [layer]), "bs:1")
    proc = karn_in(home, "run", "bs:1", "/bin/busybox", "true")
    assert_one_error_line(proc, None, "malformed sparse file map")
