"""New private memory gets its host pages before the guest touches it (kernel/mm.py
prefault, platform/memory.py populate): under PVM a guest's first touch of a page costs
~15 times the monitor's populating it. How much is populated follows the policy's
constants; a range shared with other processes or a host file is never populated."""

from __future__ import annotations

import os
import tempfile

from karn.kernel.mm import PREFAULT_BIG_BYTES, PREFAULT_BYTES, STACK_PREFAULT_BYTES
from karn.platform.memory import HostGuestMemory

KIB = 1024
MIB = 1 << 20


def test_mappings_are_resident_as_far_as_the_policy_says_and_still_read_zeros(build, karn):
    """Through the guest: the growth of ru_maxrss over each mmap, before any touch."""
    result = karn(str(build("prefault")))
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    grown = {what: (int(size), int(kib)) for what, size, kib in
             (line.split() for line in result.stdout.decode().splitlines())}
    small, big = grown["small"][0] * KIB, grown["big"][0] * KIB
    assert small <= PREFAULT_BYTES < big  # the program's sizes fall either side of the line
    assert grown["small"][1] * KIB == small  # whole
    assert grown["big"][1] * KIB == PREFAULT_BIG_BYTES  # only its start
    assert grown["stack"][1] * KIB == STACK_PREFAULT_BYTES  # its top
    assert grown["noreserve"][1] == 0  # asked for no reservation


def test_populate_gives_private_ranges_their_pages_and_leaves_shared_ones_alone():
    mem = HostGuestMemory(64 * MIB, 0x10000, 64 * MIB)
    before = mem.resident_bytes()
    mem.populate(8 * MIB, MIB)
    assert mem.resident_bytes() - before == MIB
    assert bytes(mem.read(8 * MIB, MIB)) == bytes(MIB)

    mem.share_anonymous(16 * MIB, MIB)
    before = mem.resident_bytes()
    mem.populate(16 * MIB - 64 * KIB, 128 * KIB)  # half of it shared: none of it
    assert mem.resident_bytes() == before

    with tempfile.TemporaryFile() as f:  # a private mapping of a file: copied on write
        f.write(b"file" * 1024)
        f.flush()
        mem.map_file_private(32 * MIB, 4 * KIB, f.fileno(), 0)
        mem.populate(32 * MIB, 4 * KIB)
        os.pwrite(f.fileno(), b"late", 0)  # a page the guest now owns: not seen
        assert mem.read(32 * MIB, 4) == b"file"
