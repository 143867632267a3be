"""Image commands: build, images, inspect, tag, rm, prune, push, pull, login, logout.
(`karn run IMAGE` finds its image in karn/run/image.py.)

Only argparse/os/json are imported at module level: every command but `karn run`
registers these parsers, and the store/registry modules load only when a command needs
them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from karn.cli.output import add_format, print_fields, print_json
from karn.errors import UsageError
from karn.hints import Any

# ---- `karn inspect IMAGE`


def image_policy(image: Any) -> dict[str, Any]:
    """What an image asks of karn, and what of it loosens the defaults (`karn inspect`)."""
    from karn.errors import KarnError
    from karn.image.launch import image_settings
    from karn.policy import Policy, loosenings
    from karn.run.config import DEFAULT_MEMORY

    try:
        memory, cpus, policy = image_settings(image)
        checked = Policy().update(policy, "image")
    except KarnError as err:
        return {"error": str(err)}
    asks = {"memory": memory, "cpus": cpus, **{key: getattr(checked, key) for key in policy}}
    return {"memory": memory, "cpus": cpus, "policy": policy,
            "looser_than_default": loosenings(asks, memory or DEFAULT_MEMORY, DEFAULT_MEMORY)}


# ---- parsers


def register(sub: Any, parse_size: Any) -> None:
    """Add the image commands to the `karn` sub-parsers."""
    p = sub.add_parser(
        "build",
        help="build an image from a program, a directory, a Karnfile or another image",
        description="Build an OCI image into the local store. PATH is a program (collected "
        "with its ELF interpreter and libraries), a directory (its Karnfile, or else the "
        "directory itself as the root filesystem) or a Karnfile. The same inputs always give "
        "the same image digest, which is printed on stdout.",
        epilog="examples:  karn build -t hello:1 ./hello\n"
        "           karn build -t app .          (reads ./Karnfile)\n"
        "           karn build -t base --from oci:./layout:1.0\n"
        "           karn build -t bb --from docker-archive:busybox.tar",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", nargs="?", metavar="PATH", help="program, directory or Karnfile")
    p.add_argument("-t", "--tag", metavar="NAME[:TAG]", help="name the image (default tag latest)")
    p.add_argument("-f", "--file", metavar="KARNFILE", help="read this Karnfile")
    p.add_argument(
        "--from",
        dest="base",
        metavar="SOURCE",
        help="base image: oci:DIR[:REF], docker-archive:FILE, docker://REF or a stored image",
    )
    p.add_argument("--root", metavar="DIR", help="use DIR as the root filesystem")
    p.add_argument(
        "--collect",
        action="append",
        default=[],
        metavar="HOSTPATH",
        help="let the program's ELF names take this host file (or the files under this "
        "directory) from outside the standard library directories (repeatable; as karn run)",
    )
    p.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="SRC:DST",
        help="add a host file or directory at a guest path (repeatable)",
    )
    p.add_argument(
        "--entrypoint",
        action="append",
        metavar="ARG",
        help="entrypoint word (repeat for each word; default: the program)",
    )
    p.add_argument("--cmd", action="append", metavar="ARG", help="default argument (repeatable)")
    p.add_argument(
        "-e", "--env", action="append", default=[], metavar="KEY=VALUE", help="image environment"
    )
    p.add_argument("-w", "--workdir", metavar="DIR", help="working directory in the guest")
    p.add_argument("-m", "--memory", type=parse_size, help="default guest memory (e.g. 256m)")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser(
        "images", help="list images in the store", description="List the images in the store."
    )
    p.add_argument("-q", "--quiet", action="store_true", help="print image IDs only")
    p.add_argument("--digests", action="store_true", help="show full manifest digests")
    add_format(p)
    p.set_defaults(func=cmd_images)

    p = sub.add_parser(
        "inspect",
        help="show an instance's live state, or an image's manifest, as JSON",
        description="Print, as JSON, for an instance: its threads (state, RIP, symbol), "
        "memory, open fds, syscall counts and policy; for an image: its ID, names, digest, "
        "size, config and layers.",
    )
    p.add_argument("images", nargs="+", metavar="INSTANCE|IMAGE",
                   help="instance ID or name; image NAME[:TAG], ID or digest")
    add_format(p, default="json", json_help="a JSON array, one object per argument; "
               "table: one KEY  VALUE line per field")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "tag",
        help="give an image another name",
        description="Create the tag TARGET for the image SOURCE (moving TARGET if it exists).",
    )
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("target", metavar="TARGET[:TAG]")
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser(
        "rm",
        help="remove exited instances, or images from the store",
        description="Remove exited instances (by ID or name), or image names; an image "
        "without names left is deleted with the blobs and extracted root no other image uses.",
    )
    p.add_argument("images", nargs="+", metavar="INSTANCE|IMAGE")
    p.add_argument("-f", "--force", action="store_true",
                   help="remove running instances too, killed first (SIGKILL)")
    p.set_defaults(func=cmd_rm)

    p = sub.add_parser(
        "rmi",
        help="remove images from the store (rm for images only)",
        description="Remove image names; an image without names left is deleted with the "
        "blobs and extracted root no other image uses.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_rmi)

    p = sub.add_parser(
        "save",
        help="write images to an OCI archive",
        description="Write IMAGEs, with their names, as an OCI image layout in a tar "
        "archive (podman save --format oci-archive; skopeo's oci-archive:FILE reads it).",
    )
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (default: stdout, "
                   "unless it is a terminal)")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.set_defaults(func=cmd_save)

    p = sub.add_parser(
        "load",
        help="read images from an OCI archive",
        description="Import the images of an OCI archive (karn save, podman save --format "
        "oci-archive, skopeo copy ... oci-archive:FILE) into the store, with their names. "
        "Every blob is verified against its digest.",
    )
    p.add_argument("-i", "--input", metavar="FILE", help="read FILE (default: stdin)")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser(
        "prune",
        help="delete untagged images, unused blobs and extracted roots",
        description="Delete images that have no name, blobs no image refers to, extracted "
        "roots no image uses, and leftovers of interrupted builds and pulls.",
    )
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser(
        "push",
        help="upload an image to a registry",
        description="Upload IMAGE to the registry named in its name (or in DEST), e.g. "
        "karn push 127.0.0.1:5000/hello:1. Blobs the registry has are skipped; larger "
        "blobs go in chunks.",
    )
    p.add_argument("image", metavar="IMAGE")
    p.add_argument("dest", nargs="?", metavar="DEST", help="REGISTRY/NAME[:TAG] to push to")
    p.add_argument(
        "--chunk-size",
        type=parse_size,
        default=8 << 20,
        metavar="SIZE",
        help="upload blobs larger than this in chunks of this size (default 8m)",
    )
    p.set_defaults(func=cmd_push)

    p = sub.add_parser(
        "pull",
        help="download an image from a registry",
        description="Download REGISTRY/NAME[:TAG|@DIGEST] (linux/amd64) into the store. "
        "Every blob is verified against its digest before it is stored.",
    )
    p.add_argument("reference", metavar="REFERENCE")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser(
        "login",
        help="save credentials for a registry",
        description="Check a user name and password against REGISTRY and save them in "
        "$KARN_HOME/auth.json (docker's ~/.docker/config.json is also read).",
    )
    p.add_argument("registry", metavar="REGISTRY", help="host[:port]")
    p.add_argument("-u", "--username", help="user name (asked for if missing)")
    p.add_argument("-p", "--password", help="password (prefer --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=cmd_login)

    p = sub.add_parser(
        "logout",
        help="forget the credentials for a registry",
        description="Remove REGISTRY's credentials from $KARN_HOME/auth.json.",
    )
    p.add_argument("registry", metavar="REGISTRY")
    p.set_defaults(func=cmd_logout)


# ---- commands


def _store() -> Any:
    from karn.image.store import open_store

    return open_store()


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.3g}{unit}"
        size /= 1000
    return f"{size}"


def cmd_build(args: argparse.Namespace) -> int:
    from karn.image.build import build_image
    from karn.image.karnfile import BuildSpec, FileSpec, parse_karnfile

    karnfile = args.file
    program = root = None
    if args.path and not karnfile:
        path = args.path
        if os.path.isdir(path):
            if os.path.isfile(os.path.join(path, "Karnfile")):
                karnfile = os.path.join(path, "Karnfile")
            else:
                root = path
        elif os.path.basename(path) == "Karnfile" or path.endswith(".toml"):
            karnfile = path
        else:
            program = path
    elif args.path:
        raise UsageError("give either PATH or -f KARNFILE, not both")
    spec = parse_karnfile(karnfile) if karnfile else BuildSpec()
    spec.program = program or spec.program
    spec.collect += [os.path.abspath(c) for c in args.collect]
    spec.root = args.root or root or spec.root
    spec.base = args.base or spec.base
    if args.tag:
        spec.name = args.tag
    for item in args.add:
        src, sep, dst = item.partition(":")
        if not sep or not src or not dst.startswith("/"):
            raise UsageError(f"--add {item!r}: use SRC:DST with DST an absolute guest path")
        spec.files.append(FileSpec(os.path.abspath(src), dst))
    if args.entrypoint:
        spec.entrypoint = args.entrypoint
    if args.cmd:
        spec.cmd = args.cmd
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--env {item!r}: use KEY=VALUE")
        spec.env[key] = value
    spec.workdir = args.workdir or spec.workdir
    spec.memory = args.memory or spec.memory
    if spec.root and not spec.entrypoint and not spec.cmd:
        raise UsageError("a root-directory image needs an entrypoint (--entrypoint PROGRAM)")
    image = build_image(_store(), spec)
    from karn.image.progress import note

    note(f"built {', '.join(image.names) or image.id}: {_human(image.total_size)}")
    print(image.digest)
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    images = _store().images()
    if args.quiet:
        for image in images:
            print(image.id)
        return 0
    if args.format == "json":
        print_json([{"Id": image.id, "ConfigDigest": image.config_digest,
                     "Digest": image.digest, "RepoTags": image.names,
                     "Created": image.created, "Size": image.total_size} for image in images])
        return 0
    rows = [("REPOSITORY", "TAG", "DIGEST" if args.digests else "IMAGE ID", "CREATED", "SIZE")]
    for image in images:
        ident = image.digest if args.digests else image.id
        created = (image.created or "")[:19].replace("T", " ")
        for name in image.names or ["<none>:<none>"]:
            repo, _, tag = name.rpartition(":")
            if "/" in tag:  # a registry port, not a tag
                repo, tag = name, "<none>"
            rows.append((repo, tag, ident, created, _human(image.total_size)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from karn.cli import instances
    from karn.instance.registry import lookup

    out = []
    for text in args.images:
        inst = lookup(text)  # an instance id or name wins over an image of that name
        if inst is not None:
            out.append(instances.inspect(inst))
            continue
        image = _store().get(text)
        out.append(
            {
                "Id": image.id,
                "Digest": image.digest,
                "RepoTags": image.names,
                "Created": image.created,
                "Size": image.total_size,
                "Architecture": image.config.get("architecture"),
                "Os": image.config.get("os"),
                "Config": image.config.get("config") or {},
                "RootFS": image.config.get("rootfs"),
                "Manifest": image.manifest,
                "KarnPolicy": image_policy(image),
            }
        )
    if args.format == "table":
        print_fields(out)
    else:
        print(json.dumps(out, indent=2))
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from karn.image.oci import parse_reference

    store = _store()
    image = store.get(args.source)
    target = parse_reference(args.target)
    if target.digest:
        raise UsageError(f"{args.target}: a tag cannot contain a digest")
    media_type = image.manifest.get("mediaType")
    store.add_image(image.digest, image.size, str(target.with_tag()), media_type)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from karn.cli import instances
    from karn.instance.registry import lookup

    images = []
    for text in args.images:
        inst = lookup(text)
        if inst is not None:
            instances.remove(inst, text, args.force)
        else:
            images.append(text)
    _remove_images(images)
    return 0


def cmd_rmi(args: argparse.Namespace) -> int:
    _remove_images(args.images)
    return 0


def _remove_images(references: list[str]) -> None:
    """Untag each; an image left with no tag is deleted."""
    store = _store()
    for text in references:
        image, deleted = store.untag(text)
        print(f"deleted {image.digest}" if deleted else f"untagged {text}")
    store.collect_garbage()


def cmd_save(args: argparse.Namespace) -> int:
    from karn.image.archive import save_archive
    from karn.image.oci import parse_reference

    store = _store()
    chosen = []
    for text in args.images:
        image = store.get(text)
        try:
            name: str | None = str(parse_reference(text).with_tag())
        except UsageError:  # an ID or digest prefix
            name = None
        chosen.append((name if name in image.names else None, image))
    if args.output is None:
        if sys.stdout.isatty():
            raise UsageError("save: give -o FILE (stdout is a terminal)")
        save_archive(store, chosen, sys.stdout.buffer)
        return 0
    partial = args.output + ".part"
    try:
        with open(partial, "wb") as out:
            save_archive(store, chosen, out)
        os.rename(partial, args.output)
    except OSError as err:
        raise UsageError(f"save: {err.filename or args.output}: {err.strerror}") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from karn.errors import ImageError
    from karn.image.archive import load_archive

    try:
        if args.input is None:
            if sys.stdin.isatty():
                raise UsageError("load: give -i FILE (stdin is a terminal)")
            names = load_archive(_store(), sys.stdin.buffer, "stdin")
        else:
            try:
                source = open(args.input, "rb")
            except OSError as err:
                raise UsageError(f"load: {args.input}: {err.strerror}") from None
            with source:
                names = load_archive(_store(), source, args.input)
    except ImageError as err:  # a bad archive is a bad value (125), not an image to run
        raise UsageError(str(err)) from None
    for name in names:
        print(f"Loaded image: {name}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    files, size = _store().collect_garbage(dangling=True)
    print(f"removed {files} blobs and roots, {_human(size)} of blobs")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from karn.image.registry import push

    print(push(_store(), args.image, args.dest, args.chunk_size))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from karn.image.registry import pull

    print(pull(_store(), args.reference).digest)
    return 0


def cmd_login(args: argparse.Namespace) -> int:
    from karn.image.registry import login

    user = args.username
    if not user:
        if not sys.stdin.isatty():
            raise UsageError("login: give --username (stdin is not a terminal)")
        user = input("Username: ")
    password = args.password
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif password is None:
        if not sys.stdin.isatty():
            raise UsageError("login: give --password-stdin (stdin is not a terminal)")
        import getpass

        password = getpass.getpass("Password: ")
    login(_store(), args.registry, user, password)
    print("Login Succeeded")
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    from karn.image.auth import remove_credentials

    if not remove_credentials(_store().auth_path, args.registry):
        raise UsageError(f"not logged in to {args.registry}")
    print(f"Removed login credentials for {args.registry}")
    return 0
