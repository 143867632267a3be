"""The local image store: an OCI image layout under $KARN_HOME, plus extracted roots.

    $KARN_HOME/                 default ${XDG_DATA_HOME:-~/.local/share}/karn
      oci/oci-layout            {"imageLayoutVersion": "1.0.0"}
      oci/index.json            one manifest descriptor per image; tags in the
                                org.opencontainers.image.ref.name annotation
      oci/blobs/sha256/HEX      manifests, configs, layers (content-addressed)
      rootfs/KEY/               a root filesystem extracted from an image's layers
      tmp/                      partial downloads and builds (renamed into place)
      auth.json                 credentials from `karn login` (docker config format)

Every blob is written to tmp/ and renamed into blobs/ only after its digest has been
checked, so the store never holds a partial or wrong blob. index.json is rewritten with
rename under an exclusive lock; `rm`/`prune` take gc.lock exclusively while writers
(build, pull, run) hold it shared, so a collection never deletes a blob in flight.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

from karn.errors import ImageError, KarnError, NotFoundError
from karn.image.home import karn_home
from karn.image.oci import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    REF_NAME,
    canonical_json,
    check_digest,
    parse_reference,
    sha256_digest,
)


class StoreError(KarnError):
    """The store is unusable (permissions, corruption); the message says what to do."""


class Image:
    """One image in the store: its manifest descriptor, manifest and config.

    (A plain class: dataclasses cost ~15 ms of `karn run IMAGE` start-up.)
    """

    __slots__ = ("digest", "size", "names", "manifest", "config", "created", "layers")

    def __init__(self, digest: str, size: int, names: list[str], manifest: dict[str, Any],
                 config: dict[str, Any], created: str | None = None,
                 layers: list[dict[str, Any]] | None = None) -> None:
        self.digest = digest  # of the manifest
        self.size = size
        self.names = names
        self.manifest = manifest
        self.config = config
        self.created = created
        self.layers = [] if layers is None else layers

    @property
    def id(self) -> str:
        """The IMAGE ID: the config's digest, shortened (as podman and docker show it)."""
        return self.config_digest.split(":", 1)[1][:12]

    @property
    def config_digest(self) -> str:
        return str(self.manifest["config"]["digest"])

    @property
    def total_size(self) -> int:
        return self.size + self.manifest["config"]["size"] + sum(x["size"] for x in self.layers)

    @property
    def rootfs_key(self) -> str:
        """Names the extracted root: the same layers give the same root, whatever the config."""
        chain = "\n".join(x["digest"] for x in self.layers)
        return hashlib.sha256(chain.encode()).hexdigest()


