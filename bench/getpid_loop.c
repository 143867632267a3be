/* Syscall cost: N getpid system calls (argv[1], default 1000), through glibc's getpid()
 * (a `mov $39,%eax; syscall` site karn's fast transport patches), or with argv[2] "raw"
 * through glibc's syscall() (a windowless site: the number from a register). The
 * per-call cost is taken from the difference between a large and a small N, which removes
 * start-up. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000;
    int raw = argc > 2 && strcmp(argv[2], "raw") == 0;
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += raw ? syscall(SYS_getpid) : getpid();
    printf("%ld\n", sum != 0);
    return 0;
}
