"""Which image `karn run NAME` means, and that image found (or pulled) and held for the run.

Only os/json are imported at module level: is_image() runs on every `karn run PROGRAM`,
and the store and registry modules load only when NAME is an image.
"""

from __future__ import annotations

import json
import os

from karn.errors import UsageError
from karn.hints import TYPE_CHECKING

if TYPE_CHECKING:
    from karn.image.launch import ImageRun

_run_lock: int | None = None  # held until the process ends: `karn prune` waits for it


def _local_names() -> list[str] | None:
    """Tags in the store's index.json (cheap: no store modules imported); None if no store."""
    from karn.image.home import karn_home

    try:
        with open(os.path.join(karn_home(), "oci", "index.json"), "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    names = []
    for desc in doc.get("manifests", []):
        name = (desc.get("annotations") or {}).get("org.opencontainers.image.ref.name")
        names.append(name or "")
        names.append(desc.get("digest", ""))
    return names


def is_image(text: str) -> bool:
    """Is `karn run TEXT` about an image (True) or a host program (False)?

    A host path that exists is a program; a name tagged in the store is an image (it
    wins over $PATH, as in docker); so is anything with a registry part, a tag or a
    digest. Any other bare name is looked up in $PATH.
    """
    if "/" in text and os.path.exists(text):
        return False
    names = _local_names() or []
    if text in names or f"{text}:latest" in names:
        return True
    hexpart = text.removeprefix("sha256:")
    if len(hexpart) >= 12 and all(c in "0123456789abcdef" for c in hexpart):
        return True  # an IMAGE ID (the config's digest) or a manifest digest
    first = text.split("/", 1)[0]
    if "/" in text and first not in (".", "..") and ("." in first or ":" in first
                                                   or first == "localhost"):  # fmt: skip
        return True
    return ("/" not in text) and (":" in text or "@" in text)


def open_image(name: str, args: list[str], entrypoint: str | None,
               workdir: str | None) -> ImageRun:
    """The image's root, program, argv, env, workdir and settings; pulled first if it is
    remote and not stored, and held in the store until this process ends."""
    from karn.image.launch import prepare_run
    from karn.image.oci import parse_reference
    from karn.image.store import open_store

    store = open_store()
    image = store.find(name)
    if image is None:
        if parse_reference(name).registry is None:
            raise UsageError(f"image {name} not found in the store (see `karn images`)")
        from karn.image.registry import pull

        image = pull(store, name)
    global _run_lock
    _run_lock = store.hold_for_run()
    return prepare_run(store, image, list(args), entrypoint, workdir)
