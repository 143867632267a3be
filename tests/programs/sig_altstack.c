/* sigaltstack: an SA_ONSTACK handler runs on the alternate stack (and sees SS_ONSTACK),
 * one without SA_ONSTACK does not, also in a second thread with its own alternate stack.
 * Usage: sig_altstack [overflow]: a stack overflow (needs a guard below the stack) is
 * caught by a SIGSEGV handler on the alternate stack. */
#include "karntest.h"
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <unistd.h>

static char *alt;
static size_t alt_size = 1 << 16;
static volatile int on_alt, ss_onstack;
static sigjmp_buf env;

static void where(int sig)
{
    (void)sig;
    char probe;
    stack_t cur;
    on_alt = (uintptr_t)&probe >= (uintptr_t)alt && (uintptr_t)&probe < (uintptr_t)alt + alt_size;
    sigaltstack(NULL, &cur);
    ss_onstack = (cur.ss_flags & SS_ONSTACK) != 0;
}

static void overflow_handler(int sig)
{
    where(sig);
    siglongjmp(env, 1);
}

static int depth(int n)
{
    volatile char pad[1024];
    pad[0] = (char)n;
    return n <= 0 ? pad[0] : depth(n + 1) + pad[0];
}

static void *thread_main(void *arg)
{
    (void)arg;
    stack_t q;
    sigaltstack(NULL, &q);
    printf("new thread: alt stack inherited %s\n", q.ss_flags & SS_DISABLE ? "no" : "yes");
    alt = malloc(alt_size);
    stack_t ss = {.ss_sp = alt, .ss_size = alt_size, .ss_flags = 0};
    MUST(sigaltstack(&ss, NULL) == 0);
    raise(SIGUSR1); /* to this thread */
    printf("thread SA_ONSTACK handler: on its alt stack %s, SS_ONSTACK %s\n",
           on_alt ? "yes" : "no", ss_onstack ? "yes" : "no");
    return NULL;
}

int main(int argc, char **argv)
{
    alt = malloc(alt_size);
    stack_t ss = {.ss_sp = alt, .ss_size = alt_size, .ss_flags = 0};
    MUST(sigaltstack(&ss, NULL) == 0);
    stack_t q;
    MUST(sigaltstack(NULL, &q) == 0);
    printf("query: size right %s, flags %d\n", q.ss_size == alt_size ? "yes" : "no", q.ss_flags);

    struct sigaction sa = {0};
    sa.sa_handler = where;
    sa.sa_flags = SA_ONSTACK;
    MUST(sigaction(SIGUSR1, &sa, NULL) == 0);
    sa.sa_flags = 0;
    MUST(sigaction(SIGUSR2, &sa, NULL) == 0);

    raise(SIGUSR1);
    printf("SA_ONSTACK handler: on alt stack %s, SS_ONSTACK %s\n", on_alt ? "yes" : "no",
           ss_onstack ? "yes" : "no");
    raise(SIGUSR2);
    printf("plain handler: on alt stack %s, SS_ONSTACK %s\n", on_alt ? "yes" : "no",
           ss_onstack ? "yes" : "no");

    char *main_alt = alt;
    pthread_t t;
    MUST(pthread_create(&t, NULL, thread_main, NULL) == 0);
    pthread_join(t, NULL);
    printf("main again: alt stack kept %s\n", sigaltstack(NULL, &q) == 0 && q.ss_sp == main_alt ? "yes" : "no");
    alt = main_alt;
    if (argc < 2 || strcmp(argv[1], "overflow") != 0)
        return 0;

    sa.sa_handler = overflow_handler;
    sa.sa_flags = SA_ONSTACK;
    MUST(sigaction(SIGSEGV, &sa, NULL) == 0);
    if (sigsetjmp(env, 1) == 0)
        printf("no overflow?! %d\n", depth(1));
    printf("stack overflow: caught on alt stack %s\n", on_alt ? "yes" : "no");
    MUST(sigaltstack(NULL, &q) == 0);
    printf("after: flags %d\n", q.ss_flags);
    return 0;
}
