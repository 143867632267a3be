/* isatty() of a regular file n times (default 300): glibc 2.36's tcgetattr, a window whose
 * mov straddles a cache line in Debian's libc.so.6, with no pad after it
 * (tests/test_fast_syscalls.py). Prints how many answered "not a terminal" (ENOTTY). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 300, not_tty = 0;
    int fd = open(argv[0], O_RDONLY);
    if (fd < 0)
        return 1;
    for (long i = 0; i < n; i++) {
        errno = 0;
        not_tty += !isatty(fd) && errno == ENOTTY;
    }
    printf("isatty: %ld, not a terminal %ld\n", n, not_tty);
    return 0;
}
