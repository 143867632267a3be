/* Signal masks changed without leaving the guest (the fast transport's stub answers
 * rt_sigprocmask): Linux's results for every argument, delivery before the call that
 * unblocks returns, and no signal lost when one arrives while the mask changes.
 *
 * sigmask_race [ROUNDS]
 *   - the calls' results: how/size/pointer errors, SIGKILL and SIGSTOP never blocked,
 *     the old mask written, a NULL set leaving the mask alone;
 *   - a pending signal is delivered before sigprocmask(SIG_UNBLOCK) returns;
 *   - race: a thread blocks and unblocks SIGUSR1 in a loop while the main thread sends it
 *     ROUNDS signals (tgkill) and SIGUSR2 to the process (kill; the main thread blocks it),
 *     each time waiting for the handler: a lost signal shows as a round that never ends
 *     (reported after 10 s, not hung). */
#include "karntest.h"
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>

static atomic_int usr1_seen, usr2_seen;
static atomic_int stop;
static pid_t worker_tid;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        atomic_fetch_add(&usr1_seen, 1);
    else
        atomic_fetch_add(&usr2_seen, 1);
}

static long raw_mask(int how, const void *set, void *old, long size)
{
    return syscall(SYS_rt_sigprocmask, how, set, old, size);
}

static void results(void)
{
    unsigned long all = ~0UL, now = 0, old = 0, none = 0;
    raw_mask(SIG_SETMASK, &none, NULL, 8);  /* whatever the parent left blocked */
    SHOW("bad how", raw_mask(7, &all, NULL, 8));
    SHOW("bad size", raw_mask(SIG_BLOCK, &all, NULL, 4));
    SHOW("bad set pointer", raw_mask(SIG_BLOCK, (void *)8, NULL, 8));
    SHOW("bad old pointer", raw_mask(SIG_BLOCK, &all, (void *)8, 8));
    SHOW("bad how with no set", raw_mask(7, NULL, &now, 8));
    SHOW("block all", raw_mask(SIG_BLOCK, &all, &old, 8));
    raw_mask(SIG_BLOCK, NULL, &now, 8);
    printf("old mask was 0: %s\n", old == 0 ? "yes" : "no");
    printf("SIGKILL blocked: %s, SIGSTOP blocked: %s, SIGUSR1 blocked: %s\n",
           now & (1UL << (SIGKILL - 1)) ? "yes" : "no",
           now & (1UL << (SIGSTOP - 1)) ? "yes" : "no",
           now & (1UL << (SIGUSR1 - 1)) ? "yes" : "no");
    unsigned long usr1 = 1UL << (SIGUSR1 - 1);
    raw_mask(SIG_UNBLOCK, &usr1, &old, 8);
    raw_mask(SIG_SETMASK, NULL, &now, 8);
    printf("unblock one: old == all but KILL/STOP: %s, SIGUSR1 now blocked: %s\n",
           old == (~0UL & ~((1UL << (SIGKILL - 1)) | (1UL << (SIGSTOP - 1)))) ? "yes" : "no",
           now & usr1 ? "yes" : "no");
    raw_mask(SIG_SETMASK, &none, NULL, 8);
}

static void delivered_on_return(void)
{
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    for (int i = 0; i < 100; i++) {
        MUST(sigprocmask(SIG_BLOCK, &usr1, NULL) == 0);
        int before = atomic_load(&usr1_seen);
        MUST(raise(SIGUSR1) == 0);
        sigset_t pending;
        sigpending(&pending);
        if (!sigismember(&pending, SIGUSR1) || atomic_load(&usr1_seen) != before) {
            printf("round %d: SIGUSR1 not held pending while blocked\n", i);
            return;
        }
        MUST(sigprocmask(SIG_UNBLOCK, &usr1, NULL) == 0);
        if (atomic_load(&usr1_seen) != before + 1) {  /* no other call in between */
            printf("round %d: SIGUSR1 not delivered when sigprocmask returned\n", i);
            return;
        }
    }
    printf("delivered before the unblocking call returned: 100 of 100\n");
    atomic_store(&usr1_seen, 0);
}

static void *toggler(void *arg)
{
    (void)arg;
    sigset_t usr1, usr2;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    sigprocmask(SIG_UNBLOCK, &usr2, NULL);  /* blocked by its creator: the process's
                                               SIGUSR2 is this thread's to take */
    __atomic_store_n(&worker_tid, (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
    while (!atomic_load(&stop)) {
        sigprocmask(SIG_BLOCK, &usr1, NULL);
        sigprocmask(SIG_UNBLOCK, &usr1, NULL);
    }
    return NULL;
}

static int wait_for(atomic_int *counter, int want)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (atomic_load(counter) < want) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - start.tv_sec > 10)
            return 0;
        sched_yield();
    }
    return 1;
}

static void race(int rounds)
{
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    MUST(pthread_sigmask(SIG_BLOCK, &usr2, NULL) == 0);  /* only the toggler takes it */
    pthread_t t;
    MUST(pthread_create(&t, NULL, toggler, NULL) == 0);
    while (!__atomic_load_n(&worker_tid, __ATOMIC_ACQUIRE))
        sched_yield();
    int lost1 = 0, lost2 = 0;
    for (int i = 0; i < rounds; i++) {
        syscall(SYS_tgkill, getpid(), worker_tid, SIGUSR1);
        if (!wait_for(&usr1_seen, i + 1 - lost1))
            lost1++;
        kill(getpid(), SIGUSR2);
        if (!wait_for(&usr2_seen, i + 1 - lost2))
            lost2++;
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    printf("race: %d rounds, SIGUSR1 lost %d, SIGUSR2 lost %d\n", rounds, lost1, lost2);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 200;
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    MUST(sigaction(SIGUSR1, &sa, NULL) == 0);
    MUST(sigaction(SIGUSR2, &sa, NULL) == 0);
    results();
    delivered_on_return();
    race(rounds);
    return 0;
}
