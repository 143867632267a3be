/* Process exit while other threads block: a thread calls exit(N) (exit_group) while the
 * main thread waits in pthread_join and others sit in a condvar wait, a pipe read, a
 * nanosleep and a futex-less busy loop.  Usage: thr_exit [STATUS] */
#include "karntest.h"
#include <pthread.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t ready;
static int pipefd[2];
static int status = 7;

static void *condwait(void *a)
{
    (void)a;
    pthread_mutex_lock(&mu);
    pthread_barrier_wait(&ready);
    for (;;)
        pthread_cond_wait(&cv, &mu);
    return NULL;
}

static void *reader(void *a)
{
    (void)a;
    char c;
    pthread_barrier_wait(&ready);
    read(pipefd[0], &c, 1);
    return NULL;
}

static void *sleeper(void *a)
{
    (void)a;
    pthread_barrier_wait(&ready);
    for (;;) {
        struct timespec ts = {100, 0};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void *exiter(void *a)
{
    (void)a;
    pthread_barrier_wait(&ready);
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    printf("thread calls exit(%d)\n", status);
    fflush(stdout);
    exit(status);
}

int main(int argc, char **argv)
{
    if (argc > 1)
        status = atoi(argv[1]);
    MUST(pipe(pipefd) == 0);
    MUST(pthread_barrier_init(&ready, NULL, 5) == 0);
    pthread_t t[4];
    void *(*fns[4])(void *) = {condwait, reader, sleeper, exiter};
    for (int i = 0; i < 4; i++)
        MUST(pthread_create(&t[i], NULL, fns[i], NULL) == 0);
    pthread_barrier_wait(&ready);
    printf("all blocked\n");
    fflush(stdout);
    pthread_join(t[0], NULL);
    printf("join returned?!\n");
    return 1;
}
