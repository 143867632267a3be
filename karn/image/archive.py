"""`karn save` and `karn load`: images as an OCI image layout in a tar archive (what
`podman save --format oci-archive` writes and skopeo's `oci-archive:` transport reads).

The archive holds oci-layout, index.json (one descriptor per name, the name in the
org.opencontainers.image.ref.name annotation) and blobs/sha256/*. Loading extracts it
into the store's tmp/ with tarfile's "data" filter (no links out, no devices, no
absolute paths) and imports each image as `build --from oci:DIR` does: every blob is
checked against its digest.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from typing import IO, Any

from karn.errors import ImageError, UsageError
from karn.image.build import import_layout_image, layout_index
from karn.image.oci import OCI_MANIFEST, REF_NAME, canonical_json, parse_reference
from karn.image.store import Image, Store


def save_archive(store: Store, images: list[tuple[str | None, Image]], out: IO[bytes]) -> None:
    """Write the images (each with the name it was asked by, or None) as an OCI archive."""
    index: list[dict[str, Any]] = []
    blobs: dict[str, int] = {}
    for name, image in images:
        entry: dict[str, Any] = {"mediaType": image.manifest.get("mediaType") or OCI_MANIFEST,
                                 "digest": image.digest, "size": image.size}
        if name:
            entry["annotations"] = {REF_NAME: name}
        index.append(entry)
        blobs[image.digest] = image.size
        blobs[image.config_digest] = image.manifest["config"]["size"]
        for layer in image.layers:
            blobs[layer["digest"]] = layer["size"]
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"}))
        _add_bytes(tar, "index.json", canonical_json(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": index}))
        for directory in ("blobs", "blobs/sha256"):
            tar.addfile(_info(directory, 0, tarfile.DIRTYPE))
        for digest, size in blobs.items():
            path = store.blob_path(digest)
            if not os.path.isfile(path):
                raise ImageError(f"blob {digest} is missing from the store")
            with open(path, "rb") as f:
                tar.addfile(_info("blobs/sha256/" + digest.split(":", 1)[1], size), f)


def _info(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    """A member with fixed owner, mode and time: the same images give the same archive."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


def load_archive(store: Store, source: IO[bytes], what: str) -> list[str]:
    """Import every image of an OCI archive; returns their names (or digests if unnamed)."""
    store.ensure()
    loaded = []
    with tempfile.TemporaryDirectory(dir=store.tmp_dir, prefix="load-") as layout:
        try:
            with tarfile.open(fileobj=source, mode="r|*") as tar:
                tar.extractall(layout, filter="data")
        except (tarfile.TarError, EOFError, OSError, ValueError) as err:
            raise ImageError(f"{what}: not an OCI archive ({err})") from None
        if not os.path.isfile(os.path.join(layout, "oci-layout")):
            raise ImageError(f"{what}: not an OCI archive (no oci-layout file)")
        for desc in layout_index(layout, what):
            image = import_layout_image(store, layout, desc, what)
            name = _name(desc)
            if name is None:
                loaded.append(image.digest)
                continue
            store.add_image(image.digest, image.size, name, image.manifest.get("mediaType"))
            loaded.append(name)
    return loaded


def _name(desc: dict[str, Any]) -> str | None:
    """The descriptor's ref.name as a store name (NAME:TAG), if it is a valid reference."""
    text = (desc.get("annotations") or {}).get(REF_NAME)
    if not isinstance(text, str) or not text:
        return None
    try:
        ref = parse_reference(text)
    except UsageError:
        return None
    return None if ref.digest else str(ref.with_tag())
