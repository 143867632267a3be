/* One thread waits in epoll_wait while another keeps making pipes ready (a byte written),
 * taking them off the epoll and closing them: an event the wait's host poll saw may belong to an fd closed before
 * the event is reported (Go's netpoller meets this all the time: net/http's tests died
 * with "netpoll failed" when karn's epoll_wait failed with EINVAL there). Prints how the
 * waits went: every one must return >= 0. Argument: rounds. */
#include "karntest.h"
#include <pthread.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <unistd.h>

static int ep;
static atomic_int done;
static atomic_long failed;

static void *waiter(void *arg)
{
    (void)arg;
    struct epoll_event ev[8];
    while (!atomic_load(&done)) {
        if (epoll_wait(ep, ev, 8, 1) < 0 && errno != EINTR) {
            atomic_fetch_add(&failed, 1);
            printf("epoll_wait: %s\n", errno_name(errno));
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 2000;
    setvbuf(stdout, NULL, _IONBF, 0);
    MUST((ep = epoll_create1(EPOLL_CLOEXEC)) >= 0);
    pthread_t t;
    MUST(pthread_create(&t, NULL, waiter, NULL) == 0);
    for (int i = 0; i < rounds; i++) {
        int p[2];
        MUST(pipe(p) == 0);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]};
        MUST(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) == 0);
        MUST(write(p[1], "x", 1) == 1);
        /* as Go's netpoller: taken off the epoll, then closed, while the waiter may hold
           an event of it from its last look */
        MUST(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0);
        MUST(close(p[0]) == 0);
        MUST(close(p[1]) == 0);
    }
    atomic_store(&done, 1);
    pthread_join(t, NULL);
    printf("%d rounds, failed waits: %ld\n", rounds, atomic_load(&failed));
    return 0;
}
