/* Per-operation cost measured inside the program (no start-up): `getpid N` (glibc's
 * getpid(), a `mov $39,%eax; syscall` site the fast transport patches), `pingpong N`
 * (two threads handing a turn over through a mutex and a condition variable: futexes),
 * `threads N` (create a thread and join it, one at a time) and `files N PATH` (open,
 * fstat, pread and close PATH: the file calls of a static web server's request). Prints
 * microseconds per operation. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int turn;
static long rounds;

static void *pong(void *arg)
{
    (void)arg;
    for (long i = 0; i < rounds; i++) {
        pthread_mutex_lock(&lock);
        while (turn != 1)
            pthread_cond_wait(&changed, &lock);
        turn = 0;
        pthread_cond_signal(&changed);
        pthread_mutex_unlock(&lock);
    }
    return NULL;
}

static void *nothing(void *arg)
{
    return arg;
}

int main(int argc, char **argv)
{
    if (argc != 3 && !(argc == 4 && !strcmp(argv[1], "files")))
        return 2;
    long n = atol(argv[2]);
    double start = now_us();
    if (!strcmp(argv[1], "getpid")) {
        long sum = 0;
        for (long i = 0; i < n; i++)
            sum += getpid();
        if (sum == 0)
            return 1;
    } else if (!strcmp(argv[1], "files")) {
        char buf[4096];
        struct stat st;
        for (long i = 0; i < n; i++) {
            int fd = open(argv[3], O_RDONLY | O_CLOEXEC);
            if (fd < 0 || fstat(fd, &st) || pread(fd, buf, sizeof buf, 0) != st.st_size ||
                close(fd))
                return 1;
        }
    } else if (!strcmp(argv[1], "threads")) {
        for (long i = 0; i < n; i++) {
            pthread_t t;
            if (pthread_create(&t, NULL, nothing, NULL) || pthread_join(t, NULL))
                return 1;
        }
    } else {
        pthread_t t;
        rounds = n;
        pthread_create(&t, NULL, pong, NULL);
        start = now_us();
        for (long i = 0; i < n; i++) {
            pthread_mutex_lock(&lock);
            turn = 1;
            pthread_cond_signal(&changed);
            while (turn != 0)
                pthread_cond_wait(&changed, &lock);
            pthread_mutex_unlock(&lock);
        }
        pthread_join(t, NULL);
    }
    printf("%.3f\n", (now_us() - start) / n);
    return 0;
}
