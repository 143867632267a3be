"""Machine code of the fast-syscall transport: the shared entry (entry.S, assembled; a
test re-assembles it with `as` and compares) and the per-site stubs made from a template.
"""

from __future__ import annotations

import struct

# entry.S, assembled (`as --64`, .text).
ENTRY = bytes.fromhex(
    "6548890425080000006548893c25100000006548893425180000006548891425"
    "20000000654c89142528000000654c89042530000000654c890c253800000065"
    "48890c25400000009f0f90c065668904250400000065833c2550000000000f84"
    "9a00000065488b042508000000483dff0100000f878500000065480fa3042580"
    "000000737965c7042500000000010000000f3148c1e2204809c2654803142558"
    "000000f390658b04250000000083f8030f84ea00000083f8040f848a00000083"
    "f805742e83f80274da4989d30f3148c1e2204809c24c39da4c89da72c6b80100"
    "00004531db65f0440fb11c250000000075b165c7042500000000000000006548"
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
SAVED = 0x55  # the user's flags are in the slot from here on
PUBLISHED = 0x91  # the request is published: the slot's state decides
REDO = 0xF2  # to SLOW_END: the exit-path tail (registers rebuilt as at the site)
SLOW_END = 0x149
DONE_WORK = 0x149  # to the end: the answered tails (registers loaded from the slot)

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
