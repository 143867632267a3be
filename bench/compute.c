/* Compute-bound benchmark: a fixed integer hash loop (argv[1] rounds, default 300M),
 * no system calls inside. Prints the result and the loop's own time in ns measured with
 * CLOCK_MONOTONIC, so start-up can be left out of the ratio. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int main(int argc, char **argv)
{
    uint64_t rounds = argc > 1 ? strtoull(argv[1], NULL, 10) : 300000000ULL;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (uint64_t i = 0; i < rounds; i++) {
        h ^= i;
        h *= 0x100000001b3ULL;
        h ^= h >> 29;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    long long ns = (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
    printf("%016llx %lld\n", (unsigned long long)h, ns);
    return 0;
}
