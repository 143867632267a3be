/* Futex waits that spin in karn's stub before they block (docs/design/fast-syscalls.md):
 * every waiter is woken exactly once and every wake counts the waiters it woke, as
 * natively; each call goes through one `mov $202,%eax; syscall` site (patched). Modes:
 * `wake` (N waiters, FUTEX_WAKE of 1 until all are counted), `broadcast` (FUTEX_WAKE of
 * INT_MAX), `bitset` (WAIT_BITSET/WAKE_BITSET: a wake reaches only its bitset's waiters),
 * `requeue` (CMP_REQUEUE counts every waiter, woken or moved), `signal` (a signal handled
 * by a waiting thread; SA_RESTART: the wait goes on until woken), `pingpong` (two threads
 * handing a turn over through one word), `mapped` (pingpong with a file mapped read-only
 * and MAP_SHARED, as glibc maps its gconv cache: no memory other processes write). */
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <x86intrin.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "futex_site.h"

#define WAITERS 4

static unsigned int word, word2;
static int ready, returned, handled;
static long results[WAITERS];
static const char *mode;

static void *waiter(void *arg)
{
    long i = (long)arg;
    __atomic_add_fetch(&ready, 1, __ATOMIC_SEQ_CST);
    long r;
    if (!strcmp(mode, "bitset"))
        r = futex_site(&word, FUTEX_WAIT_BITSET_PRIVATE, 0, NULL, NULL, i % 2 ? 2 : 1);
    else
        r = futex_site(&word, FUTEX_WAIT_PRIVATE, 0, NULL, NULL, 0);
    results[i] = r;
    __atomic_add_fetch(&returned, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

/* Wait without a system call (a sched_yield would take karn's exit path while the
 * waiters spin in their stubs). */
static void relax(void)
{
    __builtin_ia32_pause();
}

/* Wake until `want` waiters are counted; the counts' sum is exact (never above want). */
static long wake_all(unsigned int *addr, long op, long count, long bitset, long want)
{
    long woken = 0;
    while (woken < want) {
        long r = futex_site(addr, op, count, NULL, NULL, bitset);
        if (r < 0)
            return r;
        woken += r;
        if (woken < want)
            relax();
    }
    return woken;
}

/* Two threads handing a turn back and forth through one word: no hand-over may be lost
 * (a lost wake-up hangs both). */
#define ROUNDS 3000
static unsigned int turn;

static void hand_over(unsigned int me, unsigned int other)
{
    for (int i = 0; i < ROUNDS; i++) {
        while (__atomic_load_n(&turn, __ATOMIC_SEQ_CST) != me)
            futex_site(&turn, FUTEX_WAIT_PRIVATE, other, NULL, NULL, 0);
        __atomic_store_n(&turn, other, __ATOMIC_SEQ_CST);
        futex_site(&turn, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    }
}

static void *pong(void *arg)
{
    (void)arg;
    hand_over(1, 0);
    return NULL;
}

static void on_usr1(int sig)
{
    (void)sig;
    __atomic_add_fetch(&handled, 1, __ATOMIC_SEQ_CST);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    mode = argv[1];
    if (!strcmp(mode, "pingpong") || !strcmp(mode, "mapped")) {
        if (!strcmp(mode, "mapped")) {
            int fd = open("/proc/self/exe", O_RDONLY);
            if (fd < 0 || mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED)
                return 3;
            close(fd);
        }
        futex_site(&word2, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
        pthread_t t;
        pthread_create(&t, NULL, pong, NULL);
        hand_over(0, 1);
        pthread_join(t, NULL);
        printf("%s: %d rounds\n", mode, ROUNDS);
        return 0;
    }
    int n = !strcmp(mode, "signal") ? 1 : WAITERS;
    if (!strcmp(mode, "signal")) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1;
        sa.sa_flags = SA_RESTART;
        sigaction(SIGUSR1, &sa, NULL);
    }
    /* the site is patched at its first call (karn): the waits then go through the stub */
    futex_site(&word2, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    pthread_t t[WAITERS];
    for (long i = 0; i < n; i++)
        pthread_create(&t[i], NULL, waiter, (void *)i);
    while (__atomic_load_n(&ready, __ATOMIC_SEQ_CST) < n)
        relax();
    long woken = 0, extra;
    if (!strcmp(mode, "wake")) {
        woken = wake_all(&word, FUTEX_WAKE_PRIVATE, 1, 0, n);
    } else if (!strcmp(mode, "broadcast")) {
        woken = wake_all(&word, FUTEX_WAKE_PRIVATE, INT_MAX, 0, n);
    } else if (!strcmp(mode, "bitset")) {
        woken = wake_all(&word, FUTEX_WAKE_BITSET_PRIVATE, INT_MAX, 2, n / 2);
        printf("bitset 2 woke %ld; returned before the other wake: %d\n", woken,
               __atomic_load_n(&returned, __ATOMIC_SEQ_CST) <= n / 2);
        woken += wake_all(&word, FUTEX_WAKE_BITSET_PRIVATE, INT_MAX, 1, n - n / 2);
    } else if (!strcmp(mode, "requeue")) {
        /* waiters not yet waiting are not counted: requeue until all were */
        while (woken < n) {
            long r = futex_site(&word, FUTEX_CMP_REQUEUE_PRIVATE, 0, (void *)(long)INT_MAX,
                                &word2, 0);
            if (r < 0)
                return 1;
            woken += r;
            sched_yield();
        }
        /* those moved are woken on word2; one spinning in the guest returned (karn) */
        while (__atomic_load_n(&returned, __ATOMIC_SEQ_CST) < n) {
            futex_site(&word2, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
            sched_yield();
        }
    } else if (!strcmp(mode, "signal")) {
        while (__atomic_load_n(&handled, __ATOMIC_SEQ_CST) == 0) {
            pthread_kill(t[0], SIGUSR1);
            sched_yield();
        }
        woken = wake_all(&word, FUTEX_WAKE_PRIVATE, 1, 0, n);
    } else {
        return 2;
    }
    for (long i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    extra = futex_site(&word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    int zeros = 0;
    for (long i = 0; i < n; i++)
        zeros += results[i] == 0;
    printf("%s: counted %ld of %d, each wait returned 0: %d, a later wake woke %ld\n", mode,
           woken, n, zeros == n, extra);
    return 0;
}
