/* One CPU exception of each kind karn's fault table (karn/abi/faults.py) maps, caught by a
 * SA_SIGINFO handler. For each: "CASE signo CODE addr WHERE", WHERE telling what si_addr
 * was: "insn" (the faulting instruction), "data" (the address accessed), "zero" or "other".
 * Run natively, it is what Linux makes of each exception. */
#include "karntest.h"
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>

static sigjmp_buf env;
static siginfo_t last;
void *fault_insn; /* set by the asm right before the faulting instruction */
static void *fault_data;

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    last = *si;
    siglongjmp(env, 1);
}

static void report(const char *name)
{
    const char *where = last.si_addr == NULL ? "zero"
                        : last.si_addr == fault_insn ? "insn"
                        : last.si_addr == fault_data ? "data" : "other";
    printf("%s signo %d code %d addr %s\n", name, last.si_signo, last.si_code, where);
}

#define FAULT(name, setup, body)                \
    do {                                        \
        fault_insn = fault_data = NULL;         \
        setup;                                  \
        if (sigsetjmp(env, 1) == 0) {           \
            body;                               \
            printf("%s did not fault\n", name); \
        } else {                                \
            report(name);                       \
        }                                       \
    } while (0)

int main(void)
{
    struct sigaction sa = {.sa_sigaction = on_fault, .sa_flags = SA_SIGINFO | SA_NODEFER};
    int sigs[] = {SIGSEGV, SIGILL, SIGFPE, SIGTRAP, SIGBUS};
    for (unsigned i = 0; i < sizeof sigs / sizeof *sigs; i++)
        MUST(sigaction(sigs[i], &sa, NULL) == 0);
    char *page = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(page != MAP_FAILED);

    FAULT("divide", (void)0,
          __asm__ volatile("lea 1f(%%rip), %%rax; mov %%rax, fault_insn(%%rip)\n"
                           "xor %%ecx, %%ecx; mov $1, %%eax; cltd\n"
                           "1: idiv %%ecx" ::: "rax", "rcx", "rdx", "memory"));
    FAULT("ud2", (void)0,
          __asm__ volatile("lea 1f(%%rip), %%rax; mov %%rax, fault_insn(%%rip)\n"
                           "1: ud2" ::: "rax", "memory"));
    FAULT("int3", (void)0, __asm__ volatile("int3" ::: "memory"));
    FAULT("unmapped-read", fault_data = (void *)0x10, (void)*(volatile long *)fault_data);
    FAULT("unmapped-write", fault_data = (void *)0x10, *(volatile long *)fault_data = 1);
    FAULT("unmapped-exec", fault_data = (void *)0x10, ((void (*)(void))fault_data)());
    FAULT("readonly-write", fault_data = page, *(volatile char *)fault_data = 1);
    FAULT("non-canonical", fault_data = (void *)0x8000000000001000UL,
          (void)*(volatile long *)fault_data);
    return 0;
}
