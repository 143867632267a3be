/* Signal masks and waiting: sigprocmask blocking + sigpending + delivery on unblock,
 * raise / kill / tgkill to self with their si_code, sigsuspend (a pending signal and one
 * sent by another thread while suspended), rt_sigtimedwait (pending, sent later,
 * timeout), SA_RESETHAND, SA_NODEFER, SIG_IGN, and a handler interrupting a blocking
 * read (EINTR without SA_RESTART).
 * Usage: sig_mask [resethand-dies]: the last step re-raises a SA_RESETHAND signal. */
#include "karntest.h"
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t count[65];
static volatile int last_code, last_pid_is_me, nested;
static volatile sig_atomic_t depth, raise_again;

static void handler(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    count[sig]++;
    last_code = si->si_code;
    last_pid_is_me = si->si_pid == getpid();
    if (depth++ == 0 && sig == SIGUSR2 && raise_again) {
        raise_again = 0;
        raise(SIGUSR2); /* with SA_NODEFER this nests; without, it runs after we return */
    }
    if (depth > 1)
        nested = 1;
    depth--;
}

static void install(int sig, int flags)
{
    struct sigaction sa = {0};
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | flags;
    sigemptyset(&sa.sa_mask);
    MUST(sigaction(sig, &sa, NULL) == 0);
}

static const char *code_name(int code)
{
    switch (code) {
    case SI_USER: return "SI_USER";
    case SI_TKILL: return "SI_TKILL";
    case SI_QUEUE: return "SI_QUEUE";
    case SI_KERNEL: return "SI_KERNEL";
    default: return "other";
    }
}

static void *send_later(void *arg)
{
    struct timespec ts = {0, 30 * 1000 * 1000};
    nanosleep(&ts, NULL);
    kill(getpid(), (int)(long)arg);
    return NULL;
}

static volatile int read_returned;

/* Until the read returns: on a loaded host the first signal may come before the main
 * thread is in read() (its handler runs, and the read would then block for ever). */
