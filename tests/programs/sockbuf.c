/* Socket and pipe buffers a guest fills (tests/test_resource_limits.py).
 *
 *   sockbuf pairs N   N AF_UNIX stream pairs, each asked for SO_SNDBUF = 4 MiB and
 *                     filled until EAGAIN; prints the first pair's SO_SNDBUF and the
 *                     bytes queued in all, then waits for a line on stdin.
 *   sockbuf pipes N   N pipes, each asked for F_SETPIPE_SZ = 1 MiB and filled; prints
 *                     how many got it (and why not), the bytes queued, then waits.
 *   sockbuf bigpipe   F_SETPIPE_SZ beyond fs.pipe-max-size (2 MiB).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char buf[1 << 16];

static long fill(int fd) {
    long total = 0, n;
    while ((n = write(fd, buf, sizeof buf)) > 0)
        total += n;
    return total;
}

static void wait_line(void) {
    char line[16];
    printf("ready\n");
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        exit(3);
}

int main(int argc, char **argv) {
    memset(buf, 'z', sizeof buf);
    if (argc == 2 && !strcmp(argv[1], "bigpipe")) {
        int p[2];
        if (pipe(p) < 0)
            return 2;
        int r = fcntl(p[1], F_SETPIPE_SZ, 2 << 20);
        printf("F_SETPIPE_SZ 2 MiB: %s\n", r < 0 ? strerror(errno) : "granted");
        return 0;
    }
    if (argc != 3)
        return 2;
    int count = atoi(argv[2]);
    long total = 0;
    if (!strcmp(argv[1], "pairs")) {
        int first = -1;
        for (int i = 0; i < count; i++) {
            int sv[2], size = 4 << 20;
            if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0) {
                printf("socketpair %d: %s\n", i, strerror(errno));
                return 1;
            }
            if (setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &size, sizeof size) < 0) {
                printf("SO_SNDBUF %d: %s\n", i, strerror(errno));
                return 1;
            }
            if (first < 0)
                first = sv[0];
            total += fill(sv[0]);
        }
        int got = 0;
        socklen_t len = sizeof got;
        getsockopt(first, SOL_SOCKET, SO_SNDBUF, &got, &len);
        printf("SO_SNDBUF %d\n", got);
    } else if (!strcmp(argv[1], "pipes")) {
        int granted = 0, err = 0;
        for (int i = 0; i < count; i++) {
            int p[2];
            if (pipe2(p, O_NONBLOCK) < 0) {
                printf("pipe %d: %s\n", i, strerror(errno));
                return 1;
            }
            if (fcntl(p[1], F_SETPIPE_SZ, 1 << 20) < 0)
                err = errno;
            else
                granted++;
            total += fill(p[1]);
        }
        printf("1 MiB granted to %d pipes%s%s\n", granted, err ? ", then: " : "",
               err ? strerror(err) : "");
    } else {
        return 2;
    }
    printf("queued %ld KiB\n", total >> 10);
    wait_line();
    return 0;
}
