"""`karn build`: a BuildSpec (from flags or a Karnfile) -> an OCI image in the store.

Sources: a host program (collected with its interpreter and libraries, as `karn run`
does), a host directory as the root, or a base image (`from`): an OCI layout, a
`docker save` archive, a registry reference, or an image already in the store. Extra
files go into one more layer on top. The config is a standard OCI image config.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import stat
import tarfile
import time
from typing import IO, Any

from karn.errors import ImageError, NotFoundError, UsageError
from karn.image.karnfile import BuildSpec
from karn.image.layer import Entry, LayerBlob, guess_layer_type, tree_entries, write_layer
from karn.image.oci import (
    CONFIG_SCHEMA,
    DOCKER_ARCHIVE_SCHEMA,
    INDEX_SCHEMA,
    INDEX_TYPES,
    LABEL_PREFIX,
    MANIFEST_SCHEMA,
    MANIFEST_TYPES,
    MAX_INDEX_DEPTH,
    MAX_JSON,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    REF_NAME,
    canonical_json,
    check_digest,
    check_shape,
    load_json,
    parse_reference,
    pick_platform,
    sha256_digest,
)
from karn.image.paths import MAX_LINK_HOPS
from karn.image.progress import note
from karn.image.store import Image, Store


def build_image(store: Store, spec: BuildSpec) -> Image:
    spec.check()
    name = str(parse_reference(spec.name).with_tag()) if spec.name else None
    with store.writing():
        base: Image | None = resolve_base(store, spec.base) if spec.base else None
        entries: list[Entry] = []
        entrypoint = spec.entrypoint
        if spec.program:
            program_entries, guest_entry = program_to_entries(spec.program, spec.collect)
            files = sum(1 for e in program_entries if e.kind == "file")
            note(f"collected {spec.program}: {files} files with its interpreter and libraries")
            entries += program_entries
            entrypoint = entrypoint or [guest_entry]
        elif spec.root:
            if not os.path.isdir(spec.root):
                raise ImageError(f"root {spec.root}: not a directory")
            entries += tree_entries(spec.root)
            note(f"read {spec.root}: {sum(1 for e in entries if e.kind == 'file')} files")
        for f in spec.files:
            entries += file_entries(f.src, f.dst, f.mode)
        if spec.files:
            entries += dependency_entries(entries)
        if base is not None and not entries and not _overrides(spec):
            # A plain import: keep the manifest (and so its digest) as it is.
            store.add_image(base.digest, base.size, name, base.manifest.get("mediaType"))
            return store.get(base.digest)
        layer = write_layer(store, entries) if entries else None
        config = make_config(spec, base.config if base else None, entrypoint, layer)
        layers = list(base.layers) if base else []
        if layer:
            layers.append({"mediaType": OCI_LAYER_GZIP, "digest": layer.digest, "size": layer.size})
        if not layers:
            raise UsageError("nothing to build: the image would have no files")
        digest = _store_manifest(store, canonical_json(config), layers, name)
    return store.get(digest)


def _store_manifest(store: Store, config_bytes: bytes, layers: list[dict[str, Any]],
                    name: str | None) -> str:
    """Store the config and an OCI manifest over it and the layers; returns its digest."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": store.put_bytes(config_bytes),
            "size": len(config_bytes),
        },
        "layers": layers,
    }
    data = canonical_json(manifest)
    digest = store.put_bytes(data)
    store.add_image(digest, len(data), name)
    return digest


def _overrides(spec: BuildSpec) -> bool:
    return any(
        (spec.entrypoint, spec.cmd is not None, spec.env, spec.workdir, spec.memory, spec.cpus,
         spec.ports, spec.volumes, spec.labels, spec.policy)
    )  # fmt: skip


SHARED_DIRS = ("/tmp", "/dev/shm")  # sticky and writable by every user on a host


def program_to_entries(program: str, collect: list[str]) -> tuple[list[Entry], str]:
    """The program, its interpreter and libraries at the paths the guest looks for them
    (collect: host paths its ELF names may take from outside the standard places)."""
    from karn.image.collect import check_placement, collect_program

    manifest = collect_program(program, collect)
    check_placement(manifest)
    entries = [
        Entry(guest, "file", stat.S_IMODE(os.stat(host).st_mode), source=host)
        for guest, host in manifest.files.items()
    ]
    entries += [Entry(g, "symlink", 0o777, target=t) for g, t in manifest.symlinks.items()]
    # A program from the host's /tmp keeps its path (a run copies the image's /tmp into
    # the guest's tmpfs); /tmp itself stays sticky and world-writable in the image, as
    # other runtimes expect, rather than an implied parent's 0755.
    for path in SHARED_DIRS:
        if any(e.path.startswith(path + "/") for e in entries):
            entries.append(Entry(path, "dir", 0o1777))
    return entries, manifest.entry


