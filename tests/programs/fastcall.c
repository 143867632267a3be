/* The fast syscall transport's cases (tests/test_fast_syscalls.py); each mode prints what
 * it saw, compared with a native run. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include <sys/time.h>
#include <unistd.h>

#include "getpid_sites.h"
#include "futex_site.h" /* each operation repeated: later calls come through the stub */

static long loop_getpid(long n)
{
    long bad = 0, pid = getpid();
    for (long i = 0; i < n; i++)
        bad += getpid() != pid;
    return bad;
}

/* Threads that reach the same unpatched sites at once: all must be served. */
#define RACERS 4
static pthread_barrier_t start_line;
static long racer_bad[RACERS];

static void *racer(void *arg)
{
    long id = (long)arg, pid = getpid();
    pthread_barrier_wait(&start_line);
    for (int round = 0; round < 50; round++)
        for (unsigned i = 0; i < NSITES; i++)
            racer_bad[id] += sites[i]() != pid;
    return NULL;
}

static int race(void)
{
    pthread_t t[RACERS];
    pthread_barrier_init(&start_line, NULL, RACERS);
    for (long i = 0; i < RACERS; i++)
        pthread_create(&t[i], NULL, racer, (void *)i);
    long bad = 0;
    for (int i = 0; i < RACERS; i++) {
        pthread_join(t[i], NULL);
        bad += racer_bad[i];
    }
    printf("race: %d threads x %zu sites, wrong results %ld\n", RACERS, NSITES, bad);
    return bad != 0;
}

/* futex hand-over between two threads. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn_changed = PTHREAD_COND_INITIALIZER;
static int turn, rounds = 2000;

static void *pong(void *arg)
{
    (void)arg;
    for (int i = 0; i < rounds; i++) {
        pthread_mutex_lock(&lock);
        while (turn != 1)
            pthread_cond_wait(&turn_changed, &lock);
        turn = 0;
        pthread_cond_signal(&turn_changed);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static int pingpong(void)
{
    pthread_t t;
    pthread_create(&t, NULL, pong, NULL);
    for (int i = 0; i < rounds; i++) {
        pthread_mutex_lock(&lock);
        turn = 1;
        pthread_cond_signal(&turn_changed);
        while (turn != 0)
            pthread_cond_wait(&turn_changed, &lock);
        pthread_mutex_unlock(&lock);
    }
    pthread_join(t, NULL);
    printf("pingpong: %d rounds\n", rounds);
    return 0;
}

/* Signals while calls go through the stubs: a 1 ms interval timer. */
static volatile sig_atomic_t ticks;
static void on_tick(int sig) { (void)sig; ticks++; getppid(); }

static int timer_signals(void)
{
    struct sigaction sa = {.sa_handler = on_tick, .sa_flags = SA_RESTART};
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    setitimer(ITIMER_REAL, &it, NULL);
    long calls = 0, bad = 0, pid = getpid();
    while (ticks < 30) {
        bad += getpid() != pid;
        calls++;
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("timer: 30 handlers ran, wrong results %ld\n", bad);
    return bad != 0;
}

/* A signal while blocked in read(): restarted with SA_RESTART, EINTR without. */
static int pipe_fds[2];
static pthread_t reader;
static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { (void)sig; usr1 = 1; }

static void *signal_then_write(void *arg)
{
    (void)arg;
    usleep(100000);  /* the reader is blocked by then (or reads late: same output) */
    pthread_kill(reader, SIGUSR1);
    while (!usr1)
        usleep(1000);
    usleep(50000);
    if (write(pipe_fds[1], "x", 1) != 1)
        abort();
    return NULL;
}

static int blocked_read(int restart)
{
    struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = restart ? SA_RESTART : 0};
    sigaction(SIGUSR1, &sa, NULL);
    if (pipe(pipe_fds))
        return 1;
    reader = pthread_self();
    pthread_t t;
    pthread_create(&t, NULL, signal_then_write, NULL);
    char c = 0;
    ssize_t n = read(pipe_fds[0], &c, 1);
    int err = errno;
    pthread_join(t, NULL);
    if (n < 0)
        printf("read: -1 %s, handler ran %d\n", strerror(err), (int)usr1);
    else
        printf("read: %zd '%c', handler ran %d\n", n, c, (int)usr1);
    return 0;
}

