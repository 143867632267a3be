"""Linux x86-64 signal numbers, names and si_codes (asm/signal.h, asm-generic/siginfo.h).

These are the guest's numbers. The monitor's own signals (host processes, its threads)
go through Python's signal module; the two agree on this host, which tests/test_abi.py
checks against C.
"""

NSIG = 64  # _NSIG: signals 1..64
SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE = 1, 2, 3, 4, 5, 6, 7, 8
SIGKILL, SIGUSR1, SIGSEGV, SIGUSR2, SIGPIPE, SIGALRM, SIGTERM = 9, 10, 11, 12, 13, 14, 15
SIGSTKFLT, SIGCHLD, SIGCONT, SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU = 16, 17, 18, 19, 20, 21, 22
SIGURG, SIGXCPU, SIGXFSZ, SIGVTALRM, SIGPROF, SIGWINCH, SIGIO, SIGPWR, SIGSYS = (
    23, 24, 25, 26, 27, 28, 29, 30, 31)
SIGRTMIN = 32  # the kernel's; glibc keeps 32 and 33 for itself and says SIGRTMIN is 34

SIGNAL_NAMES = {
    1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT",
    7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2",
    13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 16: "SIGSTKFLT", 17: "SIGCHLD",
    18: "SIGCONT", 19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU", 23: "SIGURG",
    24: "SIGXCPU", 25: "SIGXFSZ", 26: "SIGVTALRM", 27: "SIGPROF", 28: "SIGWINCH",
    29: "SIGIO", 30: "SIGPWR", 31: "SIGSYS",
}

# si_code: who sent a signal, or for a fault what kind it was.
SI_USER = 0
SI_KERNEL = 0x80
SI_QUEUE = -1
SI_TIMER = -2
SI_TKILL = -6
SEGV_MAPERR, SEGV_ACCERR = 1, 2
ILL_ILLOPN = 2
FPE_INTDIV = 1
BUS_ADRALN, BUS_ADRERR = 1, 2
TRAP_BRKPT = 1


def signal_name(sig: int) -> str:
    if sig >= SIGRTMIN:
        return f"SIGRT{sig - SIGRTMIN}" if sig > SIGRTMIN else "SIGRTMIN"
    return SIGNAL_NAMES.get(sig, f"signal {sig}")
