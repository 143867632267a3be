/* Robust mutexes: a thread that exits holding one leaves it to the next locker with
 * EOWNERDEAD (the kernel walks the dead thread's robust list); after
 * pthread_mutex_consistent it works normally; without that it becomes ENOTRECOVERABLE.
 * Also: a non-robust error-checking mutex reports EDEADLK / EPERM. */
#include "karntest.h"
#include <pthread.h>

static pthread_mutex_t m1, m2;

static const char *name(int r)
{
    switch (r) {
    case 0: return "0";
    case EOWNERDEAD: return "EOWNERDEAD";
    case ENOTRECOVERABLE: return "ENOTRECOVERABLE";
    case EBUSY: return "EBUSY";
    case EDEADLK: return "EDEADLK";
    case EPERM: return "EPERM";
    default: return errno_name(r);
    }
}

static void *die_holding(void *arg)
{
    pthread_mutex_lock(arg);
    return NULL; /* thread exits with the mutex locked */
}

static void *idle(void *arg)
{
    return arg;
}

static void init_robust(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    MUST(pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) == 0);
    MUST(pthread_mutex_init(m, &a) == 0);
}

int main(void)
{
    pthread_t t;
    init_robust(&m1);
    init_robust(&m2);

    MUST(pthread_create(&t, NULL, die_holding, &m1) == 0);
    pthread_join(t, NULL);
    printf("lock after owner died: %s\n", name(pthread_mutex_lock(&m1)));
    printf("consistent: %s\n", name(pthread_mutex_consistent(&m1)));
    printf("unlock: %s\n", name(pthread_mutex_unlock(&m1)));
    printf("lock again: %s\n", name(pthread_mutex_lock(&m1)));
    printf("unlock: %s\n", name(pthread_mutex_unlock(&m1)));

    /* thread starts before the next: under karn's fast transport the start's
     * set_robust_list site is patched at its second exit once the process has made 32
     * exits, then answered in the guest (tests/test_fast_syscalls.py IDLE_THREADS) */
    for (int i = 0; i < 8; i++) {
        MUST(pthread_create(&t, NULL, idle, NULL) == 0);
        pthread_join(t, NULL);
    }
    MUST(pthread_create(&t, NULL, die_holding, &m2) == 0);
    pthread_join(t, NULL);
    printf("trylock after owner died: %s\n", name(pthread_mutex_trylock(&m2)));
    printf("unlock without consistent: %s\n", name(pthread_mutex_unlock(&m2)));
    printf("lock now: %s\n", name(pthread_mutex_lock(&m2)));

    pthread_mutex_t ec;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    pthread_mutex_init(&ec, &a);
    printf("errorcheck unlock unlocked: %s\n", name(pthread_mutex_unlock(&ec)));
    pthread_mutex_lock(&ec);
    printf("errorcheck relock: %s\n", name(pthread_mutex_lock(&ec)));
    return 0;
}