/* The guest takes GS for itself: its %gs: loads must see its own memory. */
static long gs_data[4] = {11, 22, 33, 44};

static int own_gs(void)
{
    unsigned long before = 1, after = 0;
    syscall(SYS_arch_prctl, ARCH_GET_GS, &before);
    long pid = getpid(), bad = loop_getpid(100);
    if (syscall(SYS_arch_prctl, ARCH_SET_GS, (unsigned long)gs_data))
        return 1;
    syscall(SYS_arch_prctl, ARCH_GET_GS, &after);
    long third;
    __asm__ volatile("mov %%gs:16, %0" : "=r"(third));
    bad += loop_getpid(100) + (getpid() != pid);
    printf("gs: before %lu, after is ours %d, %%gs:16 = %ld, wrong results %ld\n", before,
           after == (unsigned long)gs_data, third, bad);
    return 0;
}

/* GS taken before the process is warm, then a thread: it starts with its creator's GS
   base, as on Linux (and a fast transport made at its start must not take GS from it). */
static void *gs_reader(void *arg)
{
    unsigned long base = 0;
    long third;
    syscall(SYS_arch_prctl, ARCH_GET_GS, &base);
    __asm__ volatile("mov %%gs:16, %0" : "=r"(third));
    printf("thread: gs is ours %d, %%gs:16 = %ld\n", base == (unsigned long)gs_data, third);
    return arg;
}

static int gs_then_thread(void)
{
    if (syscall(SYS_arch_prctl, ARCH_SET_GS, (unsigned long)gs_data))
        return 1;
    pthread_t t;
    pthread_create(&t, NULL, gs_reader, NULL);
    pthread_join(t, NULL);
    long pid = getpid(), bad = loop_getpid(200) + (getpid() != pid), third;
    __asm__ volatile("mov %%gs:16, %0" : "=r"(third));
    printf("main: %%gs:16 = %ld, wrong results %ld\n", third, bad);
    return 0;
}

/* Code mapped, patched, unmapped and mapped again with another call at the same place. */
static int remap(void)
{
    static const unsigned char getpid_code[] = {0xb8, 39, 0, 0, 0, 0x0f, 0x05, 0xc3};
    static const unsigned char getppid_code[] = {0xb8, 110, 0, 0, 0, 0x0f, 0x05, 0xc3};
    long results[2][3];
    void *at = NULL;
    for (int round = 0; round < 2; round++) {
        const unsigned char *code = round ? getppid_code : getpid_code;
        void *p = mmap(at, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                       MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED : 0), -1, 0);
        if (p == MAP_FAILED)
            return 1;
        at = p;
        memcpy(p, code, sizeof getpid_code);
        long (*fn)(void) = (long (*)(void))p;
        for (int i = 0; i < 3; i++)
            results[round][i] = fn();
        munmap(p, 4096);
    }
    printf("remap: getpid %d %d %d, then getppid %d %d %d\n",
           results[0][0] == getpid(), results[0][1] == getpid(), results[0][2] == getpid(),
           results[1][0] == getppid(), results[1][1] == getppid(), results[1][2] == getppid());
    return 0;
}


static unsigned int word = 5;

