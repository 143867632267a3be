/* Sockets inside one guest: TCP over 127.0.0.1 and [::1], UDP echo, a dual-stack
 * listener, AF_UNIX socketpair, named AF_UNIX and SCM_RIGHTS, non-blocking connect,
 * getsockname/getpeername views, timerfd, epoll edge-triggered, the errors of operations
 * a socket type lacks, SIGPIPE from write() on a socket. Output is identical
 * natively and under karn (no ephemeral port numbers are printed). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <unistd.h>

#define CHECK(x) do { if (!(x)) { printf("FAIL %s:%d %s errno=%d (%s)\n", __FILE__, \
    __LINE__, #x, errno, strerror(errno)); exit(1); } } while (0)

static int port_base;

static void *echo_server(void *arg) {
    int lfd = (int)(intptr_t)arg;
    for (int i = 0; i < 2; i++) {
        int c = accept(lfd, NULL, NULL);
        CHECK(c >= 0);
        char buf[65536];
        ssize_t n;
        while ((n = read(c, buf, sizeof buf)) > 0) {
            ssize_t off = 0;
            while (off < n) { ssize_t w = write(c, buf + off, n - off); CHECK(w > 0); off += w; }
        }
        close(c);
    }
    return NULL;
}

static void tcp_roundtrip(int family, const char *addr, int port) {
    int c = socket(family, SOCK_STREAM, 0);
    CHECK(c >= 0);
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *a = (void *)&ss; a->sin_family = AF_INET; a->sin_port = htons(port);
        inet_pton(AF_INET, addr, &a->sin_addr); len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (void *)&ss; a->sin6_family = AF_INET6;
        a->sin6_port = htons(port); inet_pton(AF_INET6, addr, &a->sin6_addr); len = sizeof *a;
    }
    CHECK(connect(c, (void *)&ss, len) == 0);
    struct sockaddr_storage peer; socklen_t plen = sizeof peer;
    CHECK(getpeername(c, (void *)&peer, &plen) == 0);
    int pport = family == AF_INET ? ntohs(((struct sockaddr_in *)&peer)->sin_port)
                                  : ntohs(((struct sockaddr_in6 *)&peer)->sin6_port);
    static char big[200000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (char)(i * 7);
    ssize_t off = 0;
    while (off < (ssize_t)sizeof big) {
        ssize_t w = write(c, big + off, sizeof big - off); CHECK(w > 0); off += w;
        if (off >= 100000) break;
    }
    shutdown(c, SHUT_WR);
    static char back[200000];
    ssize_t got = 0, n;
    while ((n = read(c, back + got, sizeof back - got)) > 0) got += n;
    printf("tcp %s peer port %d: sent %zd got %zd same %d\n", addr, pport - port_base, off, got,
           got == off && memcmp(big, back, off) == 0);
    close(c);
}

static int listener(int family, const char *addr, int port, int v6only) {
    int l = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(l >= 0);
    int one = 1;
    CHECK(setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *a = (void *)&ss; a->sin_family = AF_INET; a->sin_port = htons(port);
        inet_pton(AF_INET, addr, &a->sin_addr); len = sizeof *a;
    } else {
        CHECK(setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) == 0);
        struct sockaddr_in6 *a = (void *)&ss; a->sin6_family = AF_INET6;
        a->sin6_port = htons(port); inet_pton(AF_INET6, addr, &a->sin6_addr); len = sizeof *a;
    }
    CHECK(bind(l, (void *)&ss, len) == 0);
    CHECK(listen(l, 16) == 0);
    struct sockaddr_storage me; socklen_t mlen = sizeof me;
    CHECK(getsockname(l, (void *)&me, &mlen) == 0);
    char text[64];
    int p = family == AF_INET ? ntohs(((struct sockaddr_in *)&me)->sin_port)
                              : ntohs(((struct sockaddr_in6 *)&me)->sin6_port);
    inet_ntop(family, family == AF_INET ? (void *)&((struct sockaddr_in *)&me)->sin_addr
                                        : (void *)&((struct sockaddr_in6 *)&me)->sin6_addr,
              text, sizeof text);
    printf("listening %s port +%d (len %u)\n", text, p - port_base, mlen);
    return l;
}

static void udp_echo(void) {
    int s = socket(AF_INET, SOCK_DGRAM, 0), c = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port_base + 3)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    CHECK(bind(s, (void *)&a, sizeof a) == 0);
    CHECK(sendto(c, "ping", 4, 0, (void *)&a, sizeof a) == 4);
    char buf[16]; struct sockaddr_in from; socklen_t flen = sizeof from;
    ssize_t n = recvfrom(s, buf, sizeof buf, 0, (void *)&from, &flen);
    CHECK(n == 4);
    CHECK(sendto(s, "pong", 4, 0, (void *)&from, flen) == 4);
    struct sockaddr_in me; socklen_t mlen = sizeof me;
    CHECK(getsockname(c, (void *)&me, &mlen) == 0);
    n = recvfrom(c, buf, sizeof buf, 0, (void *)&from, &flen);
    printf("udp reply %.*s from port +%d, client port matches source %d\n", (int)n, buf,
           ntohs(from.sin_port) - port_base, me.sin_port != 0);
    /* connected UDP, recvmsg with a truncated datagram */
    CHECK(connect(c, (void *)&a, sizeof a) == 0);
    CHECK(send(c, "0123456789", 10, 0) == 10);
    char small[4]; struct iovec iov = {small, sizeof small};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    n = recvmsg(s, &msg, 0);
    printf("udp recvmsg %zd trunc %d\n", n, !!(msg.msg_flags & MSG_TRUNC));
    close(s); close(c);
}

