/* pthread_create + pthread_join of N threads (default 64) with return values, all alive
 * at once; then N more created and joined one at a time.
 * Usage: thr_join [N] [--serial-only]. */
#include "karntest.h"
#include <pthread.h>

static pthread_barrier_t barrier;

static void *square(void *arg)
{
    long i = (long)arg;
    return (void *)(i * i + 1);
}

static void *square_all_alive(void *arg)
{
    pthread_barrier_wait(&barrier); /* all N threads exist at the same time */
    return square(arg);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 64;
    int serial_only = argc > 2 && strcmp(argv[2], "--serial-only") == 0;
    long sum = 0, bad = 0;
    if (!serial_only) {
        pthread_t *t = calloc(n, sizeof *t);
        MUST(t && pthread_barrier_init(&barrier, NULL, n + 1) == 0);
        for (long i = 0; i < n; i++)
            MUST(pthread_create(&t[i], NULL, square_all_alive, (void *)i) == 0);
        pthread_barrier_wait(&barrier);
        for (long i = 0; i < n; i++) {
            void *r;
            MUST(pthread_join(t[i], &r) == 0);
            bad += (long)r != i * i + 1;
            sum += (long)r;
        }
        printf("together: %ld threads, sum %ld, wrong %ld\n", n, sum, bad);
        free(t);
    }
    sum = bad = 0;
    for (long i = 0; i < n; i++) {
        pthread_t t;
        void *r;
        MUST(pthread_create(&t, NULL, square, (void *)i) == 0);
        MUST(pthread_join(t, &r) == 0);
        bad += (long)r != i * i + 1;
        sum += (long)r;
    }
    printf("one at a time: %ld threads, sum %ld, wrong %ld\n", n, sum, bad);
    return bad != 0;
}
