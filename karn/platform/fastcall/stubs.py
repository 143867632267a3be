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
    "ff0100000f87e000000065480fa30425800000000f83d00000003dca00000075"
    "434189f34181e37ffeffff74064183fb09753140f6c703752b65483b3c256000"
    "0000722065483b3c256800000073153b17751165c704250000000007000000e9"
    "86000000654c8b1c25580000004d85db74780f3148c1e2204809c265483b1425"
    "5000000073644901d365c704250000000001000000f390658b04250000000083"
    "f8030f84e400000083f8040f848400000083f805743483f80274da0f3148c1e2"
    "204809c24c39da730b65483b14255000000072c1b801000000ba0600000065f0"
    "0fb114250000000075ab65488b14252000000065440fb61c2505000000650fb6"
    "042504000000c1e00b4109c34181cb0002000065668b042504000000047f9e65"
    "488b04250800000065488b0c2540000000e6100f0b65488b1425200000006544"
    "0fb61c2505000000650fb6042504000000c1e00b4109c34181cb000200006566"
    "8b042504000000047f9e65488b04254800000065488b0c254000000065c70425"
    "0000000000000000e6120f0b65488b14252000000065440fb61c250500000065"
    "0fb6042504000000c1e00b4109c34181cb0002000065668b042504000000047f"
    "9e65488b04254800000065488b0c254000000065c704250000000000000000ff"
    "e1"
)

# Label offsets in ENTRY (`nm entry.o`): where the settle logic (transport.py) stands.
SAVED = 0x55  # the user's flags and rdx are in the slot from here on
PUBLISHED = 0xF5  # the request is published: the slot's state decides
SLOW = 0x14A  # to SLOW_END: the exit-path tail (registers rebuilt as at the site)
SLOW_END = 0x195
DONE_WORK = 0x195  # to the end: the answered tails (registers loaded from the slot)

SITE_STUB_SIZE = 17
SITE_STUB_STRIDE = 32


def site_stub(addr: int, nr: int, ret: int, entry: int) -> bytes:
    """`mov $nr,%eax; lea ret(%rip),%rcx; jmp entry` placed at `addr`: the window's `mov`
    replayed, then the entry with rcx as `syscall` would leave it."""
    lea_end = addr + 12
    jmp_end = addr + SITE_STUB_SIZE
    return (b"\xb8" + struct.pack("<I", nr)
            + b"\x48\x8d\x0d" + struct.pack("<i", ret - lea_end)
            + b"\xe9" + struct.pack("<i", entry - jmp_end))
