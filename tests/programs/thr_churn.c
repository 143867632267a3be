/* Thread churn: N pthread_create + pthread_join cycles one at a time, each new thread
 * checking what it starts with (its own TLS, the creator's signal mask and rounding mode,
 * a CPU-time clock of its own, a tid of its own, a signal sent to it); then detached threads exiting while
 * others are being created and joined; then N cycles more.
 * Usage: thr_churn [N] [--serial-only]. Prints counts only. */
#include "karntest.h"
#include <fenv.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define BURN_NS 10000000L /* CPU time each checked thread spends before it ends */
#define DETACHED 200

static __thread long tls_value = 7;
static __thread volatile sig_atomic_t signals_here;

struct check {
    int expect_usr2_blocked, expect_rounding;
    int tls_ok, mask_ok, rounding_ok, clock_fresh, signal_ok;
    long tid;
};

static void on_usr1(int sig)
{
    (void)sig;
    signals_here++;
}

static long thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *checked(void *arg)
{
    struct check *c = arg;
    long start = thread_cpu_ns();
    /* the threads before this one each spent BURN_NS: none of it is this one's */
    c->clock_fresh = start < BURN_NS;
    c->tls_ok = tls_value == 7;
    tls_value = 99;
    sigset_t now;
    MUST(pthread_sigmask(SIG_SETMASK, NULL, &now) == 0);
    c->mask_ok = sigismember(&now, SIGUSR2) == c->expect_usr2_blocked;
    c->rounding_ok = fegetround() == c->expect_rounding;
    fesetround(FE_UPWARD); /* this thread's own: neither its creator's nor the next one's */
    MUST(pthread_kill(pthread_self(), SIGUSR1) == 0);
    c->signal_ok = signals_here == 1;
    c->tid = syscall(SYS_gettid);
    while (thread_cpu_ns() - start < BURN_NS)
        ;
    return (void *)(c->tid + 1);
}

static long cycles(long n, const char *label)
{
    long tls = 0, mask = 0, rounding = 0, fresh = 0, sig = 0, tids = 0, results = 0;
    long last_tid = syscall(SYS_gettid);
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    for (long i = 0; i < n; i++) {
        struct check c = {.expect_usr2_blocked = (int)(i % 2),
                          .expect_rounding = i % 3 ? FE_TONEAREST : FE_DOWNWARD};
        MUST(pthread_sigmask(i % 2 ? SIG_BLOCK : SIG_UNBLOCK, &usr2, NULL) == 0);
        MUST(fesetround(c.expect_rounding) == 0);
        pthread_t t;
        void *r;
        MUST(pthread_create(&t, NULL, checked, &c) == 0);
        MUST(pthread_join(t, &r) == 0);
        tls += c.tls_ok;
        mask += c.mask_ok;
        rounding += c.rounding_ok;
        fresh += c.clock_fresh;
        sig += c.signal_ok;
        tids += c.tid != last_tid && c.tid != getpid();
        results += (long)r == c.tid + 1;
        last_tid = c.tid;
    }
    MUST(pthread_sigmask(SIG_UNBLOCK, &usr2, NULL) == 0);
    MUST(fesetround(FE_TONEAREST) == 0);
    printf("%s: %ld cycles, tls %ld, mask %ld, rounding %ld, fresh clock %ld, signal %ld, "
           "new tid %ld, result %ld\n", label, n, tls, mask, rounding, fresh, sig, tids, results);
    return tls + mask + rounding + fresh + sig + tids + results == 7 * n;
}

static sem_t finished;
static atomic_long detached_sum;

static void *detached(void *arg)
{
    atomic_fetch_add(&detached_sum, (long)arg);
    sem_post(&finished);
    return NULL;
}

static void *joined(void *arg)
{
    return (void *)((long)arg * 3);
}

/* Detached threads end while the main thread creates and joins others. */
static int overlap(void)
{
    pthread_attr_t attr;
    MUST(sem_init(&finished, 0, 0) == 0);
    MUST(pthread_attr_init(&attr) == 0);
    MUST(pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0);
    long wrong = 0;
    for (long i = 1; i <= DETACHED; i++) {
        pthread_t t;
        void *r;
        MUST(pthread_create(&t, &attr, detached, (void *)i) == 0);
        MUST(pthread_create(&t, NULL, joined, (void *)i) == 0);
        MUST(pthread_join(t, &r) == 0);
        wrong += (long)r != i * 3;
    }
    for (long i = 0; i < DETACHED; i++)
        MUST(sem_wait(&finished) == 0);
    printf("overlap: %d detached, sum %ld, joined wrong %ld\n", DETACHED,
           atomic_load(&detached_sum), wrong);
    return wrong == 0 && atomic_load(&detached_sum) == DETACHED * (DETACHED + 1) / 2;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 50;
    int serial_only = argc > 2 && strcmp(argv[2], "--serial-only") == 0;
    struct sigaction sa = {.sa_handler = on_usr1};
    MUST(sigaction(SIGUSR1, &sa, NULL) == 0);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int ok = cycles(n, "first");
    if (!serial_only) {
        ok &= overlap();
        ok &= cycles(n, "after");
    }
    return ok ? 0 : 1;
}
