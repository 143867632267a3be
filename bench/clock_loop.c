/* Clock cost: N clock_gettime(CLOCK_MONOTONIC) calls through libc (argv[1], default 1000):
 * the vDSO when the runner maps one, else a system call each. Per-call cost as for
 * getpid_loop.c: the difference between a large and a small N. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000;
    struct timespec ts;
    long long sum = 0;
    for (long i = 0; i < n; i++) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        sum += ts.tv_nsec;
    }
    printf("%d\n", sum != 0);
    return 0;
}
