/* fcntl's signal and lease queries: F_GETSIG is 0 (SIGIO) until F_SETSIG sets it, per
 * open file description (a dup shares it, a second open does not); F_SETSIG of a number
 * past the last signal is EINVAL; F_GETLEASE with no lease is F_UNLCK. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void show(const char *what, int r)
{
    printf("%s: %d%s%s\n", what, r, r < 0 ? " " : "", r < 0 ? strerror(errno) : "");
}

int main(int argc, char **argv)
{
    (void)argc;
    int fd = open(argv[0], O_RDONLY);
    int again = open(argv[0], O_RDONLY);
    show("F_GETSIG at first", fcntl(fd, F_GETSIG));
    show("F_SETSIG SIGUSR1", fcntl(fd, F_SETSIG, SIGUSR1));
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    show("F_GETSIG", fcntl(fd, F_GETSIG) == SIGUSR1);
    show("F_GETSIG of a dup", fcntl(dup, F_GETSIG) == SIGUSR1);
    show("F_GETSIG of another open", fcntl(again, F_GETSIG));
    show("F_SETSIG 65", fcntl(fd, F_SETSIG, 65));
    show("F_SETSIG 0", fcntl(fd, F_SETSIG, 0));
    show("F_GETSIG after", fcntl(fd, F_GETSIG));
    show("F_GETLEASE is F_UNLCK", fcntl(fd, F_GETLEASE) == F_UNLCK);
    return 0;
}
