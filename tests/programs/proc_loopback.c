/* TCP and UDP on the loopback between processes, as one Linux host has them: a
 * listener made after a fork is reached by the parent; a child that closes its copy of
 * an inherited listener still reaches it (the parent holds it); a datagram to a socket
 * bound in another process shows the sender's port there, and its reply comes back; a
 * port bound in another process is EADDRINUSE, and free once a process that ended holding
 * it is waited for; once no process holds a listener, a connect is refused. Waits
 * give up after 10 s (SO_RCVTIMEO), so a miss shows in the output instead of hanging. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int with_timeout(int s)
{
    struct timeval tv = {.tv_sec = 10};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return s;
}

static int bound(int type, int port)
{
    int s = with_timeout(socket(AF_INET, type, 0));
    struct sockaddr_in a = loopback(port);
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
        close(s);
        return -errno;
    }
    if (type == SOCK_STREAM)
        listen(s, 4);
    return s;
}

static int port_of(int s)
{
    struct sockaddr_in a;
    socklen_t n = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &n);
    return ntohs(a.sin_port);
}

static int free_port(int type)
{
    int s = bound(type, 0);
    int port = port_of(s);
    close(s);
    return port;
}

static const char *connect_to(int port, char *got, size_t size)
{
    int c = with_timeout(socket(AF_INET, SOCK_STREAM, 0));
    struct sockaddr_in a = loopback(port);
    if (connect(c, (struct sockaddr *)&a, sizeof a) < 0) {
        snprintf(got, size, "connect: %s", strerror(errno));
        close(c);
        return got;
    }
    ssize_t n = read(c, got, size - 1);
    got[n > 0 ? n : 0] = 0;
    close(c);
    return got;
}

static void serve_once(int l, const char *what)
{
    int c = accept(l, NULL, NULL);
    if (c < 0) {
        printf("accept: %s\n", strerror(errno));
        return;
    }
    write(c, what, strlen(what));
    close(c);
}

int main(void)
{
    char got[128];
    int ready[2];

    /* 1: the child listens after the fork, the parent connects */
    pipe(ready);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int l = bound(SOCK_STREAM, 0);
        int port = port_of(l);
        write(ready[1], &port, sizeof port);
        serve_once(l, "from the child's listener");
        _exit(0);
    }
    int port;
    read(ready[0], &port, sizeof port);
    printf("parent to the child's listener: %s\n", connect_to(port, got, sizeof got));
    waitpid(pid, NULL, 0);

    /* 2: the child closes its copy of the parent's listener, then connects to it */
    int l = bound(SOCK_STREAM, 0);
    port = port_of(l);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        close(l);
        printf("child, its copy closed: %s\n", connect_to(port, got, sizeof got));
        int again = bound(SOCK_STREAM, port);
        printf("child binding the parent's port: %s\n",
               again < 0 ? strerror(-again) : "bound");
        fflush(stdout);
        _exit(0);
    }
    serve_once(l, "from the parent's listener");
    waitpid(pid, NULL, 0);
    close(l);
    printf("after every close: %s\n", connect_to(port, got, sizeof got));

    /* 3: a datagram to a socket bound in the child after the fork, from a port the
     * parent chose: the child sees that port and its reply comes back */
    int cport = free_port(SOCK_DGRAM);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        int u = bound(SOCK_DGRAM, 0);
        int uport = port_of(u);
        write(ready[1], &uport, sizeof uport);
        struct sockaddr_in from;
        socklen_t n = sizeof from;
        ssize_t k = recvfrom(u, got, sizeof got - 1, 0, (struct sockaddr *)&from, &n);
        got[k > 0 ? k : 0] = 0;
        sendto(u, "pong", 4, 0, (struct sockaddr *)&from, n);
        printf("child got datagram: %s, from the parent's port: %d\n", got,
               ntohs(from.sin_port) == cport);
        fflush(stdout);
        _exit(0);
    }
    read(ready[0], &port, sizeof port);
    int u = bound(SOCK_DGRAM, cport);
    struct sockaddr_in to = loopback(port);
    sendto(u, "ping", 4, 0, (struct sockaddr *)&to, sizeof to);
    ssize_t k = recv(u, got, sizeof got - 1, 0);
    got[k > 0 ? k : 0] = 0;
    waitpid(pid, NULL, 0);
    printf("parent got reply: %s\n", got);

    /* 4: a child ends without closing its socket: the port is free once it is waited for */
    int q = free_port(SOCK_DGRAM);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        bound(SOCK_DGRAM, q);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    int again = bound(SOCK_DGRAM, q);
    printf("the port of a child that ended: %s\n", again < 0 ? strerror(-again) : "bound");
    return 0;
}
