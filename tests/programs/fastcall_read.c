/* read() through glibc's own wrapper, whose sites are `xor %eax,%eax; syscall` (short
 * sites, docs/design/fast-syscalls.md section 3.5): N one-byte reads of /dev/zero and N of
 * a pipe the program fills itself, single-threaded (glibc's first site) and, with "thread",
 * after starting a thread (the cancellable site). A SIGALRM interval timer (SA_RESTART)
 * fires meanwhile: every read still returns 1 byte. Then a read through the same (by now
 * patched) site blocks on an empty pipe that a forked child fills once 3 ticks came while
 * the parent was in that read (counted in a shared page): they interrupt it and it
 * restarts. With "race", first 4 threads read /dev/zero at once from a
 * barrier (all meet the unpatched cancellable site together: a patch while the others
 * run). Prints totals only, as native does. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

static volatile sig_atomic_t ticks, reading;
static volatile sig_atomic_t *ticks_in_read; /* shared with the forked writer */

static void on_alarm(int sig)
{
    (void)sig;
    ticks++;
    if (reading)
        (*ticks_in_read)++;
}

static void *idle(void *arg)
{
    return arg;
}

static pthread_barrier_t start;
static long race_n;

static long loop(int fd, int wfd, long n);

static void *racer(void *arg)
{
    int fd = open("/dev/zero", O_RDONLY);
    pthread_barrier_wait(&start);
    *(long *)arg = fd < 0 ? -1 : loop(fd, -1, race_n);
    close(fd);
    return NULL;
}

static long loop(int fd, int wfd, long n)
{
    long bytes = 0, bad = 0;
    char c = 'x';
    for (long i = 0; i < n; i++) {
        if (wfd >= 0 && write(wfd, "y", 1) != 1)
            bad++;
        ssize_t r = read(fd, &c, 1);
        if (r == 1)
            bytes++;
        else
            bad++;
        if (c != (wfd >= 0 ? 'y' : '\0'))
            bad++;
    }
    return bad ? -bad : bytes;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000;
    if (argc > 2 && strcmp(argv[2], "thread") == 0) {
        pthread_t t;
        if (pthread_create(&t, NULL, idle, NULL) != 0 || pthread_join(t, NULL) != 0)
            return 2;
    }
    if (argc > 2 && strcmp(argv[2], "race") == 0) {
        enum { RACERS = 4 };
        pthread_t t[RACERS];
        long got[RACERS], total = 0;
        race_n = n;
        pthread_barrier_init(&start, NULL, RACERS);
        for (int i = 0; i < RACERS; i++)
            if (pthread_create(&t[i], NULL, racer, &got[i]) != 0)
                return 2;
        for (int i = 0; i < RACERS; i++) {
            pthread_join(t[i], NULL);
            total += got[i];
        }
        printf("race %ld\n", total);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 2000}, {0, 2000}};
    setitimer(ITIMER_REAL, &it, NULL);
    int zero = open("/dev/zero", O_RDONLY);
    int p[2];
    if (zero < 0 || pipe(p) != 0)
        return 3;
    printf("zero %ld\n", loop(zero, -1, n));
    printf("pipe %ld\n", loop(p[0], p[1], n));
    fflush(stdout);
    ticks_in_read = mmap(NULL, sizeof *ticks_in_read, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (ticks_in_read == MAP_FAILED)
        return 3;
    pid_t child = fork();
    if (child == 0) { /* waits for the ticks, not for a time (a loaded host) */
        for (int i = 0; i < 60000 && *ticks_in_read < 3; i++) {
            struct timespec later = {0, 1000000};
            while (nanosleep(&later, &later) != 0)
                ;
        }
        _exit(write(p[1], "z", 1) == 1 ? 0 : 1);
    }
    char c = 0;
    ticks = 0;
    reading = 1;
    ssize_t r = read(p[0], &c, 1);
    reading = 0;
    int status = 0;
    waitpid(child, &status, 0);
    printf("blocked read %zd %c, interrupted %s, child %d\n", r, c, ticks > 0 ? "yes" : "no",
           WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