static void *write_later(void *arg)
{
    (void)arg;
    struct timespec ts = {0, 30 * 1000 * 1000};
    while (!read_returned) {
        nanosleep(&ts, NULL);
        kill(getpid(), SIGUSR1);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    install(SIGUSR1, 0);
    sigset_t block, old, pend;

    /* raise / kill / tgkill to self */
    raise(SIGUSR1);
    printf("raise: count %d, code %s\n", (int)count[SIGUSR1], code_name(last_code));
    kill(getpid(), SIGUSR1);
    printf("kill: count %d, code %s, pid is mine %d\n", (int)count[SIGUSR1],
           code_name(last_code), last_pid_is_me);
    syscall(SYS_tgkill, getpid(), (pid_t)syscall(SYS_gettid), SIGUSR1);
    printf("tgkill: count %d, code %s\n", (int)count[SIGUSR1], code_name(last_code));
    union sigval v = {.sival_int = 7};
    sigqueue(getpid(), SIGUSR1, v);
    printf("sigqueue: count %d, code %s\n", (int)count[SIGUSR1], code_name(last_code));
    SHOW("kill sig 0", kill(getpid(), 0));
    SHOW("kill sig 99", kill(getpid(), 99));

    /* blocked: stays pending, delivered once when unblocked */
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    MUST(sigprocmask(SIG_BLOCK, &block, &old) == 0);
    raise(SIGUSR1);
    raise(SIGUSR1); /* standard signals do not queue */
    sigpending(&pend);
    printf("blocked: count %d, pending USR1 %d, pending USR2 %d\n", (int)count[SIGUSR1],
           sigismember(&pend, SIGUSR1), sigismember(&pend, SIGUSR2));
    MUST(sigprocmask(SIG_SETMASK, &old, NULL) == 0);
    sigpending(&pend);
    printf("unblocked: count %d, pending USR1 %d\n", (int)count[SIGUSR1],
           sigismember(&pend, SIGUSR1));

    /* real-time signals queue */
    install(SIGRTMIN + 1, 0);
    sigemptyset(&block);
    sigaddset(&block, SIGRTMIN + 1);
    sigprocmask(SIG_BLOCK, &block, NULL);
    for (int i = 0; i < 3; i++)
        raise(SIGRTMIN + 1);
    sigprocmask(SIG_UNBLOCK, &block, NULL);
    printf("rt signal raised 3 times while blocked: delivered %d\n", (int)count[SIGRTMIN + 1]);

    /* sigsuspend: a pending blocked signal ends it at once */
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &old);
    raise(SIGUSR1);
    sigset_t waitmask;
    sigemptyset(&waitmask);
    int r = sigsuspend(&waitmask);
    printf("sigsuspend (pending): r %d %s, count %d\n", r, errno_name(errno), (int)count[SIGUSR1]);
    /* ... and one sent by another thread while suspended */
    pthread_t t;
    MUST(pthread_create(&t, NULL, send_later, (void *)(long)SIGUSR1) == 0);
    r = sigsuspend(&waitmask);
    printf("sigsuspend (sent later): r %d %s, count %d\n", r, errno_name(errno),
           (int)count[SIGUSR1]);
    pthread_join(t, NULL);
    sigprocmask(SIG_SETMASK, NULL, &pend);
    printf("mask restored after sigsuspend: USR1 blocked %d\n", sigismember(&pend, SIGUSR1));

    /* rt_sigtimedwait: takes a pending signal without running the handler */
    raise(SIGUSR1);
    siginfo_t si;
    struct timespec ts = {1, 0};
    r = sigtimedwait(&block, &si, &ts);
    printf("sigtimedwait (pending): %d, si_signo %d, code %s, handler count %d\n", r,
           si.si_signo, code_name(si.si_code), (int)count[SIGUSR1]);
    MUST(pthread_create(&t, NULL, send_later, (void *)(long)SIGUSR1) == 0);
    ts.tv_sec = 5;
    r = sigtimedwait(&block, &si, &ts);
    printf("sigtimedwait (sent later): %d, code %s, pid is mine %d\n", r, code_name(si.si_code),
           si.si_pid == getpid());
    pthread_join(t, NULL);
    ts.tv_sec = 0;
    ts.tv_nsec = 50 * 1000 * 1000;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    r = sigtimedwait(&block, &si, &ts);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    printf("sigtimedwait (nothing): %d %s, waited >= 45 ms: %s\n", r, errno_name(errno),
           ms >= 45 ? "yes" : "no");
    sigprocmask(SIG_SETMASK, &old, NULL);

    /* a handler interrupts a blocking read: EINTR without SA_RESTART */
    int p[2];
    MUST(pipe(p) == 0);
    MUST(pthread_create(&t, NULL, write_later, NULL) == 0);
    char c;
    SHOW("read interrupted", read(p[0], &c, 1));
    read_returned = 1;
    pthread_join(t, NULL);

    /* SIG_IGN: raise does nothing */
    signal(SIGUSR2, SIG_IGN);
    raise(SIGUSR2);
    printf("ignored SIGUSR2: still alive\n");

    /* SA_NODEFER: the handler's own raise nests */
    install(SIGUSR2, SA_NODEFER);
    raise_again = 1;
    raise(SIGUSR2);
    printf("SA_NODEFER: count %d, nested %d\n", (int)count[SIGUSR2], nested);
    nested = 0;
    install(SIGUSR2, 0);
    raise_again = 1;
    raise(SIGUSR2);
    printf("without SA_NODEFER: count %d, nested %d\n", (int)count[SIGUSR2], nested);

    /* SA_RESETHAND: runs once, then the disposition is SIG_DFL */
    install(SIGHUP, SA_RESETHAND);
    raise(SIGHUP);
    struct sigaction now;
    sigaction(SIGHUP, NULL, &now);
    printf("SA_RESETHAND: count %d, now SIG_DFL %s\n", (int)count[SIGHUP],
           now.sa_handler == SIG_DFL ? "yes" : "no");
    fflush(stdout);
    if (argc > 1 && strcmp(argv[1], "resethand-dies") == 0)
        raise(SIGHUP); /* default action: terminate, status 128 + 1 */
    printf("done\n");
    return 0;
}
