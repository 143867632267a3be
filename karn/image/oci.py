"""OCI image format: media types, canonical JSON, digests and image references.

karn writes plain OCI images (image-spec v1.0/1.1): an image manifest, an image config
and gzip-compressed tar layers, so any OCI tool (skopeo, umoci, registries) copies them
untouched. karn's own settings (memory, cpus, policy) travel as config labels under
`org.karn.`; see docs/images.md.
"""

from __future__ import annotations

import hashlib
import json
import re

from karn.errors import ImageError, UsageError
from karn.hints import Any, NamedTuple

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"

MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
GZIP_LAYERS = (OCI_LAYER_GZIP, DOCKER_LAYER_GZIP)
PLAIN_LAYERS = (OCI_LAYER, DOCKER_LAYER)
LAYER_TYPES = GZIP_LAYERS + PLAIN_LAYERS
REF_NAME = "org.opencontainers.image.ref.name"  # tag annotation in an index.json
LABEL_PREFIX = "org.karn."

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# distribution's reference grammar, simplified: lowercase path components, tag <= 128.
_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def canonical_json(obj: Any) -> bytes:
    """Stable bytes for a JSON document: sorted keys, no spaces (same input, same digest)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise ImageError(f"unsupported or malformed digest {digest!r} (karn uses sha256)")
    return digest


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data), **extra}


class Reference(NamedTuple):
    """An image reference: [REGISTRY/]REPOSITORY[:TAG][@DIGEST].

    A name without a registry part stays local (`hello:1`); with one
    (`127.0.0.1:5000/hello:1`, `ghcr.io/x/y`) it also says where push and pull go.
    """

    registry: str | None
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def with_tag(self) -> Reference:
        """The tagged name stored locally (latest when neither tag nor digest is given)."""
        if self.tag or self.digest:
            return self
        return Reference(self.registry, self.repository, DEFAULT_TAG)

    @property
    def remote_registry(self) -> str:
        return self.registry or DEFAULT_REGISTRY

    @property
    def remote_repository(self) -> str:
        if self.registry is None and "/" not in self.repository:
            return f"library/{self.repository}"  # Docker Hub's official images
        return self.repository


def looks_like_registry(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def parse_reference(text: str) -> Reference:
    """Parse an image reference; UsageError naming the problem if it is malformed."""
    if not text or len(text) > 255 or any(c.isspace() for c in text):
        raise UsageError(f"invalid image reference {text!r}")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise UsageError(f"invalid image reference {text!r}: bad digest")
    registry = None
    first, sep, remainder = rest.partition("/")
    if sep and looks_like_registry(first):
        registry, rest = first, remainder
    tag = None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise UsageError(f"invalid image reference {text!r}: bad tag {tag!r}")
    if not rest or not all(_COMPONENT_RE.match(c) for c in rest.split("/")):
        raise UsageError(
            f"invalid image reference {text!r} "
            "(names are lowercase letters, digits and . _ - separated by /)"
        )
    return Reference(registry, rest, tag, digest)


# ---- shapes of the documents karn reads (the fields it uses; others are passed through)

MAX_JSON = 4 << 20  # a manifest, index or config larger than this is refused (as registries do)
MAX_INDEX_DEPTH = 4  # an index may name an index; deeper nesting (or a loop) is refused

_STRINGS = {"type": "array", "items": {"type": "string"}}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_DESCRIPTOR = {
    "type": "object",
    "required": ["digest", "size"],
    "properties": {
        "mediaType": {"type": "string"},
        "digest": {"type": "string"},
        "size": {"type": "integer", "minimum": 0},
        "annotations": _STRING_MAP,
        "platform": {
            "type": "object",
            "properties": {"os": {"type": "string"}, "architecture": {"type": "string"}},
        },
    },
}
INDEX_SCHEMA = {
    "type": "object",
    "required": ["manifests"],
    "properties": {"mediaType": {"type": "string"}, "manifests": {"type": "array",
                                                                  "items": _DESCRIPTOR}},
}  # fmt: skip
MANIFEST_SCHEMA = {
    "type": "object",
    "required": ["config", "layers"],
    "properties": {
        "mediaType": {"type": "string"},
        "config": _DESCRIPTOR,
        "layers": {"type": "array", "items": _DESCRIPTOR},
    },
}
CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "created": {"type": "string"},
        "architecture": {"type": "string"},
        "os": {"type": "string"},
        "config": {
            "type": ["object", "null"],
            "properties": {
                "Entrypoint": {"type": ["array", "null"], "items": {"type": "string"}},
                "Cmd": {"type": ["array", "null"], "items": {"type": "string"}},
                "Env": {"type": ["array", "null"], "items": {"type": "string"}},
                "WorkingDir": {"type": "string"},
                "Labels": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
                "ExposedPorts": {"type": ["object", "null"]},
                "Volumes": {"type": ["object", "null"]},
            },
        },
        "rootfs": {"type": "object", "properties": {"type": {"type": "string"},
                                                    "diff_ids": _STRINGS}},
        "history": {"type": "array", "items": {"type": "object"}},
    },
}  # fmt: skip
DOCKER_ARCHIVE_SCHEMA = {  # manifest.json of `docker save`
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "required": ["Config", "Layers"],
        "properties": {"Config": {"type": "string"}, "Layers": _STRINGS,
                       "RepoTags": {"type": ["array", "null"], "items": {"type": "string"}}},
    },
}  # fmt: skip


def load_json(data: bytes, schema: dict[str, Any], what: str) -> Any:
    """A JSON document checked against the shape karn expects; ImageError naming the field."""
    if len(data) > MAX_JSON:
        raise ImageError(f"{what}: larger than {MAX_JSON >> 20} MiB")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ImageError(f"{what}: not valid JSON") from None
    check_shape(doc, schema, what)
    return doc


def check_shape(doc: Any, schema: dict[str, Any], what: str) -> None:
    import jsonschema  # only when importing images: `karn run IMAGE` reads checked documents

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema)
                                             .iter_errors(doc))  # fmt: skip
    if error is not None:
        where = error.json_path.removeprefix("$").lstrip(".") or "the document"
        raise ImageError(f"{what}: {where}: {_short(error)}")


def _short(error: Any) -> str:
    """jsonschema's message without the offending value (it may be huge)."""
    if error.validator == "type":
        want = error.validator_value
        return "must be " + (" or ".join(want) if isinstance(want, list) else want)
    if error.validator == "required":
        return error.message.split(" is a required")[0] + " is required"
    if error.validator == "minItems":
        return "must not be empty"
    return error.message[:200]


def pick_platform(index: dict[str, Any], what: str) -> dict[str, Any]:
    """linux/amd64 from a multi-platform index (checked against INDEX_SCHEMA), or its only entry."""
    entries = index["manifests"]
    for m in entries:
        p = m.get("platform") or {}
        if p.get("os") == "linux" and p.get("architecture") == "amd64":
            return m
    if len(entries) == 1 and not entries[0].get("platform"):
        return entries[0]
    raise ImageError(f"{what}: no linux/amd64 image in the index")
