/* Mutex/condvar ping-pong between two threads: ROUNDS hand-overs each way.
 * Usage: thr_pingpong [ROUNDS] [--time]. Prints the final counters (deterministic); with
 * --time also "ns_per_round N" on stderr (for bench/threads.py). */
#include "karntest.h"
#include <pthread.h>
#include <time.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long turn;           /* 0: main's turn, 1: the other thread's */
static long rounds, pings, pongs;

static void *ponger(void *arg)
{
    (void)arg;
    for (long i = 0; i < rounds; i++) {
        pthread_mutex_lock(&mu);
        while (turn != 1)
            pthread_cond_wait(&cv, &mu);
        pongs++;
        turn = 0;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
    }
    return (void *)pongs;
}

int main(int argc, char **argv)
{
    rounds = argc > 1 ? atol(argv[1]) : 1000;
    int timed = argc > 2 && strcmp(argv[2], "--time") == 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t t;
    MUST(pthread_create(&t, NULL, ponger, NULL) == 0);
    for (long i = 0; i < rounds; i++) {
        pthread_mutex_lock(&mu);
        while (turn != 0)
            pthread_cond_wait(&cv, &mu);
        pings++;
        turn = 1;
        pthread_cond_signal(&cv);
        pthread_mutex_unlock(&mu);
    }
    pthread_mutex_lock(&mu);
    while (turn != 0)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    void *ret;
    MUST(pthread_join(t, &ret) == 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("rounds %ld pings %ld pongs %ld returned %ld\n", rounds, pings, pongs, (long)ret);
    if (timed) {
        long ns = (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec);
        fprintf(stderr, "ns_per_round %ld\n", rounds ? ns / rounds : 0);
    }
    return pings == rounds && pongs == rounds ? 0 : 1;
}
