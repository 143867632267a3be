"""Karnfile: a TOML description of an image (see docs/images.md for every key).

    name = "hello:1.0"
    program = "./hello"          # or root = "./rootfs", or from = "oci:./layout:1"
    cmd = ["--greeting", "hi"]
    env = { LANG = "C.UTF-8" }
    memory = "64m"
    [[files]]
    src = "hello.conf"
    dst = "/etc/hello.conf"

Parsing only checks and normalises; every error names the key. Relative host paths
are taken relative to the Karnfile's directory.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field

from karn.errors import UsageError
from karn.hints import Any
from karn.sizes import parse_size


class KarnfileError(UsageError):
    pass


@dataclass
class FileSpec:
    src: str  # host path (file or directory)
    dst: str  # guest path
    mode: int | None = None


@dataclass
class BuildSpec:
    """What to build: exactly one of program/root/base, plus files and the run config."""

    name: str | None = None
    program: str | None = None
    collect: list[str] = field(default_factory=list)  # --collect: host files ELF names may take
    root: str | None = None
    base: str | None = None  # `from`: oci:DIR[:REF], docker-archive:FILE, docker://REF, REF
    files: list[FileSpec] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    memory: int | None = None
    cpus: int | None = None
    ports: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        sources = [k for k in ("program", "root", "base") if getattr(self, k)]
        if len(sources) > 1:
            names = " and ".join("from" if s == "base" else s for s in sources)
            raise KarnfileError(f"give only one of program, root and from (got {names})")
        if not sources and not self.files:
            raise KarnfileError("nothing to build: give a program, a root directory or from")
        if self.workdir is not None and not self.workdir.startswith("/"):
            raise KarnfileError(f"workdir must be an absolute guest path, not {self.workdir!r}")


KEYS = {
    "name", "program", "collect", "root", "from", "files", "entrypoint", "cmd", "env", "workdir",
    "memory", "cpus", "ports", "volumes", "labels", "policy",
}  # fmt: skip


def _str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise KarnfileError(f"Karnfile: {key} must be a non-empty string")
    return value


def _str_list(doc: dict[str, Any], key: str) -> list[str] | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, str):  # shell-free form: split on whitespace, like a simple CMD
        return value.split()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise KarnfileError(f"Karnfile: {key} must be a list of strings")
    return list(value)


def _str_map(doc: dict[str, Any], key: str) -> dict[str, str]:
    value = doc.get(key, {})
    if isinstance(value, list) and key == "env":  # also accept ["K=V", ...]
        out = {}
        for item in value:
            if not isinstance(item, str) or "=" not in item:
                raise KarnfileError(f"Karnfile: env entries must look like KEY=VALUE: {item!r}")
            k, v = item.split("=", 1)
            out[k] = v
        return out
    if not isinstance(value, dict):
        raise KarnfileError(f"Karnfile: {key} must be a table of strings")
    out = {}
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise KarnfileError(f"Karnfile: {key}.{k} must be a string")
        out[str(k)] = str(v)
    return out


def parse_size_value(value: Any, key: str) -> int:
    """Bytes from 268435456, "256m", "1g" or "512MiB" (the units of `karn run -m`)."""
    if isinstance(value, int | str):  # not a TOML float or table
        try:
            return parse_size(value)
        except ValueError:
            pass
    raise KarnfileError(f'Karnfile: {key} = {value!r} is not a size (use e.g. "256m")')


def _files(doc: dict[str, Any], base_dir: str) -> list[FileSpec]:
    value = doc.get("files", [])
    if not isinstance(value, list):
        raise KarnfileError("Karnfile: files must be an array of tables ([[files]])")
    out = []
    for i, item in enumerate(value):
        where = f"files[{i}]"
        if isinstance(item, str):  # "SRC:DST" shorthand
            host, sep, guest = item.partition(":")
            item = {"src": host, "dst": guest} if sep else {"src": item}
        if not isinstance(item, dict):
            raise KarnfileError(f"Karnfile: {where} must be a table with src and dst")
        unknown = set(item) - {"src", "dst", "mode"}
        if unknown:
            raise KarnfileError(f"Karnfile: {where}: unknown key {sorted(unknown)[0]!r}")
        src = item.get("src")
        if not isinstance(src, str) or not src:
            raise KarnfileError(f"Karnfile: {where}.src must be a host path")
        dst = item.get("dst") or "/" + os.path.basename(src.rstrip("/"))
        if not isinstance(dst, str) or not dst.startswith("/"):
            raise KarnfileError(f"Karnfile: {where}.dst must be an absolute guest path")
        mode = item.get("mode")
        if isinstance(mode, str):
            try:
                mode = int(mode, 8)
            except ValueError:
                raise KarnfileError(f'Karnfile: {where}.mode must be octal like "0644"') from None
        if mode is not None and (not isinstance(mode, int) or not 0 <= mode <= 0o7777):
            raise KarnfileError(f'Karnfile: {where}.mode must be octal like "0644"')
        out.append(FileSpec(os.path.join(base_dir, src), dst, mode))
    return out


def parse_karnfile(path: str) -> BuildSpec:
    """Read a Karnfile into a BuildSpec; KarnfileError naming the key on any problem."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise KarnfileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise KarnfileError(f"{path}: is a directory") from None
    except tomllib.TOMLDecodeError as err:
        raise KarnfileError(f"{path}: invalid TOML: {err}") from None
    base_dir = os.path.dirname(os.path.abspath(path))
    unknown = sorted(set(doc) - KEYS)
    if unknown:
        raise KarnfileError(f"Karnfile: unknown key {unknown[0]!r} (see docs/images.md)")

    def host(key: str) -> str | None:
        value = _str(doc, key)
        return os.path.join(base_dir, value) if value else None

    spec = BuildSpec(
        name=_str(doc, "name"),
        program=host("program"),
        collect=[os.path.join(base_dir, c) for c in _str_list(doc, "collect") or []],
        root=host("root"),
        base=_str(doc, "from"),
        files=_files(doc, base_dir),
        entrypoint=_str_list(doc, "entrypoint"),
        cmd=_str_list(doc, "cmd"),
        env=_str_map(doc, "env"),
        workdir=_str(doc, "workdir"),
        ports=_str_list(doc, "ports") or [],
        volumes=_str_list(doc, "volumes") or [],
        labels=_str_map(doc, "labels"),
    )
    if spec.base and spec.base.startswith(("oci:", "docker-archive:")):
        kind, _, rest = spec.base.partition(":")
        spec.base = f"{kind}:{os.path.join(base_dir, rest)}"
    if "memory" in doc:
        spec.memory = parse_size_value(doc["memory"], "memory")
    if "cpus" in doc:
        cpus = doc["cpus"]
        if isinstance(cpus, bool) or not isinstance(cpus, int) or not 1 <= cpus <= 256:
            raise KarnfileError("Karnfile: cpus must be an integer from 1 to 256")
        spec.cpus = cpus
    for port in spec.ports:
        number, _, proto = port.partition("/")
        if not number.isdigit() or not 0 < int(number) < 65536 or proto not in ("", "tcp", "udp"):
            raise KarnfileError(f"Karnfile: ports: {port!r} is not PORT[/tcp|/udp]")
    for vol in spec.volumes:
        if not vol.startswith("/"):
            raise KarnfileError(f"Karnfile: volumes: {vol!r} must be an absolute guest path")
    policy = doc.get("policy", {})
    if not isinstance(policy, dict):
        raise KarnfileError("Karnfile: policy must be a table")
    from karn.policy import Policy

    try:
        Policy().update(policy, "Karnfile")  # checked now, not when the image runs
    except UsageError as err:
        raise KarnfileError(str(err)) from None
    spec.policy = policy
    spec.check()
    return spec
