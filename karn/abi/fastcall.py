"""The fast-syscall transport's shared layout (docs/design/fast-syscalls.md, section 4):
what the in-guest entry code (karn/platform/fastcall/entry.S) and the monitor agree on.

Each vCPU has one slot, found by the guest through its GS base. Every field is written by
guest code too, so the monitor treats all of it as untrusted input.
"""

# Port of the exit a stub makes when its call was answered but work is due (signals to
# deliver, an exit requested): RIP = RCX, RFLAGS = R11 as after a syscall, RAX = result.
# Calls the server declines leave through the ordinary syscall port (layout.SYSCALL_PORT).
WORK_PORT = 0x12

SLOT_SIZE = 256  # bytes, slot-aligned; one per vCPU

# Slot fields: byte offsets.
SLOT_STATE = 0  # u32, one of the states below
SLOT_FLAGS = 4  # u16: low byte = OF (seto), high byte = lahf (rflags bits 0-7)
SLOT_NR = 8  # u64
SLOT_ARGS = 16  # 6 x u64: rdi rsi rdx r10 r8 r9
SLOT_RET = 64  # u64: the return address (rcx)
SLOT_RESULT = 72  # u64
SLOT_ALIVE = 80  # u64: guest TSC until which the server polls (its lease); 0 = asleep
SLOT_BUDGET = 88  # u64: TSC ticks a stub waits for an untaken request; 0 = go straight to
#                   the exit path (the monitor backs a slot off after withdrawn calls)
SLOT_USER_LO = 96  # u64, u64: the user range [lo, hi), mapped in every page table: a stub
SLOT_USER_HI = 104  # reads a futex word there (never outside) to see if a wait would block
SLOT_FASTMAP = 128  # 64 bytes: bit nr set = the server may take call nr

FASTMAP_BITS = 512  # calls numbered above go through the exit path

# Slot states. REDO, WITHDRAWN and WAITS stay in the slot until the exit path reads them.
# WAITS: the stub saw a futex wait that would block and sent it to the exit path itself.
IDLE, REQ, TAKEN, DONE, DONE_WORK, REDO, WITHDRAWN, WAITS = range(8)

FUTEX = 202  # futex(2): the stub looks at its command (entry.S)

# rflags bits the stub keeps in SLOT_FLAGS: CF PF AF ZF SF (lahf) and OF (seto).
LAHF_FLAGS = 0xD5
OF_FLAG = 0x800
IF_FLAG = 0x200
