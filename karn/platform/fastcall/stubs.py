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
    "ff0100000f87a103000065480fa30425800000000f83910300003dca00000074"
    "513d110100000f855702000065833c257c000000000f84480200004883fe180f"
    "853e0200006548c7042548000000000000006548893c25f00000006548ff0425"
    "e00000006548ff0425f8000000e9db0300004189f34181e37ffeffff741f4183"
    "fb0974194183fb010f84d20000004183fb0a0f84c8000000e9e601000040f6c7"
    "030f85dc01000065483b3c25600000000f82cd01000065483b3c25680000000f"
    "83be0100003b170f85b60100004d85d2757d6548833c25c0000000007471b8ff"
    "ffffff4183fb09750b4489c885c00f848f010000658904257800000065488b0c"
    "25d000000065448b1c25d8000000ba0100000031c04883b9c8000000010f97c0"
    "01c24881c10001000041ffcb75e5653b1425e800000065488b14252000000073"
    "0e6548893c2570000000e9cb01000065c704250000000007000000e94b020000"
    "65833c257c000000000f841401000040f6c7030f850a01000083fa000f8e0101"
    "0000b8ffffffff4183fb0a750b4489c885c00f84eb0000006589042578000000"
    "6548c70425480000000000000065c70425dc000000000000000faef065488b0c"
    "25d000000065448b1c25d80000004585db74194839b9c80000000f84a3000000"
    "4881c10001000041ffcbebe265488b0c25d000000065448b1c25d80000004585"
    "db7463833908755248397970754c658b042578000000854178743fb808000000"
    "ba09000000f00fb111752f483979707529658b042578000000854178741c6548"
    "ff04254800000065488b042548000000653b042520000000730c4881c1000100"
    "0041ffcbeb986548ff0425e000000065833c25dc000000000f8578010000e9ca"
    "010000654c8b1c25580000004d85db0f84160100000f3148c1e2204809c26548"
    "3b1425500000000f83fe0000004901d365c704250000000001000000f390658b"
    "04250000000083f8030f847e01000083f8040f841e01000083f8050f84ca0000"
    "0083f80274d60f3148c1e2204809c24c39da730b65483b14255000000072bdb8"
    "01000000ba0600000065f00fb114250000000075a7e99100000065c704250000"
    "0000080000000faef03b1775480f3148c1e2204809c2654c8b1c25c000000049"
    "01d3f39065833c25000000000974410f3148c1e2204809c24c39da72e5b80800"
    "0000ba0a00000065f00fb1142500000000751deb36b808000000ba0000000065"
    "f00fb11425000000007505e9f3feffff6548ff0425e00000006548c704254800"
    "000000000000e9a200000065488b14252000000065440fb61c2505000000650f"
    "b6042504000000c1e00b4109c34181cb0002000065668b042504000000047f9e"
    "65488b04250800000065488b0c2540000000e6100f0b65488b14252000000065"
    "440fb61c2505000000650fb6042504000000c1e00b4109c34181cb0002000065"
    "668b042504000000047f9e65488b04254800000065488b0c254000000065c704"
    "250000000000000000e6120f0b65488b14252000000065440fb61c2505000000"
    "650fb6042504000000c1e00b4109c34181cb0002000065668b04250400000004"
    "7f9e65488b04254800000065488b0c254000000065c704250000000000000000"
    "ffe1"
)

# Label offsets in ENTRY (`nm entry.o`): where the settle logic (transport.py) stands.
SAVED = 0x55  # the user's flags and rdx are in the slot from here on
WAKE_SCAN = 0x219  # to WAKE_END: an in-guest futex wake at work (a kick lets it finish)
WAKE_END = 0x2CF  # to WAKE_TAIL: answered in the guest, S_RES holds the result
WAKE_TAIL = 0x2E3
PUBLISHED = 0x31C  # the request is published (or a futex wait registered): the state says
WOKEN_COUNTED = 0x3F9  # a woken wait's stub counted itself (SLOT_GCALLS) from here on
SLOW = 0x40B  # to SLOW_END: the exit-path tail (registers rebuilt as at the site)
SLOW_END = 0x456
DONE_WORK = 0x456  # to the end: the answered tails (registers loaded from the slot)

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
