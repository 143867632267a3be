/* Threads taking CPU exceptions at the same moment (tests/test_fault_storm.py): every
 * handler must see its own thread's faulting state, as natively. Each fault records, just
 * before it, what the handler should find: the faulting rip, rsp, a magic value in rbx, the
 * carry flag (set in odd threads) and, for SIGSEGV, the address. A mixed-up exception
 * frame gives a wrong rip/rsp/flags (or a return onto another thread's stack).
 *
 *     fault_storm ud2|segv|int3 THREADS FAULTS
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

enum kind { UD2, SEGV, INT3 };

static __thread volatile uint64_t want_rip, want_rsp, want_rbx, want_addr, resume_rip;
static __thread volatile int want_cf;
static __thread volatile long wrong, seen;
static enum kind kind;
static long faults;
static pthread_barrier_t start_line;

static void handler(int sig, siginfo_t *info, void *uc_)
{
    ucontext_t *uc = uc_;
    greg_t *g = uc->uc_mcontext.gregs;
    int bad = (uint64_t)g[REG_RIP] != want_rip || (uint64_t)g[REG_RSP] != want_rsp
        || (uint64_t)g[REG_RBX] != want_rbx || (int)(g[REG_EFL] & 1) != want_cf;
    if (kind == SEGV)
        bad |= sig != SIGSEGV || (uint64_t)(uintptr_t)info->si_addr != want_addr;
    else
        bad |= sig != (kind == UD2 ? SIGILL : SIGTRAP);
    wrong += bad;
    seen++;
    g[REG_RIP] = (greg_t)resume_rip;
}

/* One fault; the labels 1 (faulting instruction) and 2 (after it) are taken with lea. */
static void fault_once(uint64_t magic, uint64_t cf, uintptr_t addr)
{
    want_cf = (int)cf;
    want_rbx = magic;
    want_addr = addr;
    switch (kind) {
    case UD2:
        __asm__ volatile("lea 1f(%%rip), %%rax\n\tmov %%rax, %0\n\t"
                         "lea 2f(%%rip), %%rax\n\tmov %%rax, %1\n\t"
                         "mov %%rsp, %2\n\tmov %3, %%rbx\n\tbt $0, %4\n\t"
                         "1: ud2\n2:"
                         : "=m"(want_rip), "=m"(resume_rip), "=m"(want_rsp)
                         : "r"(magic), "r"(cf)
                         : "rax", "rbx", "cc", "memory");
        break;
    case SEGV:
        __asm__ volatile("lea 1f(%%rip), %%rax\n\tmov %%rax, %0\n\t"
                         "lea 2f(%%rip), %%rax\n\tmov %%rax, %1\n\t"
                         "mov %%rsp, %2\n\tmov %3, %%rbx\n\tbt $0, %4\n\t"
                         "1: movb $0, (%5)\n2:"
                         : "=m"(want_rip), "=m"(resume_rip), "=m"(want_rsp)
                         : "r"(magic), "r"(cf), "r"(addr)
                         : "rax", "rbx", "cc", "memory");
        break;
    case INT3: /* a trap: the handler sees the rip after the int3 */
        __asm__ volatile("lea 2f(%%rip), %%rax\n\tmov %%rax, %0\n\t"
                         "mov %%rax, %1\n\t"
                         "mov %%rsp, %2\n\tmov %3, %%rbx\n\tbt $0, %4\n\t"
                         "int3\n2:"
                         : "=m"(want_rip), "=m"(resume_rip), "=m"(want_rsp)
                         : "r"(magic), "r"(cf)
                         : "rax", "rbx", "cc", "memory");
        break;
    }
}

static void *storm(void *arg)
{
    long id = (long)arg;
    long result[2];
    pthread_barrier_wait(&start_line);
    for (long i = 0; i < faults; i++)
        fault_once(0x5eed0000u + (uint64_t)id * 0x10000 + (uint64_t)i, (uint64_t)(id & 1),
                   0x100 + (uintptr_t)id * 0x40);
    result[0] = wrong;
    result[1] = seen;
    long *out = malloc(sizeof result);
    memcpy(out, result, sizeof result);
    return out;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    kind = !strcmp(argv[1], "ud2") ? UD2 : !strcmp(argv[1], "segv") ? SEGV : INT3;
    int threads = atoi(argv[2]);
    faults = atol(argv[3]);
    struct sigaction sa = {.sa_sigaction = handler, .sa_flags = SA_SIGINFO};
    sigaction(SIGILL, &sa, NULL);
    sigaction(SIGSEGV, &sa, NULL);
    sigaction(SIGTRAP, &sa, NULL);
    pthread_t t[threads];
    pthread_barrier_init(&start_line, NULL, (unsigned)threads);
    for (long i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, storm, (void *)i);
    long wrong_total = 0, seen_total = 0;
    for (int i = 0; i < threads; i++) {
        long *r;
        pthread_join(t[i], (void **)&r);
        wrong_total += r[0];
        seen_total += r[1];
        free(r);
    }
    printf("%s: %d threads, %ld faults handled, %ld with another thread's state\n", argv[1],
           threads, seen_total, wrong_total);
    return wrong_total != 0;
}
