"""Shared file mappings that mremap moves, grows or shrinks, or that MAP_FIXED replaces.

karn's shared file mappings are copies written back on msync and munmap; the write-back
must follow the mapping to its new range and stop at what replaced it, or anonymous memory
reusing the old addresses ends up in the file (and what was written after the move does
not). The same binary runs natively and under karn; the files must end up the same.
"""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("variant", ["static", "musl-static"])
def test_shared_file_mapping_moves_keep_the_file_right(
    variant, build, karn, native, same, tmp_path
):
    exe = build("mmap_shared_moves", variant)
    here, there = tmp_path / "native", tmp_path / "karn"
    here.mkdir()
    there.mkdir()
    expected = native(exe, here)
    assert expected.returncode == 0, expected.stdout.decode()
    assert b"moved: yes" in expected.stdout
    same(expected, karn("-v", f"{there}:/data", exe, "/data"), f"mmap_shared_moves ({variant})")
    for name in ("moved", "shrunk", "replaced"):
        assert (here / name).read_bytes() == (there / name).read_bytes(), name