def dependency_entries(entries: list[Entry]) -> list[Entry]:
    """Libraries that added ELF files (dlopened modules) need and the image lacks."""
    from karn.image.collect import collect_dependencies

    have = {e.path for e in entries}
    deps = collect_dependencies(e.source for e in entries if e.kind == "file" and e.source)
    out = [
        Entry(guest, "file", stat.S_IMODE(os.stat(host).st_mode), source=host)
        for guest, host in deps.files.items()
        if guest not in have
    ]
    out += [
        Entry(g, "symlink", 0o777, target=t) for g, t in deps.symlinks.items() if g not in have
    ]
    return out


def file_entries(src: str, dst: str, mode: int | None) -> list[Entry]:
    try:
        st = os.stat(src)
    except OSError as err:
        raise ImageError(f"file {src}: {err.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        return [Entry(dst, "dir", mode or stat.S_IMODE(st.st_mode)), *tree_entries(src, dst)]
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"file {src}: not a regular file or directory")
    return [Entry(dst, "file", stat.S_IMODE(st.st_mode) if mode is None else mode, source=src)]


def created_timestamp() -> str:
    """The config's `created`: now, or $SOURCE_DATE_EPOCH for a reproducible digest."""
    from karn.image.layer import source_date_epoch

    pinned = "SOURCE_DATE_EPOCH" in os.environ
    when = datetime.datetime.fromtimestamp(source_date_epoch() if pinned else int(time.time()),
                                           datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_config(
    spec: BuildSpec,
    base: dict[str, Any] | None,
    entrypoint: list[str] | None,
    layer: LayerBlob | None,
) -> dict[str, Any]:
    config = copy.deepcopy(base) if base else {}
    created = created_timestamp()
    config["created"] = created
    config["architecture"] = "amd64"
    config["os"] = "linux"
    run = config.setdefault("config", {}) or {}
    config["config"] = run
    if spec.entrypoint is not None or (entrypoint and not base):
        run["Entrypoint"] = entrypoint
        if spec.cmd is None:
            run.pop("Cmd", None)  # as in a Dockerfile: a new ENTRYPOINT resets CMD
    if spec.cmd is not None:
        run["Cmd"] = spec.cmd
    if spec.env:
        env = dict(e.split("=", 1) for e in run.get("Env") or [] if "=" in e)
        env.update(spec.env)
        run["Env"] = [f"{k}={v}" for k, v in env.items()]
    if spec.workdir:
        run["WorkingDir"] = spec.workdir
    for port in spec.ports:
        run.setdefault("ExposedPorts", {})[port if "/" in port else f"{port}/tcp"] = {}
    for vol in spec.volumes:
        run.setdefault("Volumes", {})[vol] = {}
    labels = dict(run.get("Labels") or {})
    labels.update(spec.labels)
    if spec.memory:
        labels[LABEL_PREFIX + "memory"] = str(spec.memory)
    if spec.cpus:
        labels[LABEL_PREFIX + "cpus"] = str(spec.cpus)
    if spec.policy:
        labels[LABEL_PREFIX + "policy"] = json.dumps(spec.policy, sort_keys=True)
    if labels:
        run["Labels"] = labels
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs.setdefault("type", "layers")
    diff_ids = rootfs.setdefault("diff_ids", [])
    if layer:
        diff_ids.append(layer.diff_id)
        if base and base.get("history"):
            config["history"].append({"created": created, "created_by": "karn build"})
    return config


# ---- base images


def resolve_base(store: Store, source: str) -> Image:
    """The image named by a `from` source, brought into the store."""
    if source.startswith("oci:"):
        return import_oci_layout(store, source[4:])
    if source.startswith("docker-archive:"):
        return import_docker_archive(store, source[len("docker-archive:") :])
    if source.startswith("docker://"):
        from karn.image.registry import pull

        return pull(store, source[len("docker://") :])
    found = store.find(source)
    if found is not None:  # imported before configs were checked, perhaps: check it now
        check_shape(found.config, CONFIG_SCHEMA, f"{source}: config")
        return found
    ref = parse_reference(source)
    if ref.registry:
        from karn.image.registry import pull

        return pull(store, source)
    raise NotFoundError(f"base image {source} not found in the store (pull it, or use oci:DIR)")


def import_oci_layout(store: Store, spec: str) -> Image:
    """Copy one image of an OCI layout directory (`DIR[:REF]`) into the store."""
    path, _, ref = spec.partition(":")
    what = f"oci:{spec}"
    manifests = layout_index(path, what)
    if ref:
        chosen = [
            m for m in manifests
            if (m.get("annotations") or {}).get(REF_NAME) in (ref, ref.rsplit(":", 1)[-1])
        ]  # fmt: skip
        if not chosen:
            raise ImageError(f"{what}: no image tagged {ref!r} in the layout")
    else:
        chosen = manifests
        if len(chosen) != 1:
            raise ImageError(f"{what}: the layout holds {len(chosen)} images; name one (DIR:REF)")
    return import_layout_image(store, path, chosen[0], what)


def layout_index(path: str, what: str) -> list[dict[str, Any]]:
    """The descriptors of an OCI layout directory's index.json."""
    try:
        with open(os.path.join(path, "index.json"), "rb") as f:
            index_bytes = f.read(MAX_JSON + 1)
    except FileNotFoundError:
        raise ImageError(f"{what}: not an OCI layout (no index.json)") from None
    except OSError as err:
        raise ImageError(f"{what}: {err.filename}: {err.strerror}") from None
    return list(load_json(index_bytes, INDEX_SCHEMA, f"{what}: index.json")["manifests"])


def import_layout_image(store: Store, path: str, desc: dict[str, Any], what: str) -> Image:
    """The image an OCI layout's descriptor names, copied into the store (untagged).

    Every blob is checked against its descriptor's digest and size as it is read, and
    indexes may nest only MAX_INDEX_DEPTH deep, so a layout cannot loop or lie.
    """

    def blob(desc: dict[str, Any]) -> str:
        return os.path.join(path, "blobs", *check_digest(desc["digest"]).split(":", 1))

    def read(desc: dict[str, Any], kind: str) -> bytes:
        if desc["size"] > MAX_JSON:
            raise ImageError(f"{what}: {kind} {desc['digest']} is larger than {MAX_JSON} bytes")
        with open(blob(desc), "rb") as f:
            data = f.read(MAX_JSON + 1)
        if len(data) != desc["size"] or sha256_digest(data) != desc["digest"]:
            raise ImageError(f"{what}: {kind} {desc['digest']} does not match its digest or size")
        return data

    try:
        depth = 0
        while desc.get("mediaType") in INDEX_TYPES:
            depth += 1
            if depth > MAX_INDEX_DEPTH:
                raise ImageError(f"{what}: indexes nested more than {MAX_INDEX_DEPTH} deep")
            index = load_json(read(desc, "index"), INDEX_SCHEMA, f"{what}: index")
            desc = pick_platform(index, what)
        manifest_bytes = read(desc, "manifest")
        manifest = load_json(manifest_bytes, MANIFEST_SCHEMA, f"{what}: manifest")
        media_type = manifest.get("mediaType", desc.get("mediaType"))
        if media_type not in MANIFEST_TYPES:
            raise ImageError(f"{what}: unsupported manifest type {media_type}")
        config_bytes = read(manifest["config"], "config")
        load_json(config_bytes, CONFIG_SCHEMA, f"{what}: config")
        store.put_bytes(config_bytes)
        for d in manifest["layers"]:
            if not store.has_blob(d["digest"]):
                store.put_file(blob(d), d["digest"], d["size"])
        digest = store.put_bytes(manifest_bytes)
    except FileNotFoundError as err:
        raise ImageError(f"{what}: missing blob {err.filename}") from None
    except OSError as err:
        raise ImageError(f"{what}: {err.filename}: {err.strerror}") from None
    store.add_image(digest, len(manifest_bytes), None, manifest.get("mediaType"))
    return store.get(digest)


def _archive_member(tar: tarfile.TarFile, name: str, what: str) -> tarfile.TarInfo:
    """A regular file of a tar archive by name, links within the archive followed."""
    for _ in range(MAX_LINK_HOPS):
        try:
            info = tar.getmember(os.path.normpath(name))
        except KeyError:
            raise ImageError(f"{what}: {name} is missing from the archive") from None
        if info.issym():
            name = os.path.join(os.path.dirname(info.name), info.linkname)
        elif info.islnk():
            name = info.linkname
        elif info.isreg() and info.sparse is None:
            return info
        else:
            raise ImageError(f"{what}: {name} is not a regular file in the archive")
    raise ImageError(f"{what}: {name}: too many levels of links in the archive")


def import_docker_archive(store: Store, path: str) -> Image:
    """A `docker save` archive (manifest.json + config + layer tars) -> an OCI image."""
    what = f"docker-archive:{path}"
    try:
        tar = tarfile.open(path, "r:")
    except FileNotFoundError:
        raise ImageError(f"{what}: no such file") from None
    except (tarfile.TarError, OSError, ValueError, EOFError) as err:
        raise ImageError(f"{what}: not a tar archive ({err})") from None

    def member(name: str) -> IO[bytes]:
        f = tar.extractfile(_archive_member(tar, name, what))
        assert f is not None  # a regular file
        return f

    try:
        with tar:
            entries = load_json(member("manifest.json").read(MAX_JSON + 1), DOCKER_ARCHIVE_SCHEMA,
                                f"{what}: manifest.json")  # fmt: skip
            entry = entries[0]
            config_bytes = member(entry["Config"]).read(MAX_JSON + 1)
            load_json(config_bytes, CONFIG_SCHEMA, f"{what}: {entry['Config']}")
            layers = []
            for name in entry["Layers"]:
                src = member(name)
                with store.blob_writer() as w:
                    while chunk := src.read(1 << 20):
                        w.write(chunk)
                    digest = w.commit(name)
                kind = guess_layer_type(store.blob_path(digest))
                layers.append({"mediaType": kind, "digest": digest, "size": w.size})
    except (tarfile.TarError, EOFError, ValueError) as err:
        raise ImageError(f"{what}: damaged archive ({err})") from None
    return store.get(_store_manifest(store, config_bytes, layers, None))
