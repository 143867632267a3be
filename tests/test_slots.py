"""KVM memory slots added while the guest runs (platform/memory.py `cover`: slots cover
only what the guest maps, docs/design/processes.md 3.3). The Go runtime deaths first
blamed on them were the fast transport's (test_fast_syscalls.py, a kick in a site stub)."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize("transport", ["exit", "fast"])
@pytest.mark.parametrize("mode", ["fresh", "churn", "reserve"])
def test_memory_keeps_every_threads_words_while_slots_are_added(mode, transport, build,
                                                                 karn):
    """Four threads keep writing and checking their own memory, stack and TLS, throw it
    away (MADV_DONTNEED) and start short threads, while another maps 40 fresh regions a
    64 MiB piece apart (each a new slot, added while the other vCPUs are in guest mode),
    and in "churn" also unmaps and maps again, in "reserve" reserves PROT_NONE and commits
    parts with mprotect and MAP_FIXED as Go does. Every word reads back what was written
    and no lock-prefixed increment is lost."""
    got = karn("--syscall-transport", transport, "--cpus", "4", build("slot_churn"), mode,
               "4", "40", timeout=120)
    assert got.returncode == 0, got.stdout + got.stderr
    made = re.fullmatch(rb"ok (\d+) regions\n", got.stdout)
    assert made is not None and int(made[1]) >= 30, got.stdout  # some pieces are in use