static void *wake_soon(void *arg)
{
    (void)arg;
    while (__atomic_load_n(&word, __ATOMIC_SEQ_CST) == 5)
        futex_site(&word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    return NULL;
}

static int futex_ops(void)
{
    struct { const char *what; void *addr; long op, val; long timeout_ns; } cases[] = {
        {"wake, no waiter", &word, FUTEX_WAKE_PRIVATE, 1, -1},
        {"wake, shared", &word, FUTEX_WAKE, 1, -1},
        {"wait, word changed", &word, FUTEX_WAIT_PRIVATE, 4, -1},
        {"wait_bitset realtime, word changed", &word,
         FUTEX_WAIT_BITSET_PRIVATE | FUTEX_CLOCK_REALTIME, 6, -1},
        {"wait, misaligned", (char *)&word + 1, FUTEX_WAIT_PRIVATE, 5, -1},
        {"wait, NULL page", (void *)8, FUTEX_WAIT_PRIVATE, 0, -1},
        {"wait, kernel address", (void *)0xffff800000000000ul, FUTEX_WAIT_PRIVATE, 0, -1},
        {"wait, same word, 1 ms", &word, FUTEX_WAIT_PRIVATE, 5, 1000000},
        {"requeue", &word, FUTEX_CMP_REQUEUE_PRIVATE, 1, -1},
        {"unknown command", &word, 99, 0, -1},
    };
    void *gone = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(gone, 4096);
    for (unsigned c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        long last = 0, same = 0;
        int repeat = cases[c].timeout_ns >= 0 ? 5 : 200;
        for (int i = 0; i < repeat; i++) {
            struct timespec ts = {0, cases[c].timeout_ns};
            long r = futex_site(cases[c].addr, cases[c].op, cases[c].val,
                                cases[c].timeout_ns >= 0 ? (void *)&ts : NULL,
                                &word, 5);
            same += i == 0 || r == last;
            last = r;
        }
        printf("futex %s: %s, same every time %d\n", cases[c].what,
               last < 0 ? strerrorname_np(-last) : (last ? "positive" : "0"), same == repeat);
    }
    for (long val = 0; val < 2; val++) {
        long r = futex_site(gone, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
        printf("futex wait, unmapped, val %ld: %s\n", val, r < 0 ? strerrorname_np(-r) : "0");
    }
    /* a wait that blocks until another thread changes the word and wakes it */
    pthread_t t;
    pthread_create(&t, NULL, wake_soon, NULL);
    long r = futex_site(&word, FUTEX_WAIT_PRIVATE, 5, NULL, NULL, 0);
    __atomic_store_n(&word, 6, __ATOMIC_SEQ_CST);
    pthread_join(t, NULL);
    printf("futex wait, woken: %s\n", r == 0 || r == -EAGAIN ? "ok" : strerrorname_np(-r));
    return 0;
}

/* Fast calls, then every thread blocked: one in a read of an empty pipe, main in a sleep
 * of `seconds`, then in a read of stdin until it closes (the test reads the monitor's CPU
 * time at "sleeping" and "awake"). */
static void *read_pipe(void *arg)
{
    char c;
    return (void *)read(*(int *)arg, &c, 1);
}

static int idle(long seconds)
{
    int fds[2];
    pthread_t t;
    if (pipe(fds) || pthread_create(&t, NULL, read_pipe, &fds[0]))
        return 1;
    printf("getpid: wrong results %ld\n", loop_getpid(20000));
    printf("sleeping\n");
    struct timespec ts = {seconds, 0};
    nanosleep(&ts, NULL);
    printf("awake\n");
    char buf[64];
    while (read(0, buf, sizeof buf) > 0)
        ;
    return 0;
}

/* n opens of one file, none closed (so that opens are nearly all the calls made): the
   server serves them unless the file is a FIFO that must wait (then the exit path). */
static int open_many(const char *path, long n)
{
    long failed = 0;
    int fd = -1;
    for (long i = 0; i < n; i++) {
        int got = open(path, O_RDONLY);
        if (got < 0)
            failed++;
        else
            fd = got;
    }
    char c = '?';
    if (fd < 0 || read(fd, &c, 1) != 1)
        c = '!';
    printf("open: %ld opens, failed %ld, first byte %c\n", n, failed, c);
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "getpid";
    setvbuf(stdout, NULL, _IONBF, 0);
    if (!strcmp(mode, "getpid")) {
        long n = argc > 2 ? atol(argv[2]) : 3000;
        printf("getpid: %ld calls, wrong results %ld\n", n, loop_getpid(n));
        if (argc > 3 && !strcmp(argv[3], "pause")) /* then wait to be inspected */
            pause();
        return 0;
    }
    if (!strcmp(mode, "race"))
        return race();
    if (!strcmp(mode, "pingpong"))
        return pingpong();
    if (!strcmp(mode, "timer"))
        return timer_signals();
    if (!strcmp(mode, "restart"))
        return blocked_read(1);
    if (!strcmp(mode, "eintr"))
        return blocked_read(0);
    if (!strcmp(mode, "gs"))
        return own_gs();
    if (!strcmp(mode, "gs_thread"))
        return gs_then_thread();
    if (!strcmp(mode, "remap"))
        return remap();
    if (!strcmp(mode, "futex"))
        return futex_ops();
    if (!strcmp(mode, "open") && argc > 3)
        return open_many(argv[2], atol(argv[3]));
    if (!strcmp(mode, "idle"))
        return idle(argc > 2 ? atol(argv[2]) : 3);
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
