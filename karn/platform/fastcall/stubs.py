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
    "ff0100000f879600000065480fa30425800000000f8386000000654c8b1c2558"
    "0000004d85db74780f3148c1e2204809c265483b14255000000073644901d365"
    "c704250000000001000000f390658b04250000000083f8030f84e400000083f8"
    "040f848400000083f805743483f80274da0f3148c1e2204809c24c39da730b65"
    "483b14255000000072c1b801000000ba0600000065f00fb114250000000075ab"
    "65488b14252000000065440fb61c2505000000650fb6042504000000c1e00b41"
    "09c34181cb0002000065668b042504000000047f9e65488b0425080000006548"
    "8b0c2540000000e6100f0b65488b14252000000065440fb61c2505000000650f"
    "b6042504000000c1e00b4109c34181cb0002000065668b042504000000047f9e"
    "65488b04254800000065488b0c254000000065c704250000000000000000e612"
    "0f0b65488b14252000000065440fb61c2505000000650fb6042504000000c1e0"
    "0b4109c34181cb0002000065668b042504000000047f9e65488b042548000000"
    "65488b0c254000000065c704250000000000000000ffe1"
)

# Label offsets in ENTRY (`nm entry.o`): where the settle logic (transport.py) stands.
SAVED = 0x55  # the user's flags and rdx are in the slot from here on
PUBLISHED = 0xAB  # the request is published: the slot's state decides
SLOW = 0x100  # to SLOW_END: the exit-path tail (registers rebuilt as at the site)
SLOW_END = 0x14B
DONE_WORK = 0x14B  # to the end: the answered tails (registers loaded from the slot)

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
