/* epoll watches two fds of one open file (a dup) apart, as Linux keys a registration
 * by file and fd (Go's net.FileListener registers a dup of a listener): each gets its
 * events with its own data; adding one again is EEXIST, a removed one ENOENT. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

static void wait_and_show(int ep, const char *what) {
    struct epoll_event ev[4];
    int n = epoll_wait(ep, ev, 4, 0);
    unsigned long sum = 0;
    for (int i = 0; i < n; i++)
        sum += ev[i].data.u64 * (ev[i].events & EPOLLIN ? 1 : 1000);
    printf("%s: %d events, data sum %lu\n", what, n, sum);
}

static const char *res(int r) { return r ? strerror(errno) : "ok"; }

int main(void) {
    int p[2];
    pipe(p);
    int a = p[0], b = dup(p[0]);
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = 1};
    printf("add a: %s\n", res(epoll_ctl(ep, EPOLL_CTL_ADD, a, &e)));
    e.data.u64 = 10;
    printf("add its dup b: %s\n", res(epoll_ctl(ep, EPOLL_CTL_ADD, b, &e)));
    printf("add b again: %s\n", res(epoll_ctl(ep, EPOLL_CTL_ADD, b, &e)));
    wait_and_show(ep, "nothing written");
    write(p[1], "x", 1);
    wait_and_show(ep, "written");
    e.events = EPOLLOUT;
    e.data.u64 = 100;
    printf("mod b to EPOLLOUT: %s\n", res(epoll_ctl(ep, EPOLL_CTL_MOD, b, &e)));
    wait_and_show(ep, "after mod");
    printf("del a: %s\n", res(epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL)));
    printf("del a again: %s\n", res(epoll_ctl(ep, EPOLL_CTL_DEL, a, NULL)));
    e.events = EPOLLIN;
    e.data.u64 = 7;
    printf("mod b back to EPOLLIN: %s\n", res(epoll_ctl(ep, EPOLL_CTL_MOD, b, &e)));
    wait_and_show(ep, "only b");
    printf("del b: %s\n", res(epoll_ctl(ep, EPOLL_CTL_DEL, b, NULL)));
    wait_and_show(ep, "none watched");
    return 0;
}
