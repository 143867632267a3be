"""Machine code of the fast-syscall transport: the shared entry (entry.S, assembled; a
test re-assembles it with `as` and compares) and the per-site stubs made from a template.
"""

from __future__ import annotations

import struct

# entry.S, assembled (`as --64`, .text).
ENTRY = bytes.fromhex(
    "6548890425080000006548893c25100000006548893425180000006548891425"
    "20000000654c89142528000000654c89042530000000654c890c253800000065"
    "48890c25400000009f0f90c065668904250400000065488b042508000000483d"
    "ff0100000f875403000065480fa30425800000000f83440300003dca0000000f"
    "85110200004189f34181e37ffeffff741f4183fb0974194183fb010f84d20000"
    "004183fb0a0f84c8000000e9e601000040f6c7030f85dc01000065483b3c2560"
    "0000000f82cd01000065483b3c25680000000f83be0100003b170f85b6010000"
    "4d85d2757d6548833c25c0000000007471b8ffffffff4183fb09750b4489c885"
    "c00f848f010000658904257800000065488b0c25d000000065448b1c25d80000"
    "00ba0100000031c04883b9c8000000010f97c001c24881c10001000041ffcb75"
    "e5653b1425e800000065488b142520000000730e6548893c2570000000e9cb01"
    "000065c704250000000007000000e94b02000065833c257c000000000f841401"
    "000040f6c7030f850a01000083fa000f8e01010000b8ffffffff4183fb0a750b"
    "4489c885c00f84eb00000065890425780000006548c704254800000000000000"
    "65c70425dc000000000000000faef065488b0c25d000000065448b1c25d80000"
    "004585db74194839b9c80000000f84a30000004881c10001000041ffcbebe265"
    "488b0c25d000000065448b1c25d80000004585db746383390875524839797075"
    "4c658b042578000000854178743fb808000000ba09000000f00fb111752f4839"
    "79707529658b042578000000854178741c6548ff04254800000065488b042548"
    "000000653b042520000000730c4881c10001000041ffcbeb986548ff0425e000"
    "000065833c25dc000000000f8578010000e9ca010000654c8b1c25580000004d"
    "85db0f84160100000f3148c1e2204809c265483b1425500000000f83fe000000"
    "4901d365c704250000000001000000f390658b04250000000083f8030f847e01"
    "000083f8040f841e01000083f8050f84ca00000083f80274d60f3148c1e22048"
    "09c24c39da730b65483b14255000000072bdb801000000ba0600000065f00fb1"
    "14250000000075a7e99100000065c7042500000000080000000faef03b177548"
    "0f3148c1e2204809c2654c8b1c25c00000004901d3f39065833c250000000009"
    "74410f3148c1e2204809c24c39da72e5b808000000ba0a00000065f00fb11425"
    "00000000751deb36b808000000ba0000000065f00fb11425000000007505e9f3"
    "feffff6548ff0425e00000006548c704254800000000000000e9a20000006548"
    "8b14252000000065440fb61c2505000000650fb6042504000000c1e00b4109c3"
    "4181cb0002000065668b042504000000047f9e65488b04250800000065488b0c"
    "2540000000e6100f0b65488b14252000000065440fb61c2505000000650fb604"
    "2504000000c1e00b4109c34181cb0002000065668b042504000000047f9e6548"
    "8b04254800000065488b0c254000000065c704250000000000000000e6120f0b"
    "65488b14252000000065440fb61c2505000000650fb6042504000000c1e00b41"
    "09c34181cb0002000065668b042504000000047f9e65488b0425480000006548"
    "8b0c254000000065c704250000000000000000ffe1"
)

# Label offsets in ENTRY (`nm entry.o`): where the settle logic (transport.py) stands.
SAVED = 0x55  # the user's flags and rdx are in the slot from here on
WAKE_SCAN = 0x1CC  # to WAKE_END: an in-guest futex wake at work (a kick lets it finish)
WAKE_END = 0x282  # to WAKE_TAIL: answered in the guest, S_RES holds the result
WAKE_TAIL = 0x296
PUBLISHED = 0x2CF  # the request is published (or a futex wait registered): the state says
WOKEN_COUNTED = 0x3AC  # a woken wait's stub counted itself (SLOT_GCALLS) from here on
SLOW = 0x3BE  # to SLOW_END: the exit-path tail (registers rebuilt as at the site)
SLOW_END = 0x409
DONE_WORK = 0x409  # to the end: the answered tails (registers loaded from the slot)

SITE_STUB_SIZE = 17  # without a replayed instruction between the mov and the syscall
SITE_STUB_STRIDE = 32


def site_stub(addr: int, nr: int, ret: int, entry: int, between: bytes = b"") -> bytes:
    """`mov $nr,%eax; <between>; lea ret(%rip),%rcx; jmp entry` placed at `addr`: the
    window's `mov` (and the instruction it has before the `syscall`) replayed, then the
    entry with rcx as `syscall` would leave it."""
    lea_end = addr + 12 + len(between)
    jmp_end = lea_end + 5
    return (b"\xb8" + struct.pack("<I", nr) + between
            + b"\x48\x8d\x0d" + struct.pack("<i", ret - lea_end)
            + b"\xe9" + struct.pack("<i", entry - jmp_end))


def short_stub(addr: int, head: bytes, ret: int, entry: int) -> bytes:
    """`<head>; lea ret(%rip),%rcx; jmp entry` placed at `addr`: a short site's 2-byte
    `xor %eax,%eax` (head) replayed, then the entry as from site_stub()."""
    lea_end = addr + len(head) + 7
    return (head + b"\x48\x8d\x0d" + struct.pack("<i", ret - lea_end)
            + b"\xe9" + struct.pack("<i", entry - lea_end - 5))
