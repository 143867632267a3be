/* N iterations of write, read, fstat and lseek on /dev/null (argv[1]): the calls of a
 * file-serving loop, through the C library's own wrappers. Built with gcc (glibc: window
 * and short sites) and musl-gcc (musl: read and write through __syscall_cp_c's windowless
 * site, fstat and lseek inline with arguments set between the number and the syscall).
 * Prints microseconds per iteration (start-up excluded). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 5000;
    int fd = open("/dev/null", O_RDWR);
    char byte = 0;
    struct stat st;
    long bad = fd < 0;
    double start = now_us();
    for (long i = 0; i < n; i++) {
        bad += write(fd, &byte, 1) != 1;
        bad += read(fd, &byte, 1) != 0;
        bad += fstat(fd, &st) != 0;
        bad += lseek(fd, 0, SEEK_SET) != 0;
    }
    double us = (now_us() - start) / n;
    if (bad)
        return 1;
    printf("%.3f\n", us);
    return 0;
}
