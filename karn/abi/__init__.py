"""The Linux x86-64 ABI as data: the ground both platform/ and kernel/ stand on.

errno (the error a syscall returns), syscalls (numbers and names), signals (numbers,
names, si_codes), faults (x86 exceptions and the signal Linux makes of each) and registers
(raw argument registers as C types). Nothing here imports anything else from karn.
"""