static void unix_tests(void) {
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(write(sv[0], "hello", 5) == 5);
    char buf[32] = {0};
    CHECK(read(sv[1], buf, sizeof buf) == 5);
    printf("socketpair: %s\n", buf);
    /* pass a pipe's read end over the socketpair */
    int p[2]; CHECK(pipe(p) == 0);
    char cbuf[CMSG_SPACE(sizeof(int))] = {0};
    struct iovec iov = {"x", 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof cbuf};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET; cm->cmsg_type = SCM_RIGHTS; cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &p[0], sizeof(int));
    CHECK(sendmsg(sv[0], &msg, 0) == 1);
    close(p[0]);
    char rbuf[CMSG_SPACE(sizeof(int))]; char x;
    struct iovec riov = {&x, 1};
    struct msghdr rmsg = {.msg_iov = &riov, .msg_iovlen = 1, .msg_control = rbuf,
                          .msg_controllen = sizeof rbuf};
    CHECK(recvmsg(sv[1], &rmsg, 0) == 1);
    struct cmsghdr *rc = CMSG_FIRSTHDR(&rmsg);
    CHECK(rc && rc->cmsg_type == SCM_RIGHTS);
    int got; memcpy(&got, CMSG_DATA(rc), sizeof got);
    CHECK(write(p[1], "via-fd", 6) == 6);
    memset(buf, 0, sizeof buf);
    CHECK(read(got, buf, sizeof buf) == 6);
    printf("scm_rights: %s\n", buf);
    close(got); close(p[1]); close(sv[0]); close(sv[1]);
    /* a named socket in /tmp */
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    strcpy(un.sun_path, "/tmp/karn-net-test.sock");
    unlink(un.sun_path);
    CHECK(bind(l, (void *)&un, sizeof un) == 0);
    CHECK(listen(l, 4) == 0);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(connect(c, (void *)&un, sizeof un) == 0);
    int a = accept(l, NULL, NULL);
    CHECK(a >= 0);
    struct sockaddr_un peer; socklen_t plen = sizeof peer;
    CHECK(getpeername(c, (void *)&peer, &plen) == 0);
    CHECK(write(c, "named", 5) == 5);
    memset(buf, 0, sizeof buf);
    CHECK(read(a, buf, sizeof buf) == 5);
    printf("unix named: %s peer %s\n", buf, peer.sun_path);
    struct sockaddr_un bad = {.sun_family = AF_UNIX};
    strcpy(bad.sun_path, "/tmp/nonexistent.sock");
    int d = socket(AF_UNIX, SOCK_STREAM, 0);
    int r = connect(d, (void *)&bad, sizeof bad);
    printf("unix connect missing: %d %s\n", r, strerror(errno));
    close(a); close(c); close(l); close(d);
    unlink(un.sun_path);
}

