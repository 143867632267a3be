/* Synchronous faults caught by handlers on the faulting thread.
 * Usage: sig_fault [protection]
 * default: a SIGSEGV handler that siglongjmps out (twice: a NULL-page write and a read of
 *   a low address), SA_SIGINFO fields (si_signo, si_code, si_addr) for each, a
 *   non-canonical address (SI_KERNEL), SIGFPE (FPE_INTDIV), SIGILL (ILL_ILLOPN at the
 *   ud2), and SIGTRAP from int3 with a handler that reads and changes a register in the
 *   ucontext and returns (rt_sigreturn resumes with the changed value); also a fault in
 *   a second thread goes to that thread.
 * protection: faults that need the MMU to enforce mappings: a read of an unmapped page
 *   (SEGV_MAPERR) and a write to a PROT_READ page (SEGV_ACCERR), fixed by mprotect in a
 *   handler that returns. */
#include "karntest.h"
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static sigjmp_buf env;
static volatile sig_atomic_t hits;
static siginfo_t last;
static char *page;
static long fault_tid;

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    hits++;
    last = *si;
    fault_tid = syscall(SYS_gettid);
    siglongjmp(env, sig);
}

static void show(const char *what, int jumped, void *want_addr)
{
    sigset_t now;
    sigprocmask(SIG_SETMASK, NULL, &now);
    printf("%s: jumped with %d, hits %d, si_signo %d, si_code %d, si_addr %s, "
           "SIGSEGV blocked after longjmp: %s\n",
           what, jumped, (int)hits, last.si_signo, last.si_code,
           last.si_addr == want_addr ? "right" : "WRONG",
           sigismember(&now, SIGSEGV) ? "yes" : "no");
}

static void on_trap(int sig, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    (void)sig;
    last = *si;
    hits++;
    printf("SIGTRAP handler: rax in ucontext %#llx\n", (unsigned long long)uc->uc_mcontext.gregs[REG_RAX]);
    uc->uc_mcontext.gregs[REG_RAX] = 0x5678;
}

static void on_fault_fix(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    hits++;
    last = *si;
    mprotect(page, 4096, PROT_READ | PROT_WRITE);
}

static void *thread_fault(void *arg)
{
    (void)arg;
    long me = syscall(SYS_gettid);
    if (sigsetjmp(env, 1) == 0)
        *(volatile int *)32 = 1;
    printf("fault in a thread: handled on that thread %s\n", fault_tid == me ? "yes" : "no");
    return NULL;
}

static void protection(void)
{
    page = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(page != MAP_FAILED);
    MUST(munmap(page + 4096, 4096) == 0);
    volatile int *unmapped = (volatile int *)(page + 4096 + 24);
    int j = sigsetjmp(env, 1);
    if (j == 0)
        (void)*unmapped;
    show("unmapped read", j, (void *)unmapped);
    j = sigsetjmp(env, 1);
    if (j == 0)
        page[100] = 1;
    show("read-only write", j, page + 100);

    struct sigaction sa = {0};
    sa.sa_sigaction = on_fault_fix;
    sa.sa_flags = SA_SIGINFO;
    MUST(sigaction(SIGSEGV, &sa, NULL) == 0);
    page[200] = 42;
    printf("handler returned: page[200] = %d, hits %d, si_code %d, si_addr %s\n", page[200],
           (int)hits, last.si_code, last.si_addr == page + 200 ? "right" : "WRONG");
}

int main(int argc, char **argv)
{
    struct sigaction sa = {0};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    MUST(sigaction(SIGSEGV, &sa, NULL) == 0);
    MUST(sigaction(SIGFPE, &sa, NULL) == 0);
    MUST(sigaction(SIGILL, &sa, NULL) == 0);
    MUST(sigaction(SIGBUS, &sa, NULL) == 0);
    if (argc > 1 && strcmp(argv[1], "protection") == 0) {
        protection();
        return 0;
    }

    int j = sigsetjmp(env, 1);
    if (j == 0)
        *(volatile int *)16 = 5;
    show("null write", j, (void *)16);

    j = sigsetjmp(env, 1);
    if (j == 0)
        (void)*(volatile int *)0x1238;
    show("low read", j, (void *)0x1238);

    j = sigsetjmp(env, 1);
    if (j == 0)
        (void)*(volatile long *)0x8000000000001000UL;
    show("non-canonical read", j, NULL);

    volatile int zero = 0, num = 7;
    j = sigsetjmp(env, 1);
    if (j == 0)
        printf("no fault: %d\n", num / zero);
    printf("divide: jumped with %d, si_signo %d, si_code %d\n", j, last.si_signo, last.si_code);

    void *ud2_at;
    __asm__ volatile("lea 1f(%%rip), %0" : "=r"(ud2_at));
    j = sigsetjmp(env, 1);
    if (j == 0)
        __asm__ volatile("1: ud2");
    printf("ud2: jumped with %d, si_signo %d, si_code %d, si_addr %s\n", j, last.si_signo,
           last.si_code, last.si_addr == ud2_at ? "right" : "WRONG");

    pthread_t t;
    MUST(pthread_create(&t, NULL, thread_fault, NULL) == 0);
    pthread_join(t, NULL);

    sa.sa_sigaction = on_trap;
    MUST(sigaction(SIGTRAP, &sa, NULL) == 0);
    long rax = 0x1234;
    __asm__ volatile("int3" : "+a"(rax));
    printf("after int3: rax %#lx, si_signo %d, si_code %d, hits %d\n", rax, last.si_signo,
           last.si_code, (int)hits);
    return 0;
}