class BlobWriter:
    """Stream a blob into tmp/, hashing as it goes; `commit()` checks and renames it."""

    def __init__(self, store: Store, expected: str | None = None, size: int | None = None):
        self.store = store
        self.expected = check_digest(expected) if expected else None
        self.expected_size = size
        import tempfile  # lazily: `karn run IMAGE` reads the store but never writes blobs

        fd, self.tmp_path = tempfile.mkstemp(prefix="blob-", dir=store.tmp_dir)
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()
        self.size = 0
        self.digest: str | None = None

    def write(self, data: bytes) -> int:
        if self.expected_size is not None and self.size + len(data) > self.expected_size:
            self.abort()  # stop a blob that runs past its descriptor's size at once
            raise ImageError(f"blob larger than its descriptor's size ({self.expected_size} bytes)")
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)

    def commit(self, what: str = "blob") -> str:
        self.file.close()
        digest = "sha256:" + self.hash.hexdigest()
        if self.expected and digest != self.expected:
            self.abort()
            raise ImageError(f"{what}: digest mismatch (expected {self.expected}, got {digest})")
        if self.expected_size is not None and self.size != self.expected_size:
            self.abort()
            raise ImageError(
                f"{what}: size mismatch (expected {self.expected_size} bytes, got {self.size})"
            )
        os.chmod(self.tmp_path, 0o444)
        os.replace(self.tmp_path, self.store.blob_path(digest))
        self.digest = digest
        return digest

    def abort(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.digest is None:
            self.abort()


class Store:
    def __init__(self, home: str | None = None) -> None:
        self.home = home or karn_home()
        self.layout = os.path.join(self.home, "oci")
        self.blobs = os.path.join(self.layout, "blobs", "sha256")
        self.index_path = os.path.join(self.layout, "index.json")
        self.rootfs_dir = os.path.join(self.home, "rootfs")
        self.tmp_dir = os.path.join(self.home, "tmp")
        self.auth_path = os.path.join(self.home, "auth.json")

    # ---- set-up and locks
    def ensure(self) -> Store:
        try:
            for d in (self.blobs, self.rootfs_dir, self.tmp_dir):
                os.makedirs(d, exist_ok=True)
            layout_file = os.path.join(self.layout, "oci-layout")
            if not os.path.exists(layout_file):
                self._write_atomic(layout_file, canonical_json({"imageLayoutVersion": "1.0.0"}))
            if not os.path.exists(self.index_path):
                self._write_index([])
        except OSError as err:
            raise StoreError(f"cannot use the image store {self.home}: {err.strerror}") from None
        return self

    @contextlib.contextmanager
    def _lock(self, name: str, mode: int, wait_note: bool = False) -> Iterator[None]:
        os.makedirs(self.home, exist_ok=True)
        fd = os.open(os.path.join(self.home, name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(fd, mode)
            except BlockingIOError:  # only with LOCK_NB: say why we wait, then wait
                if wait_note:
                    sys.stderr.write("karn: waiting for running builds, pulls and runs to end\n")
                fcntl.flock(fd, mode & ~fcntl.LOCK_NB)
            yield
        finally:
            os.close(fd)

    def writing(self) -> contextlib.AbstractContextManager[None]:
        """Held while adding blobs: a concurrent `prune` waits instead of deleting them."""
        return self._lock("gc.lock", fcntl.LOCK_SH)

    @contextlib.contextmanager
    def collecting(self) -> Iterator[None]:
        with self._lock("gc.lock", fcntl.LOCK_EX | fcntl.LOCK_NB, wait_note=True):
            yield

    def hold_for_run(self) -> int:
        """A shared gc lock kept for the life of a run, so prune spares its root."""
        fd = os.open(os.path.join(self.home, "gc.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_SH)
        return fd

    # ---- blobs
    def blob_path(self, digest: str) -> str:
        return os.path.join(self.blobs, check_digest(digest).split(":", 1)[1])

    def has_blob(self, digest: str) -> bool:
        return os.path.isfile(self.blob_path(digest))

    def blob_writer(self, expected: str | None = None, size: int | None = None) -> BlobWriter:
        return BlobWriter(self, expected, size)

    def put_bytes(self, data: bytes) -> str:
        digest = sha256_digest(data)
        if not self.has_blob(digest):
            with self.blob_writer(digest) as w:
                w.write(data)
                w.commit()
        return digest

    def put_file(
        self, path: str, expected: str | None = None, size: int | None = None
    ) -> tuple[str, int]:
        """Copy a file into the store (verified against `expected` and `size` if given)."""
        with open(path, "rb") as src, self.blob_writer(expected, size) as w:
            while chunk := src.read(1 << 20):
                w.write(chunk)
            return w.commit(os.path.basename(path)), w.size

    def read_blob(self, digest: str, verify: bool = True) -> bytes:
        try:
            with open(self.blob_path(digest), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is missing from the store") from None
        if verify and sha256_digest(data) != digest:
            raise ImageError(f"blob {digest} in the store is corrupted (run `karn rm` and pull)")
        return data

    def read_json(self, digest: str) -> dict[str, Any]:
        try:
            doc = json.loads(self.read_blob(digest))
        except (ValueError, UnicodeDecodeError):
            raise ImageError(f"blob {digest} is not valid JSON") from None
        if not isinstance(doc, dict):
            raise ImageError(f"blob {digest} is not a JSON object")
        return doc

    # ---- index.json
    def _read_index(self) -> list[dict[str, Any]]:
        try:
            with open(self.index_path, "rb") as f:
                doc = json.load(f)
        except FileNotFoundError:
            return []
        except ValueError:
            raise StoreError(f"{self.index_path} is not valid JSON") from None
        return list(doc.get("manifests", []))

    def _write_index(self, manifests: list[dict[str, Any]]) -> None:
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        self._write_atomic(self.index_path, json.dumps(doc, indent=2, sort_keys=True).encode())

    def _write_atomic(self, path: str, data: bytes) -> None:
        import tempfile

        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def editing_index(self) -> Iterator[list[dict[str, Any]]]:
        with self._lock("index.lock", fcntl.LOCK_EX):
            manifests = self._read_index()
            yield manifests
            self._write_index(manifests)

    # ---- images
    def add_image(
        self, manifest_digest: str, size: int, name: str | None, media_type: str | None = None
    ) -> None:
        """Record a manifest (already in blobs/) in index.json, moving the tag `name` to it."""
        with self.editing_index() as manifests:
            if name:
                for desc in manifests:
                    if desc.get("annotations", {}).get(REF_NAME) == name:
                        desc["annotations"].pop(REF_NAME)
                        if not desc["annotations"]:
                            desc.pop("annotations")
            entry: dict[str, Any] = {
                "mediaType": media_type or OCI_MANIFEST,
                "digest": manifest_digest,
                "size": size,
            }
            if name:
                entry["annotations"] = {REF_NAME: name}
            # an untagged copy of the same manifest is replaced, not duplicated
            manifests[:] = [
                d
                for d in manifests
                if not (d["digest"] == manifest_digest and REF_NAME not in d.get("annotations", {}))
            ]
            if name or not any(d["digest"] == manifest_digest for d in manifests):
                manifests.append(entry)
            manifests.sort(key=lambda d: (d.get("annotations", {}).get(REF_NAME, ""), d["digest"]))

    def images(self) -> list[Image]:
        by_digest: dict[str, Image] = {}
        for desc in self._read_index():
            digest = desc["digest"]
            name = desc.get("annotations", {}).get(REF_NAME)
            if digest not in by_digest:
                by_digest[digest] = self._load(digest, desc.get("size", 0))
            if name:
                by_digest[digest].names.append(name)
        return list(by_digest.values())

    def _load(self, digest: str, size: int) -> Image:
        manifest = self.read_json(digest)
        if manifest.get("mediaType", OCI_MANIFEST) in INDEX_TYPES:
            raise ImageError(f"{digest}: a multi-platform index, not an image manifest")
        if manifest.get("mediaType", OCI_MANIFEST) not in MANIFEST_TYPES:
            raise ImageError(f"{digest}: unsupported manifest type {manifest.get('mediaType')}")
        try:
            config = self.read_json(manifest["config"]["digest"])
            layers = list(manifest["layers"])
        except (KeyError, TypeError):
            raise ImageError(f"manifest {digest} is malformed") from None
        return Image(digest, size, [], manifest, config, config.get("created"), layers)

    def find(self, text: str) -> Image | None:
        """An image by name[:tag], full digest, or unique ID prefix; None if absent."""
        images = self.images()
        hexpart = text.removeprefix("sha256:")
        if len(hexpart) >= 4 and all(c in "0123456789abcdef" for c in hexpart):
            hits = [i for i in images if any(d.split(":", 1)[1].startswith(hexpart)
                                             for d in (i.config_digest, i.digest))]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise ImageError(f"image ID {text} is ambiguous")
        try:
            ref = parse_reference(text)
        except KarnError:
            return None
        if ref.digest:
            hits = [i for i in images if i.digest == ref.digest]
            return hits[0] if hits else None
        name = str(ref.with_tag())
        for image in images:
            if name in image.names:
                return image
        return None

    def get(self, text: str) -> Image:
        image = self.find(text)
        if image is None:
            raise NotFoundError(f"image {text} not found in the store (see `karn images`)")
        return image

    def untag(self, text: str) -> tuple[Image, bool]:
        """Remove one name; an image left without names leaves the index (returns True)."""
        image = self.get(text)
        name = text
        with contextlib.suppress(KarnError):
            name = str(parse_reference(text).with_tag())
        with self.editing_index() as manifests:
            if name in image.names and len(image.names) > 1:
                manifests[:] = [
                    d for d in manifests if d.get("annotations", {}).get(REF_NAME) != name
                ]
                return image, False
            manifests[:] = [d for d in manifests if d["digest"] != image.digest]
        return image, True

    # ---- garbage collection
    def collect_garbage(self, dangling: bool = False) -> tuple[int, int]:
        """Delete blobs and roots no image refers to; returns (files, bytes) freed.

        With dangling=True, untagged images are dropped from the index first.
        """
        import shutil

        freed_files = freed_bytes = 0
        with self.collecting():
            if dangling:
                with self.editing_index() as manifests:
                    manifests[:] = [d for d in manifests if REF_NAME in d.get("annotations", {})]
            keep: set[str] = set()
            keep_roots: set[str] = set()
            for desc in self._read_index():
                keep.add(desc["digest"])
                try:
                    image = self._load(desc["digest"], desc.get("size", 0))
                except KarnError:
                    continue  # keep what we can read; a broken image is still removable
                keep.add(image.manifest["config"]["digest"])
                keep.update(x["digest"] for x in image.layers)
                keep_roots.add(image.rootfs_key)
            for name in os.listdir(self.blobs):
                if "sha256:" + name not in keep:
                    path = os.path.join(self.blobs, name)
                    freed_bytes += os.lstat(path).st_size
                    os.unlink(path)
                    freed_files += 1
            for name in os.listdir(self.rootfs_dir):
                if name not in keep_roots:
                    shutil.rmtree(os.path.join(self.rootfs_dir, name), ignore_errors=True)
                    freed_files += 1
            for name in os.listdir(self.tmp_dir):  # leftovers of killed builds and pulls
                path = os.path.join(self.tmp_dir, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        return freed_files, freed_bytes


def open_store() -> Store:
    return Store().ensure()
