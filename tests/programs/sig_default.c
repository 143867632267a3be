/* Default actions and signals from outside.
 * Usage: sig_default MODE
 *   abort      print, then abort(): SIGABRT, status 134
 *   kill-term  kill(getpid(), SIGTERM) with no handler: status 143
 *   wait       print "ready", then pause() with no handlers (killed by the host's signal)
 *   handle     install SIGINT/SIGTERM/SIGHUP handlers, print "ready", wait; the handler
 *              prints the signal's name and the program exits 0. The signals stay blocked
 *              until sigsuspend(), so one sent right after "ready" cannot be handled
 *              between the check of `got` and the wait (a lost wake-up). */
#include "karntest.h"
#include <signal.h>
#include <unistd.h>

static volatile sig_atomic_t got;

static void handler(int sig)
{
    got = sig;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "abort") == 0) {
        printf("about to abort\n");
        fflush(stdout);
        abort();
    }
    if (strcmp(mode, "kill-term") == 0) {
        printf("about to kill myself\n");
        fflush(stdout);
        kill(getpid(), SIGTERM);
        printf("still alive?!\n");
        return 1;
    }
    if (strcmp(mode, "handle") == 0) {
        struct sigaction sa = {0};
        sigset_t handled, unblocked;
        sa.sa_handler = handler;
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGHUP, &sa, NULL);
        sigemptyset(&handled);
        sigaddset(&handled, SIGINT);
        sigaddset(&handled, SIGTERM);
        sigaddset(&handled, SIGHUP);
        sigprocmask(SIG_BLOCK, &handled, &unblocked);
        printf("ready\n");
        fflush(stdout);
        while (!got)
            sigsuspend(&unblocked);
    } else {
        printf("ready\n");
        fflush(stdout);
        while (!got)
            pause();
    }
    printf("caught %s\n", got == SIGINT ? "SIGINT" : got == SIGTERM ? "SIGTERM" : "SIGHUP");
    return 0;
}
