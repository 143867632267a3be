"""The fast-syscall transport's shared layout (docs/design/fast-syscalls.md, section 4):
what the in-guest entry code (karn/platform/fastcall/entry.S) and the monitor agree on.

Each vCPU has one slot, found by the guest through its GS base. Every field is written by
guest code too, so the monitor treats all of it as untrusted input.
"""

# Port of the exit a stub makes when its call was answered but work is due (signals to
# deliver, an exit requested): RIP = RCX, RFLAGS = R11 as after a syscall, RAX = result.
# Calls the server declines leave through the ordinary syscall port (layout.SYSCALL_PORT).
WORK_PORT = 0x12

SLOT_SIZE = 512  # bytes, slot-aligned; one per vCPU

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
# A futex wait spinning in the stub (state SPINWAIT) registers its word and bitset here; a
# wake in another slot's stub, or in the monitor, ends it (state WOKEN, result 0).
SLOT_WADDR = 112  # u64
SLOT_WBITSET = 120  # u32
SLOT_INGUEST = 124  # u32: 1 = futex wakes may be answered in the guest
SLOT_FASTMAP = 128  # 64 bytes: bit nr set = the server may take call nr
SLOT_SPIN = 192  # u64: TSC ticks an untimed futex wait spins before the exit path; 0: none
SLOT_BLOCKED = 200  # u64: the futex word this vCPU's thread waits on in the monitor; 0: none;
BLOCKED_WOKEN = 1  # or woken there, on its way back to the guest
SLOT_SLOT0 = 208  # u64: the guest address of slot 0, and (u32) the slots in use: what an
SLOT_NSLOTS = 216  # in-guest wake scans
SLOT_KICKED = 220  # u32: a kick found the stub in an in-guest wake: leave by WORK_PORT
SLOT_GCALLS = 224  # u64: calls answered in the guest (futex, set_robust_list; by the stub)
SLOT_NBOUND = 232  # u32: the process's threads (vCPUs running one)
# set_robust_list answered in the guest (while SLOT_INGUEST is 1): the head it was given,
# and how many such calls the stub answered (each also counted in SLOT_GCALLS); the monitor
# takes the head for its thread when it needs it (FastTransport.robust_head).
SLOT_RHEAD = 240  # u64
SLOT_RCALLS = 248  # u64
SET_ROBUST_LIST = 273
# rt_sigprocmask answered in the guest (while SLOT_MASKON is 1): the slot holds the
# thread's signal mask, and the monitor reads and writes it there (kernel Task.blocked).
# Before it reads the mask to decide whether a signal wakes the thread, the monitor
# publishes the signal in SLOT_PENDING with a full barrier; a stub stores the new mask,
# fences, and reads SLOT_PENDING: one of the two sees the other (docs/design/
# fast-syscalls.md, "Signal masks in the guest"). SLOT_PENDING may hold signals no longer
# pending (a spurious WORK_PORT exit), never lack one that is.
SLOT_MASK = 256  # u64: the blocked signals (bit sig-1)
SLOT_PENDING = 264  # u64: signals pending for the thread or its process (a superset)
SLOT_MCALLS = 272  # u64: rt_sigprocmask calls answered here (each also in SLOT_GCALLS)
SLOT_MASKON = 280  # u32: 1 = the slot holds the mask and the stub may answer
SLOT_SPIN_SHARED = 288  # u64: TSC ticks a shared futex wait spins (pthread_join's on a
#                         thread's tid: its wake is the thread's end, in the monitor)
RT_SIGPROCMASK = 14
UNBLOCKABLE = (1 << 8) | (1 << 18)  # SIGKILL, SIGSTOP

FASTMAP_BITS = 512  # calls numbered above go through the exit path

# Slot states. REDO, WITHDRAWN, WAITS and SPUN stay in the slot until the exit path reads
# them. WAITS: the stub saw a futex wait that would block and sent it to the exit path
# itself; SPUN: the same after spinning (SPINWAIT) without a wake; WOKEN: a wake ended the
# spin.
IDLE, REQ, TAKEN, DONE, DONE_WORK, REDO, WITHDRAWN, WAITS, SPINWAIT, WOKEN, SPUN = range(11)

FUTEX = 202  # futex(2): the stub looks at its command (entry.S)
EXIT = 60  # exit(2), a thread's end: its site is patched before it is served (it never
# returns to where other sites are patched: platform/vcpu.py), if it is a libc's exit loop
RT_SIGRETURN = 15  # and a signal handler's return (its restorer's `mov $15,%rax; syscall`):
# it returns to the interrupted code, with the context it restores
PATCHED_BEFORE_SERVED = (EXIT, RT_SIGRETURN)

# rflags bits the stub keeps in SLOT_FLAGS: CF PF AF ZF SF (lahf) and OF (seto).
LAHF_FLAGS = 0xD5
OF_FLAG = 0x800
IF_FLAG = 0x200
