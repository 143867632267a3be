/* A thread spins in user mode while the main thread sleeps 10 ms N times and measures
 * each sleep: how late a sleeper gets the CPU back from a spinner. stdout: "sleeps N";
 * stderr: the median and the worst sleep in microseconds (times vary: not compared). */
#include "karntest.h"
#include <pthread.h>
#include <time.h>

static volatile int stop;

static void *spinner(void *arg) {
    (void)arg;
    while (!stop)
        ;
    return NULL;
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 50;
    if (n < 1 || n > 10000)
        n = 50;
    double *took = calloc(n, sizeof *took);
    MUST(took != NULL);
    pthread_t t;
    MUST(pthread_create(&t, NULL, spinner, NULL) == 0);
    struct timespec ten = {0, 10000000};
    for (int i = 0; i < n; i++) {
        double t0 = now_us();
        nanosleep(&ten, NULL);
        took[i] = now_us() - t0;
    }
    stop = 1;
    MUST(pthread_join(t, NULL) == 0);
    qsort(took, n, sizeof *took, by_value);
    printf("sleeps %d\n", n);
    fprintf(stderr, "sleep_us median %.0f max %.0f\n", took[n / 2], took[n - 1]);
    return 0;
}
