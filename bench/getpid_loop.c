/* Syscall cost: N raw getpid system calls (argv[1], default 1000). The per-call cost is
 * taken from the difference between a large and a small N, which removes start-up. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000;
    long sum = 0;
    for (long i = 0; i < n; i++)
        sum += syscall(SYS_getpid);
    printf("%ld\n", sum != 0);
    return 0;
}
