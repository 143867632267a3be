/* Two threads spin in user mode with one CPU, so one of them always waits for it. The
 * spinner blocks SIGTERM: a SIGTERM must reach the main thread, whose handler says so and
 * ends the process by SIGTERM's default action (status 143). argv[1] "default": no handler. */
#include "karntest.h"
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

static void on_term(int sig) {
    static const char msg[] = "handler ran\n";
    MUST(write(1, msg, sizeof msg - 1) == sizeof msg - 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void *spinner(void *arg) {
    (void)arg;
    for (;;)
        ;
    return NULL;
}

int main(int argc, char **argv) {
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    MUST(pthread_sigmask(SIG_BLOCK, &term, NULL) == 0); /* the spinner inherits it */
    pthread_t t;
    MUST(pthread_create(&t, NULL, spinner, NULL) == 0);
    if (argc < 2 || strcmp(argv[1], "default") != 0)
        MUST(signal(SIGTERM, on_term) != SIG_ERR);
    MUST(pthread_sigmask(SIG_UNBLOCK, &term, NULL) == 0);
    MUST(write(1, "ready\n", 6) == 6);
    volatile unsigned long n = 0;
    for (;;)
        n++;
}
