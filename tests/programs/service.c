/* A long-running service for the instance tests: worker threads, an open file, output
 * every tick, and a SIGTERM handler that says goodbye and exits with status 3
 * (argv[2] "ignore-term": SIGTERM is ignored, so only a kill stops it). */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_term(int sig) { (void)sig; stop = 1; }

static void *worker(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 3;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = argc > 2 && !strcmp(argv[2], "ignore-term") ? SIG_IGN : on_term;
    sigaction(SIGTERM, &sa, NULL);
    int fd = open("/etc/service.conf", O_RDONLY);
    if (fd < 0)
        fd = open("/proc/self/status", O_RDONLY); /* something to show in the fd list */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, &old); /* workers never take SIGTERM */
    for (int i = 0; i < threads; i++) {
        pthread_t t;
        pthread_create(&t, NULL, worker, NULL);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    for (long tick = 0; !stop; tick++) {
        printf("tick %ld\n", tick);
        fflush(stdout);
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    printf("got SIGTERM, fd %d still open, exiting\n", fd);
    fflush(stdout);
    return 3;
}