static void nonblocking_and_refused(void) {
    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port_base + 9)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int r = connect(c, (void *)&a, sizeof a);
    if (r < 0 && errno == EINPROGRESS) {
        struct pollfd pfd = {c, POLLOUT, 0};
        poll(&pfd, 1, 1000);
        int err = 0; socklen_t el = sizeof err;
        getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &el);
        errno = err;
    }
    printf("connect to closed port: %s\n", strerror(errno));
    close(c);
    char buf[4];
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in b = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &b.sin_addr);
    CHECK(bind(s, (void *)&b, sizeof b) == 0);
    ssize_t r1 = recv(s, buf, sizeof buf, 0);
    printf("nonblocking recv: %zd %s\n", r1, strerror(errno));
    struct timeval tv = {0, 50000};
    int t = socket(AF_INET, SOCK_DGRAM, 0);
    CHECK(bind(t, (void *)&b, sizeof b) == 0);
    CHECK(setsockopt(t, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
    ssize_t r2 = recv(t, buf, sizeof buf, 0);
    printf("SO_RCVTIMEO recv: %zd %s\n", r2, strerror(errno));
    r2 = read(t, buf, sizeof buf);
    printf("SO_RCVTIMEO read: %zd %s\n", r2, strerror(errno));
    int type; socklen_t tl = sizeof type;
    CHECK(getsockopt(t, SOL_SOCKET, SO_TYPE, &type, &tl) == 0);
    printf("SO_TYPE %d\n", type);
    close(s); close(t);
}

static volatile sig_atomic_t sigpipes;

static void on_sigpipe(int sig) { (void)sig; sigpipes++; }

static void report(const char *what, int r) {
    printf("%s: %d %s\n", what, r, r < 0 ? strerror(errno) : "ok");
}

static void operations_a_socket_lacks(void) {
    int udp = socket(AF_INET, SOCK_DGRAM, 0);
    report("udp listen", listen(udp, 1));
    report("udp accept", accept(udp, NULL, NULL));
    int ud = socket(AF_UNIX, SOCK_DGRAM, 0);
    report("unix dgram listen", listen(ud, 1));
    report("unix dgram accept", accept(ud, NULL, NULL));
    int tcp = socket(AF_INET, SOCK_STREAM, 0);
    report("tcp accept unlistened", accept(tcp, NULL, NULL));
    struct sockaddr_in peer; socklen_t plen = sizeof peer;
    report("tcp getpeername unconnected", getpeername(tcp, (void *)&peer, &plen));
    int one = 1;
    report("inet IPV6_V6ONLY", setsockopt(udp, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one));
    int six = socket(AF_INET6, SOCK_DGRAM, 0);
    struct sockaddr_in6 any = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    CHECK(bind(six, (void *)&any, sizeof any) == 0);
    report("IPV6_V6ONLY after bind", setsockopt(six, IPPROTO_IPV6, IPV6_V6ONLY, &one,
                                                sizeof one));
    report("SO_REUSEPORT", setsockopt(tcp, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one));
    int got = 0; socklen_t gl = sizeof got;
    CHECK(getsockopt(tcp, SOL_SOCKET, SO_REUSEPORT, &got, &gl) == 0);
    printf("SO_REUSEPORT reads %d\n", got);
    close(udp); close(ud); close(tcp); close(six);
    /* read and write reach a socket as file operations: shutdown ends the stream, and a
     * write to a closed peer raises SIGPIPE in the writing thread */
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(shutdown(sv[0], SHUT_WR) == 0);
    char c;
    report("read after peer shutdown", (int)read(sv[1], &c, 1));
    signal(SIGPIPE, on_sigpipe);
    close(sv[1]);
    report("write to closed peer", (int)write(sv[0], "x", 1));
    printf("sigpipes %d\n", (int)sigpipes);
    signal(SIGPIPE, SIG_DFL);
    close(sv[0]);
}

static void timer_and_epoll(void) {
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    CHECK(tfd >= 0);
    struct itimerspec its = {.it_value = {0, 20000000}, .it_interval = {0, 20000000}};
    CHECK(timerfd_settime(tfd, 0, &its, NULL) == 0);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u32 = 77};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) == 0);
    struct epoll_event out;
    int n = epoll_wait(ep, &out, 1, 1000);
    uint64_t count = 0;
    CHECK(read(tfd, &count, sizeof count) == 8);
    struct itimerspec cur;
    CHECK(timerfd_gettime(tfd, &cur) == 0);
    printf("timerfd epoll %d data %u expirations>=1 %d interval %ld\n", n, out.data.u32,
           count >= 1, cur.it_interval.tv_nsec);
    close(tfd); close(ep);
}

int main(int argc, char **argv) {
    port_base = argc > 1 ? atoi(argv[1]) : 24000;
    setvbuf(stdout, NULL, _IONBF, 0);
    int l4 = listener(AF_INET, "0.0.0.0", port_base, 0);
    int l6 = listener(AF_INET6, "::1", port_base + 1, 1);
    int ld = listener(AF_INET6, "::", port_base + 2, 0);
    pthread_t t4, t6, td;
    pthread_create(&t4, NULL, echo_server, (void *)(intptr_t)l4);
    pthread_create(&t6, NULL, echo_server, (void *)(intptr_t)l6);
    pthread_create(&td, NULL, echo_server, (void *)(intptr_t)ld);
    tcp_roundtrip(AF_INET, "127.0.0.1", port_base);
    tcp_roundtrip(AF_INET, "127.0.0.1", port_base);
    tcp_roundtrip(AF_INET6, "::1", port_base + 1);
    tcp_roundtrip(AF_INET6, "::1", port_base + 1);
    tcp_roundtrip(AF_INET, "127.0.0.1", port_base + 2);
    tcp_roundtrip(AF_INET6, "::1", port_base + 2);
    pthread_join(t4, NULL); pthread_join(t6, NULL); pthread_join(td, NULL);
    udp_echo();
    unix_tests();
    nonblocking_and_refused();
    operations_a_socket_lacks();
    timer_and_epoll();
    printf("done\n");
    return 0;
}
