/* Two threads pass a turn back and forth N times; a thread waiting for its turn calls
 * sched_yield (no futex). With one CPU each pass needs the yield to hand the CPU over.
 * stdout: the passes; stderr: yields per pass (for the benchmark, not compared). */
#include "karntest.h"
#include <pthread.h>
#include <sched.h>

static volatile int turn;
static long passes = 2000;
static volatile long yields;

static void *player(void *arg) {
    int me = (int)(long)arg;
    for (long i = 0; i < passes; i++) {
        while (turn != me) {
            sched_yield();
            __sync_fetch_and_add(&yields, 1);
        }
        turn = !me;
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1)
        passes = atol(argv[1]);
    pthread_t t;
    MUST(pthread_create(&t, NULL, player, (void *)1L) == 0);
    player((void *)0L);
    MUST(pthread_join(t, NULL) == 0);
    printf("passes %ld each way\n", passes);
    fprintf(stderr, "yields per pass %.2f\n", (double)yields / (2.0 * passes));
    return 0;
}
