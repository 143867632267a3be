/* Syscall windows with a 64-bit `lea` between the `mov $nr,%eax` and the `syscall`, as in
 * glibc's pthread_create and start_thread (tests/test_fast_syscalls.py): RIP-relative
 * (the per-site stub replays it as a movabs of its address), base + disp32 and + disp8,
 * a destination r8..r15. Each runs N times (after the first, through the stub) and checks
 * the result and the register the lea set; rt_sigprocmask blocks a set the lea names. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char anchor[64] = "anchor";
static sigset_t blocked_set;

static long lea_rip(long *rsi)
{
    long rax, out;
    __asm__ volatile("mov $39, %%eax\n\tlea anchor(%%rip), %%rsi\n\tsyscall"
                     : "=a"(rax), "=S"(out) : : "rcx", "r11", "memory");
    *rsi = out;
    return rax;
}

static long lea_base32(const char *base, long *rsi)
{
    long rax, out;
    __asm__ volatile("mov $39, %%eax\n\tlea 0x100(%%rbx), %%rsi\n\tsyscall"
                     : "=a"(rax), "=S"(out) : "b"(base) : "rcx", "r11", "memory");
    *rsi = out;
    return rax;
}

static long lea_base8_r8(const char *base, long *r8)
{
    long rax;
    register long out __asm__("r8");
    __asm__ volatile("mov $39, %%eax\n\tlea 0x10(%%rdx), %%r8\n\tsyscall"
                     : "=a"(rax), "=r"(out) : "d"(base) : "rcx", "r11", "memory");
    *r8 = out;
    return rax;
}

static long block_rip(sigset_t *old)
{
    long rax;
    __asm__ volatile("mov $8, %%r10d\n\tmov $0, %%edi\n\t" /* SIG_BLOCK */
                     "mov $14, %%eax\n\tlea blocked_set(%%rip), %%rsi\n\tsyscall"
                     : "=a"(rax) : "d"(old) : "rcx", "r11", "rsi", "rdi", "r10", "memory");
    return rax;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000;
    long pid = getpid(), reg, bad[4] = {0};
    char buf[512];
    sigemptyset(&blocked_set);
    sigaddset(&blocked_set, SIGUSR1);
    for (long i = 0; i < n; i++) {
        bad[0] += lea_rip(&reg) != pid || reg != (long)anchor;
        bad[1] += lea_base32(buf, &reg) != pid || reg != (long)(buf + 0x100);
        bad[2] += lea_base8_r8(buf, &reg) != pid || reg != (long)(buf + 0x10);
        sigset_t old, now;
        sigprocmask(SIG_SETMASK, NULL, &old);
        bad[3] += block_rip(&old) != 0 || sigprocmask(SIG_SETMASK, NULL, &now) ||
                  !sigismember(&now, SIGUSR1);
        sigprocmask(SIG_UNBLOCK, &blocked_set, NULL);
    }
    printf("%ld calls: rip %ld, base32 %ld, base8 r8 %ld, sigprocmask %ld wrong\n", n,
           bad[0], bad[1], bad[2], bad[3]);
    return bad[0] || bad[1] || bad[2] || bad[3];
}
