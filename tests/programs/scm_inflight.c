/* Files in flight over SCM_RIGHTS (tests/test_resource_limits.py).
 *
 *   scm_inflight limit N   queue messages of N copies of one fd on a socketpair nobody
 *                          reads, until sendmsg fails (Linux: ETOOMANYREFS once the
 *                          sender has more than RLIMIT_NOFILE files in flight); then
 *                          closing the pair must release them, and received files too.
 *   scm_inflight leak ITER ITER times: 64 pipe fds sent on a fresh socketpair, never
 *                          received, all closed. Prints "ready 1" after the first and
 *                          "ready ITER" after the last, each time waiting for a line on
 *                          stdin, so that the test can count the monitor's host fds.
 *   scm_inflight peek      a pipe's write end sent: peeked at, received, then sent
 *                          again and read() without room for it (the file is dropped:
 *                          the pipe's reader then sees end of file).
 *   scm_inflight blocked   a thread is already waiting in recvmsg when the other sends
 *                          it a pipe's write end: the file arrives with the byte.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

static int send_fds(int sock, const int *fds, int n) {
    char cbuf[CMSG_SPACE(sizeof(int) * 253)];
    memset(cbuf, 0, sizeof cbuf);
    struct iovec io = {"x", 1};
    struct msghdr m = {0};
    m.msg_iov = &io;
    m.msg_iovlen = 1;
    m.msg_control = cbuf;
    m.msg_controllen = CMSG_SPACE(sizeof(int) * n);
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * n);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
    return sendmsg(sock, &m, MSG_DONTWAIT) < 0 ? -1 : 0;
}

/* Receive one message (flags: MSG_PEEK or 0); the first file it brought in *first
 * (-1 if none), the others closed. The number of files, or -1. */
static int recv_one(int sock, int flags, int *first) {
    char cbuf[CMSG_SPACE(sizeof(int) * 253)];
    char byte;
    struct iovec io = {&byte, 1};
    struct msghdr m = {0};
    m.msg_iov = &io;
    m.msg_iovlen = 1;
    m.msg_control = cbuf;
    m.msg_controllen = sizeof cbuf;
    *first = -1;
    if (recvmsg(sock, &m, flags) != 1)
        return -1;
    int got = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *fds = (int *)CMSG_DATA(c);
        for (int i = 0; i < n; i++) {
            if (*first < 0)
                *first = fds[i];
            else
                close(fds[i]);
        }
        got += n;
    }
    return got;
}

static int recv_fds(int sock) {
    int first;
    int got = recv_one(sock, 0, &first);
    if (first >= 0)
        close(first);
    return got;
}

static void wait_line(const char *what, int n) {
    char line[16];
    printf("ready %s %d\n", what, n);
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        exit(3);
}

static int limit(int per) {
    int p[2], sv[2], fds[253];
    if (per < 1 || per > 253 || pipe(p) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return 2;
    for (int i = 0; i < per; i++)
        fds[i] = p[0];
    int sent = 0;
    while (sent < 1000 && send_fds(sv[0], fds, per) == 0)
        sent++;
    printf("queued %d messages of %d files, then: %s\n", sent, per, strerror(errno));
    close(sv[0]);
    close(sv[1]); /* the queued messages are dropped unread: their files are released */
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return 2;
    int again = 0;
    while (again < sent && send_fds(sv[0], fds, per) == 0)
        again++;
    printf("after closing the pair: queued %d again\n", again);
    int received = 0, rounds = 0; /* received files are no longer in flight */
    for (; rounds < 4 * sent; rounds++) {
        int got = recv_fds(sv[1]);
        if (got < 0 || send_fds(sv[0], fds, per) < 0)
            break;
        received += got;
    }
    printf("received and sent again %d times (%d files)%s%s\n", rounds, received,
           rounds < 4 * sent ? ": " : "", rounds < 4 * sent ? strerror(errno) : "");
    return 0;
}

static int leak(int iters) {
    for (int i = 1; i <= iters; i++) {
        int sv[2], fds[64];
        if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0) {
            printf("socketpair %d: %s\n", i, strerror(errno));
            return 1;
        }
        for (int k = 0; k < 64; k += 2)
            if (pipe(fds + k) < 0) {
                printf("pipe %d: %s\n", i, strerror(errno));
                return 1;
            }
        if (send_fds(sv[0], fds, 64) < 0) {
            printf("sendmsg %d: %s\n", i, strerror(errno));
            return 1;
        }
        for (int k = 0; k < 64; k++)
            close(fds[k]);
        close(sv[0]);
        close(sv[1]);
        if (i == 1 || i == iters)
            wait_line("after", i);
    }
    printf("done\n");
    return 0;
}

static int peek(void) {
    int p[2], sv[2], peeked, got;
    char buf[8];
    if (pipe(p) < 0 || socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0 || send_fds(sv[0], &p[1], 1))
        return 2;
    close(p[1]);
    int n = recv_one(sv[1], MSG_PEEK, &peeked);
    int m = recv_one(sv[1], 0, &got);
    printf("peeked %d file(s), received %d: %s\n", n, m,
           peeked >= 0 && got >= 0 && peeked != got ? "two fds" : "wrong");
    printf("writes through both: %zd %zd\n", write(peeked, "ab", 2), write(got, "cd", 2));
    printf("read %zd\n", read(p[0], buf, sizeof buf));
    if (send_fds(sv[0], &got, 1))
        return 2;
    close(peeked);
    close(got);
    struct pollfd pf = {p[0], POLLIN, 0};
    printf("before the read: pipe %s\n", poll(&pf, 1, 0) == 0 ? "open" : "ready");
    printf("read() of the message: %zd\n", read(sv[1], buf, sizeof buf));
    printf("the pipe's reader then reads %zd (end of file)\n", read(p[0], buf, sizeof buf));
    return 0;
}

static int blocked_sv[2], blocked_ready[2];

static void *blocked_receiver(void *arg) {
    int *got = arg;
    if (write(blocked_ready[1], "r", 1) != 1)
        return NULL;
    recv_one(blocked_sv[1], 0, got);
    return NULL;
}

static int blocked(void) {
    int p[2], got = -1;
    char c;
    pthread_t t;
    if (pipe(p) < 0 || pipe(blocked_ready) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM, 0, blocked_sv) < 0 ||
        pthread_create(&t, NULL, blocked_receiver, &got))
        return 2;
    if (read(blocked_ready[0], &c, 1) != 1)
        return 2;
    usleep(200 * 1000); /* the receiver is in recvmsg by now (if not, nothing is tested) */
    if (send_fds(blocked_sv[0], &p[1], 1))
        return 2;
    close(p[1]);
    pthread_join(t, NULL);
    printf("the waiting receiver got %s\n", got >= 0 ? "the file" : "no file");
    if (got >= 0) {
        printf("write through it: %zd\n", write(got, "ab", 2));
        close(got);
    }
    printf("the pipe's reader reads %zd\n", read(p[0], &c, 1));
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "blocked"))
        return blocked();
    if (argc == 2 && !strcmp(argv[1], "peek"))
        return peek();
    if (argc == 3 && !strcmp(argv[1], "limit"))
        return limit(atoi(argv[2]));
    if (argc == 3 && !strcmp(argv[1], "leak"))
        return leak(atoi(argv[2]));
    fprintf(stderr, "usage: scm_inflight limit N | leak ITER | peek | blocked\n");
    return 2;
}
