"""Hostile images: layers, manifests, configs and indexes written by an attacker.

Each archive is built here, imported with `karn build --from ...` and extracted by
`karn run IMAGE` (karn's real path), and the test checks what a user would see: files
outside the store untouched, one `karn:` error line, the store as it was.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
from test_errors import assert_one_error_line
from test_images import BB, _file, _special, _tar, karn_in, ok, store_snapshot, write_layout

CONFIG = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/busybox", "true"]},
          "rootfs": {"type": "layers", "diff_ids": []}}  # fmt: skip


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "karn-home"


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
