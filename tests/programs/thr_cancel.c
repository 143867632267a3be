/* pthread_cancel: a thread blocked at a cancellation point (read on an empty pipe, in a
 * condvar wait, in nanosleep) is cancelled, its cleanup handlers run, join gives
 * PTHREAD_CANCELED; a thread with cancellation disabled finishes normally.
 * Usage: thr_cancel [read|cond_wait|nanosleep|disabled] (default: all in turn). */
#include "karntest.h"
#include <pthread.h>
#include <time.h>
#include <unistd.h>

static int pipefd[2];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t started;
static int cleanups;

static void cleanup(void *arg)
{
    __atomic_add_fetch(&cleanups, 1, __ATOMIC_SEQ_CST);
    if (arg)
        pthread_mutex_unlock(arg);
}

static void *in_read(void *arg)
{
    (void)arg;
    char c;
    pthread_cleanup_push(cleanup, NULL);
    pthread_barrier_wait(&started);
    read(pipefd[0], &c, 1);
    pthread_cleanup_pop(0);
    return (void *)1;
}

static void *in_condwait(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&mu);
    pthread_cleanup_push(cleanup, &mu);
    pthread_barrier_wait(&started);
    for (;;)
        pthread_cond_wait(&cv, &mu);
    pthread_cleanup_pop(1);
    return (void *)2;
}

static void *in_sleep(void *arg)
{
    (void)arg;
    pthread_cleanup_push(cleanup, NULL);
    pthread_barrier_wait(&started);
    for (;;) {
        struct timespec ts = {10, 0};
        nanosleep(&ts, NULL);
    }
    pthread_cleanup_pop(0);
    return (void *)3;
}

static void *disabled(void *arg)
{
    (void)arg;
    int old;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
    pthread_barrier_wait(&started);
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    return (void *)4;
}

static void run(const char *name, void *(*fn)(void *))
{
    pthread_t t;
    void *r;
    MUST(pthread_barrier_init(&started, NULL, 2) == 0);
    MUST(pthread_create(&t, NULL, fn, NULL) == 0);
    pthread_barrier_wait(&started);
    struct timespec ts = {0, 20 * 1000 * 1000}; /* let it block */
    nanosleep(&ts, NULL);
    printf("%s: cancel = %d", name, pthread_cancel(t));
    MUST(pthread_join(t, &r) == 0);
    if (r == PTHREAD_CANCELED)
        printf(", join: PTHREAD_CANCELED");
    else
        printf(", join: returned %ld", (long)r);
    printf(", cleanups so far %d\n", cleanups);
    pthread_barrier_destroy(&started);
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    struct {
        const char *name;
        void *(*fn)(void *);
    } cases[] = {{"read", in_read}, {"cond_wait", in_condwait}, {"nanosleep", in_sleep},
                 {"disabled", disabled}};
    MUST(pipe(pipefd) == 0);
    for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!only || strcmp(only, cases[i].name) == 0)
            run(cases[i].name, cases[i].fn);
    /* the mutex the condvar waiter held was released by its cleanup handler */
    printf("mutex free: %s\n", pthread_mutex_trylock(&mu) == 0 ? "yes" : "no");
    return 0;
}
