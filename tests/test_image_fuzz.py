"""A hostile image author fuzzing karn's image inputs: layers, manifests, configs, indexes.

Seeded random inputs go through karn's real code on real bytes: layer tars (every member
type, hostile names, links aimed at a canary tree outside the store, whiteouts, sparse
maps, all three tar formats, gzip or not, then byte-level damage) are extracted with
extract_layer; `docker save` archives and OCI layouts (mutated JSON, wrong digests and
sizes, nested indexes, links inside the archive) are imported with import_docker_archive
and import_oci_layout and, when accepted, extracted as `karn run` does. Most cases run
in-process; a sample also goes through the `karn` CLI for the one-line error path.

Asserted: no exception but karn's own one-line errors (no traceback), the canary tree
outside the store unchanged and nothing new next to it, bounded peak memory.

Knobs for longer runs (the default is 10,000 inputs):
    KARN_IMAGE_FUZZ_CASES=100000 KARN_IMAGE_FUZZ_SEED=7 \
        python3 -m pytest -q -s tests/test_image_fuzz.py
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from karn.errors import KarnError
from karn.image.build import import_docker_archive, import_oci_layout
from karn.image.layer import ExtractLimit, extract_image, extract_layer
from karn.image.store import Store

CASES = int(os.environ.get("KARN_IMAGE_FUZZ_CASES", "10000"))
SEED = int(os.environ.get("KARN_IMAGE_FUZZ_SEED", "1"))
CLI_CASES = 12  # of them, through `karn build` and `karn run` (the rest in-process)
LIMIT = 1 << 20  # extraction limit per case: the bombs hit it quickly
HWM_SLACK = 160 << 20  # peak RSS growth allowed over the whole run
LAYER_TYPES = ["application/vnd.oci.image.layer.v1.tar",
               "application/vnd.oci.image.layer.v1.tar+gzip",
               "application/vnd.docker.image.rootfs.diff.tar.gzip",
               "application/vnd.oci.image.layer.v1.tar+zstd", "text/plain", ""]  # fmt: skip
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


class Gen:
    """Random hostile inputs aimed at a canary directory outside the store."""

    layers = 0  # layer tars generated, in all

    def __init__(self, rng: random.Random, canary: Path) -> None:
        self.r = rng
        self.canary = canary
        # half the cases are well-formed but for their links, so that they get through the
        # first checks and reach the deeper code (links followed, whiteouts, replacements)
        self.hostile = rng.random() < 0.5
        self.names: list[str] = []

    # ---- names and link targets
    def name(self) -> str:
        r = self.r
        benign = ["a", "b", "x", "dir", "link", "f", "é", ".wh.a", ".wh.f", ".wh..wh..opq"]
        hostile = ["..", ".", "", ".wh...", ".wh..", ".wh.", "a" * r.choice([100, 300, 5000])]
        rate = 0.05 if self.hostile else 0.0
        comps = [r.choice(hostile if r.random() < rate else benign) for _ in range(r.randint(1, 3))]
        prefix = r.choice(["", "", "", "/", "./"] if self.hostile else ["", "./"])
        return prefix + "/".join(comps)

    def target(self, hard: bool = False) -> str:
        r = self.r
        c = self.canary
        if hard and not self.hostile and self.names:
            return r.choice(self.names)
        return r.choice([
            str(c), str(c / "secret"), str(c / "dir"), "../" * r.randint(1, 12) + c.name,
            "../" * r.randint(1, 12) + f"{c.name}/secret", str(c.parent), "..", ".", "",
            self.name(), "a", "dir", "link", "/nonexistent-karn-fuzz/x", "x" * 5000,
        ])  # fmt: skip

    # ---- layers
    def member(self, tar: tarfile.TarFile) -> None:
        r = self.r
        info = tarfile.TarInfo(self.name())
        info.mode = r.choice([0o644, 0o755, 0o777, 0o1777, 0o4755, 0o000, r.getrandbits(12)])
        info.mtime = r.choice([0, 1 << 33, 1700000000])
        kinds = ["reg", "reg", "reg", "dir", "dir", "dir", "sym", "sym", "lnk", "fifo", "chr"]
        kind = "big" if r.random() < 0.02 else r.choice(kinds)
        data = b""
        if kind in ("reg", "big"):
            data = r.randbytes(r.choice([0, 1, 100, 5000]))
            if kind == "big":  # compresses well, expands past the limit
                data = bytes(r.choice([LIMIT // 2, LIMIT * 2]))
        elif kind == "dir":
            info.type = tarfile.DIRTYPE
        elif kind in ("sym", "lnk"):
            info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
            info.linkname = self.target(hard=kind == "lnk")
        else:
            info.type = tarfile.FIFOTYPE if kind == "fifo" else tarfile.CHRTYPE
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data) if data else None)
        self.names.append(info.name)

    def sparse(self) -> bytes:
        """A PAX GNU sparse 1.0 member with a random (maybe malformed) map."""
        r = self.r
        offsets = [0, 512, 4096, 1 << 30, -1, r.getrandbits(40)]
        blocks = [
            (r.choice(offsets), r.randbytes(r.randint(0, 40))) for _ in range(r.randint(0, 4))
        ]
        lines = [str(len(blocks))] + [f"{off}\n{len(d)}" for off, d in blocks]
        head = ("\n".join(lines) + "\n").encode()
        head += b"\0" * (-len(head) % 512)
        payload = head + b"".join(d for _, d in blocks)
        info = tarfile.TarInfo("GNUSparseFile.0/s")
        info.size = len(payload)
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                            "GNU.sparse.name": self.name() or "s",
                            "GNU.sparse.realsize": str(r.choice([0, 4096, 1 << 62]))}  # fmt: skip
        return info.tobuf(tarfile.PAX_FORMAT) + payload + b"\0" * (-len(payload) % 512)

    def layer(self) -> tuple[bytes, str]:
        r = self.r
        Gen.layers += 1
        buf = io.BytesIO()
        fmt = r.choice([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
            for _ in range(r.randint(0, 12)):
                try:
                    self.member(tar)
                except ValueError:  # a name or link this format cannot hold
                    pass
        data = buf.getvalue()
        if r.random() < 0.15:
            data = self.sparse() + data
        data = self.damage(data) if self.hostile and r.random() < 0.3 else data
        media = r.choice(LAYER_TYPES[:3]) if r.random() < 0.95 else r.choice(LAYER_TYPES)
        if "gzip" in media:
            data = gzip.compress(data, 1, mtime=0)
            data = self.damage(data) if self.hostile and r.random() < 0.1 else data
        return data, media

    def damage(self, data: bytes) -> bytes:
        r = self.r
        b = bytearray(data)
        for _ in range(r.randint(1, 8)):
            what = r.random()
            if not b:
                break
            if what < 0.5:
                b[r.randrange(len(b))] = r.getrandbits(8)
            elif what < 0.7:
                del b[r.randrange(len(b)) :]
            elif what < 0.85:
                i = r.randrange(len(b))
                b[i:i] = b[r.randrange(len(b)) :][:512]
            else:  # a header field set to digits or garbage
                i = r.randrange(0, len(b), 512) + r.randrange(100, 160)
                b[i : i + 12] = r.choice([b"77777777777\0", b"\x80" + bytes(11), b"-1" + bytes(10)])
        return bytes(b)

    # ---- JSON documents
    def value(self) -> Any:
        r = self.r
        return r.choice([None, 5, -1, 1.5, True, "x", "", [], {}, [1, "a"], {"a": 1},
                         "sha256:" + "0" * 64, "sha256:../../etc/passwd", "x" * 3000,
                         float("nan"), 1 << 70])  # fmt: skip

    def mutate(self, doc: Any) -> Any:
        """The document with one random node replaced, removed or added."""
        r = self.r
        if not isinstance(doc, (dict, list)) or not doc or r.random() < 0.2:
            return self.value()
        if isinstance(doc, dict):
            key = r.choice(list(doc))
            out = dict(doc)
            what = r.random()
            if what < 0.2:
                del out[key]
            elif what < 0.3:
                out[r.choice(["config", "layers", "manifests", "extra"])] = self.value()
            else:
                out[key] = self.mutate(doc[key])
            return out
        out = list(doc)
        i = r.randrange(len(out))
        out[i] = self.mutate(out[i])
        return out

    def json_bytes(self, doc: Any) -> bytes:
        r = self.r
        if r.random() < (0.3 if self.hostile else 0.05):
            doc = self.mutate(doc)
        data = json.dumps(doc).encode()
        what = r.random()
        if what < 0.03:
            return data[: r.randrange(len(data) + 1)]
        if what < 0.05:
            return b"[" * 50000 + b"]" * 50000
        return data

    def config(self) -> dict[str, Any]:
        return {"architecture": "amd64", "os": "linux",
                "config": {"Entrypoint": ["/bin/x"], "Env": ["A=1"], "Labels": {"l": "v"}},
                "rootfs": {"type": "layers", "diff_ids": []}}  # fmt: skip


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def docker_archive(g: Gen, path: Path) -> None:
    r = g.r
    layers = [g.layer()[0] for _ in range(r.randint(0, 3))]
    names = [f"l{i}.tar" for i in range(len(layers))]
    with tarfile.open(path, "w") as tar:
        for name, data in zip(names, layers, strict=True):
            add(tar, name, data)
        if r.random() < 0.2 and names:  # layers named through links, as old docker wrote
            link = tarfile.TarInfo("linked.tar")
            link.type = r.choice([tarfile.SYMTYPE, tarfile.LNKTYPE])
            link.linkname = r.choice([*names, "linked.tar", "../x", str(g.canary / "secret")])
            tar.addfile(link)
            names.append("linked.tar")
        add(tar, "config.json", g.json_bytes(g.config()))
        add(tar, "manifest.json", g.json_bytes([{"Config": "config.json", "Layers": names}]))
    if r.random() < 0.1:
        path.write_bytes(g.damage(path.read_bytes()))


def oci_layout(g: Gen, path: Path) -> str:
    r = g.r
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes, media: str) -> dict[str, Any]:
        hexd = hashlib.sha256(data).hexdigest()
        desc = {"mediaType": media, "digest": "sha256:" + hexd, "size": len(data)}
        what = r.random()
        if what < 0.05:
            desc["size"] += r.choice([-1, 1, 1 << 40])
        elif what < 0.1:
            (blobs / hexd).write_bytes(data + b"!")  # content not matching its digest
            return desc
        elif what < 0.13:
            return desc  # missing blob
        (blobs / hexd).write_bytes(data)
        return desc

    layers = [put(*g.layer()) for _ in range(r.randint(0, 3))]
    config = put(g.json_bytes(g.config()), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": MANIFEST, "config": config, "layers": layers}
    desc = put(g.json_bytes(manifest), MANIFEST)
    for _ in range(r.choice([0, 0, 1, 2, 6])):  # nested indexes
        platform = {"os": "linux", "architecture": r.choice(["amd64", "arm64"])}
        index = {"schemaVersion": 2, "manifests": [{**desc, "platform": platform}]}
        desc = put(g.json_bytes(index), INDEX)
    desc["annotations"] = {"org.opencontainers.image.ref.name": "t"}
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_bytes(g.json_bytes({"schemaVersion": 2, "manifests": [desc]}))
    return f"{path}:t" if r.random() < 0.7 else str(path)


# ---- observing the host


def tree_state(top: Path) -> dict[str, tuple[int, int, int, bytes | str | None]]:
    out: dict[str, tuple[int, int, int, bytes | str | None]] = {}
    for path in [top, *sorted(top.rglob("*"))]:
        st = path.lstat()
        content: bytes | str | None = None
        if stat.S_ISLNK(st.st_mode):
            content = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            content = path.read_bytes()
        out[str(path)] = (st.st_mode, st.st_ino, st.st_mtime_ns, content)
    return out


def make_canary(top: Path) -> Path:
    canary = top / "canary"
    (canary / "dir").mkdir(parents=True)
    (canary / "secret").write_text("secret\n")
    (canary / "dir" / "inner").write_text("inner\n")
    (canary / "link").symlink_to("secret")
    os.chmod(canary / "secret", 0o600)
    os.chmod(canary / "dir", 0o700)
    return canary


def peak_rss_reset() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS


def status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(field)


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """A directory on tmpfs if there is one: a disk's rmdir alone would take most of the time."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else str(tmp_path)
    path = Path(tempfile.mkdtemp(prefix="karn-image-fuzz-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_image_inputs_fuzz(work: Path) -> None:
    tmp_path = work
    rng = random.Random(SEED)
    canary = make_canary(tmp_path)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    before = tree_state(canary)
    outcomes: dict[str, int] = {}
    store: Store | None = None
    in_process = CASES - CLI_CASES
    start = time.monotonic()
    peak_rss_reset()
    rss0 = status("VmRSS")
    for i in range(in_process):
        if i % 100 == 0:  # a fresh store now and then: a big index slows every import
            if store is not None:
                shutil.rmtree(store.home)
            store = Store(str(tmp_path / "home")).ensure()
        assert store is not None
        g = Gen(rng, canary)
        kind = rng.random()
        try:
            if kind < 0.7:
                what = "layer"
                root = Path(store.tmp_dir) / f"root{i}"
                root.mkdir()
                limit = ExtractLimit(LIMIT, "fuzz")
                try:
                    for j in range(rng.randint(1, 3)):
                        data, media = g.layer()
                        extract_layer(str(root), io.BytesIO(data), media, f"case {i}.{j}", limit)
                finally:
                    shutil.rmtree(root, ignore_errors=True)
            else:
                if kind < 0.85:
                    what = "docker-archive"
                    archive = inputs / f"{i}.tar"
                    docker_archive(g, archive)
                    image = import_docker_archive(store, str(archive))
                else:
                    what = "oci"
                    image = import_oci_layout(store, oci_layout(g, inputs / str(i)))
                os.environ["KARN_MAX_EXTRACT"] = str(LIMIT)
                try:
                    extract_image(store, image.layers, os.path.join(store.rootfs_dir, str(i)),
                                  f"case {i}")  # fmt: skip
                finally:
                    del os.environ["KARN_MAX_EXTRACT"]
            outcomes[what + " ok"] = outcomes.get(what + " ok", 0) + 1
        except KarnError as err:
            assert "\n" not in str(err), (i, str(err))
            outcomes["refused"] = outcomes.get("refused", 0) + 1
            if os.environ.get("KARN_IMAGE_FUZZ_VERBOSE") and not g.hostile:
                print(what, str(err)[:150])
        if i % 500 == 0:
            shutil.rmtree(inputs)
            inputs.mkdir()
    seconds = time.monotonic() - start
    grew = status("VmHWM") - rss0
    assert tree_state(canary) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary", "home", "inputs"]
    assert store is not None and list(Path(store.tmp_dir).iterdir()) == []
    assert grew < HWM_SLACK, f"peak RSS grew by {grew >> 20} MiB"
    cli = run_cli_sample(rng, canary, tmp_path)
    assert tree_state(canary) == before
    print(
        f"\nimage fuzz: {in_process} cases in-process ({Gen.layers} layer tars) in "
        f"{seconds:.1f} s, peak RSS +{grew >> 20} MiB; {CLI_CASES} through the CLI in "
        f"{cli:.1f} s; {outcomes}"
    )
    assert outcomes.get("refused", 0) > in_process // 10  # the inputs reach the checks...
    assert outcomes.get("layer ok", 0) > in_process // 10  # ...and some get through them


def run_cli_sample(rng: random.Random, canary: Path, tmp_path: Path) -> float:
    """Some docker archives through `karn build` and `karn run`: never a traceback, an
    error is one `karn:` line."""
    start = time.monotonic()
    home = tmp_path / "cli-home"
    env = {**os.environ, "KARN_HOME": str(home), "KARN_MAX_EXTRACT": str(LIMIT)}
    for i in range(CLI_CASES):
        archive = tmp_path / f"cli{i}.tar"
        docker_archive(Gen(rng, canary), archive)
        for args in (["build", "-t", f"fz:{i}", "--from", f"docker-archive:{archive}"],
                     ["run", f"fz:{i}"]):  # fmt: skip
            proc = subprocess.run([sys.executable, "-m", "karn", *args], env=env,
                                  capture_output=True, timeout=120)  # fmt: skip
            err = proc.stderr.decode(errors="replace")
            assert "Traceback" not in err, err
            if proc.returncode != 0:
                lines = [line for line in err.splitlines() if line.strip()]
                assert len(lines) == 1 and lines[0].startswith("karn: "), err
                break
    return time.monotonic() - start
