/* A signal frame that says "inside a head the patcher is about to cover": thread A runs
   musl's __clone tail (`sub $8,%rsi; mov %rcx,(%rsi); syscall`, a KNOWN_HEADS head) with a
   bad stack pointer and faults at the store, inside the 5 bytes the head's jmp rel32 will
   take; while its SIGSEGV handler waits, thread B's getpid calls through the same code get
   the head patched. The handler then points rsi at a buffer and returns to the store,
   which must be made, and the call after it (under karn the thread goes back to the head,
   `sub` undone, instead of into the jmp's bytes). Prints what the call and the store did,
   and "ok". */
#include "karntest.h"
#include "musl_clone.h"

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

static long slot_a[4], slot_b[4];
static volatile int faulted, b_done;

static void on_segv(int sig, siginfo_t *si, void *context) {
    (void)sig;
    (void)si;
    if (faulted++) {
        printf("faulted again\n");
        fflush(stdout);
        _exit(1);
    }
    while (!b_done)
        ;
    ((ucontext_t *)context)->uc_mcontext.gregs[REG_RSI] = (long)&slot_a[1];
}

static void *thread_b(void *arg) {
    (void)arg;
    while (!faulted)
        ;
    for (int i = 0; i < 200; i++)
        MUST(musl_clone((char *)&slot_b[4], SYS_getpid) == getpid());
    b_done = 1;
    return NULL;
}

int main(void) {
    struct sigaction sa = {0};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    MUST(sigaction(SIGSEGV, &sa, NULL) == 0);
    for (int i = 0; i < 100; i++) /* the process warm: its sites are patched from now on */
        getppid();
    pthread_t b;
    MUST(pthread_create(&b, NULL, thread_b, NULL) == 0);
    long got = musl_clone((char *)16, SYS_getpid); /* stores at 8: SIGSEGV */
    MUST(pthread_join(b, NULL) == 0);
    printf("call made: %s, stored: %s, faults: %d\nok\n", got == getpid() ? "yes" : "no",
           slot_a[1] == 0x1234 ? "yes" : "no", faulted);
    return 0;
}
