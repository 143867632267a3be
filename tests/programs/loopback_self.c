/* A guest's connections to its own listener, as the network policy must let them all in:
 * a dual-stack [::] listener; three threads connect at once, over 127.0.0.1 (blocking,
 * closed before accept), [::1] (non-blocking connect, kept open) and 127.0.0.1 again
 * on a socket the main thread made and handed over as a dup (closed before accept).
 * Then every connection is accepted and read to EOF. Output is sorted by the caller.
 *
 *   loopback_self          the above
 *   loopback_self hostpoll  R9: listen on [::]:PORT (argv[2]), print LISTENING, wait for a
 *                           line on stdin (a host process has tried to connect), then poll
 *                           and accept without blocking; then connect to itself and do it
 *                           again (the control). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int port;

static void die(const char *what) { printf("%s: %s\n", what, strerror(errno)); exit(1); }

static int dial(int fd, int family, int nonblock) {
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a4.sin_addr);
    a6.sin6_addr = in6addr_loopback;
    if (nonblock) fcntl(fd, F_SETFL, O_NONBLOCK);
    int r = family == AF_INET ? connect(fd, (void *)&a4, sizeof a4)
                              : connect(fd, (void *)&a6, sizeof a6);
    if (r && errno == EINPROGRESS) {
        struct pollfd p = {fd, POLLOUT, 0};
        int err = 0;
        socklen_t len = sizeof err;
        if (poll(&p, 1, 10000) != 1) die("poll connect");
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        errno = err;
        r = err ? -1 : 0;
        fcntl(fd, F_SETFL, 0);
    }
    return r;
}

static void *v4_closed(void *arg) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (dial(fd, AF_INET, 0)) die("connect 127.0.0.1");
    write(fd, "a", 1);
    close(fd);
    return arg;
}

static void *v6_nonblocking(void *arg) {
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (dial(fd, AF_INET6, 1)) die("connect ::1");
    write(fd, "b", 1);
    shutdown(fd, SHUT_WR);
    return arg;  /* the socket stays open */
}

static void *passed(void *arg) {
    int fd = (int)(long)arg;
    if (dial(fd, AF_INET, 0)) die("connect passed socket");
    write(fd, "c", 1);
    close(fd);
    return NULL;
}

static int listener(int fixed) {
    int l = socket(AF_INET6, SOCK_STREAM, 0), off = 0;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(fixed)};
    setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 16)) die("listen");
    socklen_t len = sizeof a;
    getsockname(l, (void *)&a, &len);
    port = ntohs(a.sin6_port);
    return l;
}

static void poll_and_accept(int l, const char *when) {
    struct pollfd p = {l, POLLIN, 0};
    int r = poll(&p, 1, 2000);
    printf("%s: poll %d revents %#x\n", when, r, p.revents);
    fcntl(l, F_SETFL, O_NONBLOCK);
    int c = accept(l, NULL, NULL);
    fcntl(l, F_SETFL, 0);
    printf("%s: accept %s\n", when, c >= 0 ? "a connection" : strerror(errno));
    if (c >= 0) close(c);
}

static int hostpoll(int fixed) {
    int l = listener(fixed);
    printf("LISTENING\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) die("stdin");
    poll_and_accept(l, "after the host's connect");
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (dial(c, AF_INET, 0)) die("connect to itself");
    poll_and_accept(l, "after its own connect");
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc > 2 && !strcmp(argv[1], "hostpoll")) return hostpoll(atoi(argv[2]));
    int l = listener(0);
    int made = socket(AF_INET, SOCK_STREAM, 0);  /* made here, connected by thread 3 */
    pthread_t t[3];
    pthread_create(&t[0], NULL, v4_closed, NULL);
    pthread_create(&t[1], NULL, v6_nonblocking, NULL);
    pthread_create(&t[2], NULL, passed, (void *)(long)dup(made));
    close(made);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 3; i++) {  /* all three are queued by now */
        struct pollfd p = {l, POLLIN, 0};
        if (poll(&p, 1, 10000) != 1) { printf("accept %d: nothing to accept\n", i); return 1; }
        int c = accept(l, NULL, NULL);
        if (c < 0) die("accept");
        char data[8];
        int n = read(c, data, sizeof data), eof = read(c, data + 1, 1);
        printf("accepted: read %.*s, then %s\n", n > 0 ? n : 0, data, eof == 0 ? "EOF" : "more");
        close(c);
    }
    return 0;
}
