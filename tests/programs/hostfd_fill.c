/* Fill the monitor's host fds (tests/test_resource_limits.py): sockets until the host
 * says EMFILE (pairs first, then single sockets for the last free fds), hold them while
 * the monitor's limit watch runs a few times, then give them back. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    int sv[2], s, last = 2;
    while (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0)
        last = sv[1];
    while ((s = socket(AF_UNIX, SOCK_STREAM, 0)) >= 0)
        last = s;
    int err = errno;
    struct timespec ts = {1, 500000000}; /* the watch checks every 0.25 s */
    nanosleep(&ts, NULL);
    for (int fd = 3; fd <= last; fd++)
        close(fd);
    printf("sockets until: %s\n", strerror(err));
    return 0;
}
