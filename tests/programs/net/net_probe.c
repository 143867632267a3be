/* A small network probe for policy tests.
 *   net_probe connect IP PORT [udp]  -> "connect: OK <reply>" or "connect: <errno name>"
 *   net_probe serve PORT             -> listens on 0.0.0.0:PORT, prints "listening",
 *                                       answers each connection with "hello\n" */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *ename(int e) {
    switch (e) {
    case ECONNREFUSED: return "ECONNREFUSED";
    case ENETUNREACH: return "ENETUNREACH";
    case EACCES: return "EACCES";
    case EPERM: return "EPERM";
    case ETIMEDOUT: return "ETIMEDOUT";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    default: return strerror(e);
    }
}

static int addr_of(const char *ip, int port, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *a = (void *)ss;
    struct sockaddr_in6 *b = (void *)ss;
    if (inet_pton(AF_INET, ip, &a->sin_addr) == 1) {
        a->sin_family = AF_INET; a->sin_port = htons(port); return AF_INET;
    }
    inet_pton(AF_INET6, ip, &b->sin6_addr);
    b->sin6_family = AF_INET6; b->sin6_port = htons(port);
    return AF_INET6;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc >= 4 && strcmp(argv[1], "connect") == 0) {
        struct sockaddr_storage ss;
        int fam = addr_of(argv[2], atoi(argv[3]), &ss);
        int udp = argc > 4 && strcmp(argv[4], "udp") == 0;
        int s = socket(fam, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
        socklen_t len = fam == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
        if (udp) {
            if (sendto(s, "x", 1, 0, (void *)&ss, len) < 0) {
                printf("sendto: %s\n", ename(errno)); return 1;
            }
            printf("sendto: OK\n"); return 0;
        }
        if (connect(s, (void *)&ss, len) < 0) { printf("connect: %s\n", ename(errno)); return 1; }
        char buf[64] = {0};
        ssize_t n = read(s, buf, sizeof buf - 1);
        printf("connect: OK %s", n > 0 ? buf : "\n");
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "serve") == 0) {
        int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_storage ss;
        addr_of("0.0.0.0", atoi(argv[2]), &ss);
        if (bind(l, (void *)&ss, sizeof(struct sockaddr_in)) < 0 || listen(l, 8) < 0) {
            printf("serve: %s\n", ename(errno)); return 1;
        }
        printf("listening\n");
        for (;;) {
            int c = accept(l, NULL, NULL);
            if (c < 0) return 1;
            write(c, "hello\n", 6);
            close(c);
        }
    }
    fprintf(stderr, "usage: net_probe connect IP PORT [udp] | serve PORT\n");
    return 2;
}
