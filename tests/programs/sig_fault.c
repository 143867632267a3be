/* Synchronous faults caught by handlers: a SIGSEGV handler that siglongjmps out (twice,
 * so the mask saved by sigsetjmp is restored each time), SA_SIGINFO fields of a fault
 * (si_signo, si_code, si_addr) for an unmapped read and a write to a read-only page,
 * a SIGFPE handler, and a handler that fixes the fault and returns (via sigreturn). */
#include "karntest.h"
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

static sigjmp_buf env;
static volatile sig_atomic_t hits;
static siginfo_t last;
static char *page;

static void on_fault(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    hits++;
    last = *si;
    siglongjmp(env, sig);
}

static void on_fault_fix(int sig, siginfo_t *si, void *uc)
{
    (void)sig;
    (void)uc;
    hits++;
    last = *si;
    /* make the page writable and return: the write is retried and succeeds */
    mprotect(page, 4096, PROT_READ | PROT_WRITE);
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

int main(void)
{
    struct sigaction sa = {0};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    MUST(sigaction(SIGSEGV, &sa, NULL) == 0);
    MUST(sigaction(SIGFPE, &sa, NULL) == 0);
    MUST(sigaction(SIGBUS, &sa, NULL) == 0);

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

    volatile int *null = (volatile int *)16;
    j = sigsetjmp(env, 1);
    if (j == 0)
        *null = 5;
    show("null write", j, (void *)16);

    volatile int zero = 0, num = 7;
    j = sigsetjmp(env, 1);
    if (j == 0)
        printf("no fault: %d\n", num / zero);
    printf("divide: jumped with %d, si_signo %d, si_code %d\n", j, last.si_signo, last.si_code);

    sa.sa_sigaction = on_fault_fix;
    MUST(sigaction(SIGSEGV, &sa, NULL) == 0);
    page[200] = 42;
    printf("handler returned: page[200] = %d, hits %d, si_code %d, si_addr %s\n", page[200],
           (int)hits, last.si_code, last.si_addr == page + 200 ? "right" : "WRONG");
    return 0;
}
