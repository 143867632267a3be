/* Signals and threads: a thread-directed signal (pthread_kill) interrupts that thread's
 * blocking read (EINTR) and nanosleep; a process-directed signal goes to the one thread
 * that does not block it, even while that thread blocks in read; a new thread inherits
 * its creator's mask; a dedicated thread collects a process signal with sigwait.
 * A signal that comes before its target blocks (a loaded host can delay the thread past
 * any pause) is handled and the call then blocks: the signal is sent again every 30 ms
 * until the call returns, so the output is the same however the threads are scheduled.
 * Usage: sig_thread [read|sleep|process|sigwait|all] (default all). */
#include "karntest.h"
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int pipefd[2];
static volatile long handler_tid;
static volatile sig_atomic_t handled;
static volatile int returned; /* the target's blocking call returned */
static pthread_barrier_t ready;

static void handler(int sig)
{
    (void)sig;
    handled++;
    if (!handler_tid) /* the first: a repeat may find the target gone */
        handler_tid = syscall(SYS_gettid);
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

struct result {
    long r, err, tid;
};

static void *reader(void *arg)
{
    struct result *res = arg;
    char c;
    res->tid = syscall(SYS_gettid);
    pthread_barrier_wait(&ready);
    errno = 0;
    res->r = read(pipefd[0], &c, 1);
    res->err = errno;
    returned = 1;
    return NULL;
}

static void *sleeper(void *arg)
{
    struct result *res = arg;
    res->tid = syscall(SYS_gettid);
    pthread_barrier_wait(&ready);
    struct timespec ts = {20, 0}, rem;
    errno = 0;
    res->r = nanosleep(&ts, &rem);
    res->err = errno;
    returned = 1;
    return NULL;
}

static const char *err_name(long e)
{
    return e == EINTR ? "EINTR" : errno_name((int)e);
}

static void report(const char *what, struct result *res)
{
    printf("%s: returned %ld %s, handled %s, on that thread %s\n", what, res->r,
           err_name(res->err), handled ? "yes" : "no", handler_tid == res->tid ? "yes" : "no");
    handled = 0;
    handler_tid = 0;
    returned = 0;
}

static void directed(const char *what, void *(*fn)(void *))
{
    struct result res = {0};
    pthread_t t;
    MUST(pthread_barrier_init(&ready, NULL, 2) == 0);
    MUST(pthread_create(&t, NULL, fn, &res) == 0);
    pthread_barrier_wait(&ready);
    while (!returned) {
        pause_ms(30);
        if (!returned)
            pthread_kill(t, SIGUSR1);
    }
    pthread_join(t, NULL);
    pthread_barrier_destroy(&ready);
    report(what, &res);
}

static void process_directed(void)
{
    /* main blocks SIGUSR1: the reader (created before) is the only thread that takes it */
    struct result res = {0};
    pthread_t t;
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR1);
    MUST(pthread_barrier_init(&ready, NULL, 2) == 0);
    MUST(pthread_create(&t, NULL, reader, &res) == 0);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    pthread_barrier_wait(&ready);
    while (!returned) {
        pause_ms(30);
        if (!returned)
            kill(getpid(), SIGUSR1);
    }
    pthread_join(t, NULL);
    pthread_barrier_destroy(&ready);
    pthread_sigmask(SIG_UNBLOCK, &s, NULL);
    report("kill to the process, only a reading thread accepts", &res);
}

static void *collector(void *arg)
{
    sigset_t *set = arg;
    sigset_t mine;
    pthread_sigmask(SIG_SETMASK, NULL, &mine);
    printf("collector inherited the mask: %s\n", sigismember(&mine, SIGUSR2) ? "yes" : "no");
    int sig = 0;
    int r = sigwait(set, &sig);
    printf("sigwait: %d, signal %s\n", r, sig == SIGUSR2 ? "SIGUSR2" : "other");
    return NULL;
}

static void with_sigwait(void)
{
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    pthread_t t;
    MUST(pthread_create(&t, NULL, collector, &s) == 0);
    pause_ms(30);
    kill(getpid(), SIGUSR2);
    pthread_join(t, NULL);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "all";
    int all = strcmp(mode, "all") == 0;
    MUST(pipe(pipefd) == 0);
    struct sigaction sa = {0};
    sa.sa_handler = handler; /* no SA_RESTART: blocking calls fail with EINTR */
    MUST(sigaction(SIGUSR1, &sa, NULL) == 0);
    if (all || strcmp(mode, "sleep") == 0)
        directed("pthread_kill to a thread in nanosleep", sleeper);
    if (all || strcmp(mode, "read") == 0)
        directed("pthread_kill to a thread in read", reader);
    if (all || strcmp(mode, "process") == 0)
        process_directed();
    if (all || strcmp(mode, "sigwait") == 0)
        with_sigwait();
    return 0;
}
