"""`karn run IMAGE`: an image in the store -> root directory, program, argv, env, workdir.

The root is the image's layers extracted once into $KARN_HOME/rootfs/KEY, KEY naming
the layer digests; later runs find it there, so start-up does not depend on image size.
Command-line options override the image config as docker's do: ARGS replace Cmd,
--entrypoint replaces Entrypoint (and drops Cmd), -e adds to Env, -w and -m win.
"""

from __future__ import annotations

import json
import os

from karn.errors import ImageError, UsageError
from karn.hints import Any, NamedTuple
from karn.image.oci import LABEL_PREFIX
from karn.image.paths import guest_file
from karn.image.store import Image, Store

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageRun(NamedTuple):
    image: Image
    root: str  # host directory holding the extracted root filesystem
    program: str  # absolute guest path of the executable
    argv: list[str]  # argv[0] as the image names it, then the arguments
    env: list[str]  # the image's Env (KEY=VALUE), before -e options
    workdir: str
    memory: int | None
    cpus: int | None
    policy: dict[str, Any]  # the Karnfile's [policy] table (karn/policy.py)
    ports: list[str]  # the ports it declares (ExposedPorts: "80/tcp"), for -P


def ensure_root(store: Store, image: Image) -> str:
    """The extracted root of an image, extracting it only if it is not cached yet."""
    path = os.path.join(store.rootfs_dir, image.rootfs_key)
    if not os.path.isdir(path):
        from karn.image.layer import extract_image  # tarfile, gzip: only when extracting

        with store.writing():
            if not os.path.isdir(path):
                extract_image(store, image.layers, path, image.names[0] if image.names else
                              image.id)  # fmt: skip
    return path


def find_program(root: str, name: str, path_env: str, workdir: str) -> str:
    if "/" in name:
        guest = name if name.startswith("/") else os.path.normpath(os.path.join(workdir, name))
        if guest_file(root, guest) is None:
            raise ImageError(f"{name}: no such file in the image")
        return guest
    for d in path_env.split(":"):
        if d.startswith("/"):
            guest = os.path.join(d, name)
            host = guest_file(root, guest)
            if host is not None and os.stat(host).st_mode & 0o111:
                return guest
    raise ImageError(f"{name}: not found in the image's PATH ({path_env})")


def prepare_run(
    store: Store,
    image: Image,
    args: list[str],
    entrypoint: str | None = None,
    workdir: str | None = None,
) -> ImageRun:
    run = image.config.get("config") or {}
    if entrypoint is not None:
        argv = [entrypoint] if entrypoint else []
        argv += args
    else:
        argv = list(run.get("Entrypoint") or []) + (args or list(run.get("Cmd") or []))
    if not argv:
        raise UsageError(f"image {image.names[0] if image.names else image.id} has no "
                         "entrypoint or cmd: give a command after the image name")  # fmt: skip
    env = [e for e in run.get("Env") or [] if isinstance(e, str)]
    path_env = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
    workdir = workdir or run.get("WorkingDir") or "/"
    root = ensure_root(store, image)
    program = find_program(root, argv[0], path_env, workdir)
    exposed = run.get("ExposedPorts")
    ports = sorted(p for p in exposed if isinstance(p, str)) if isinstance(exposed, dict) else []
    return ImageRun(image, root, program, argv, env, workdir, *image_settings(image), ports)


def image_settings(image: Image) -> tuple[int | None, int | None, dict[str, Any]]:
    """What the image asks of karn (its labels): memory, cpus and the [policy] table."""
    labels = (image.config.get("config") or {}).get("Labels") or {}
    if not isinstance(labels, dict):
        raise ImageError("the image config's Labels is not an object")
    return _int_label(labels, "memory"), _int_label(labels, "cpus"), _json_label(labels, "policy")


def _json_label(labels: dict[str, Any], key: str) -> dict[str, Any]:
    try:
        value = json.loads(labels.get(LABEL_PREFIX + key) or "{}")
    except ValueError:
        raise ImageError(f"image label {LABEL_PREFIX + key} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ImageError(f"image label {LABEL_PREFIX + key} must be a JSON object")
    return value


def _int_label(labels: dict[str, Any], key: str) -> int | None:
    value = labels.get(LABEL_PREFIX + key)
    return int(value) if value and str(value).isdigit() else None
