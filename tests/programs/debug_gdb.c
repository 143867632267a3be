/* For the gdb stub tests: a local variable to print, a call chain for bt, and with the
 * argument "threads" four threads that wait in a barrier while main stops at a breakpoint;
 * with "sleeper" a thread in a loop of sleeps (below). */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static pthread_barrier_t barrier;

__attribute__((noinline)) int checkpoint(int value)
{
    return value * 2;  /* gdb breaks here with all threads alive */
}

static void *worker(void *arg)
{
    pthread_barrier_wait(&barrier);
    pthread_barrier_wait(&barrier);
    return arg;
}

/* "sleeper": main sleeps 5 ms at a time, each sleep's result checked, while another
   thread stops at checkpoint: gdb steps main, parked as its call returns. */
static void *stopper(void *arg)
{
    struct timespec twelve_ms = {0, 12000000};
    nanosleep(&twelve_ms, NULL);
    checkpoint(42);
    return arg;
}

static void sleeper(void)
{
    struct timespec five_ms = {0, 5000000};
    for (int i = 0; i < 20; i++) {
        long r = nanosleep(&five_ms, NULL);
        if (r != 0) {
            printf("nanosleep gave %ld\n", r);
            return;
        }
    }
    puts("sleeper ok");
}

__attribute__((noinline)) int compute(int n)
{
    int total = 0;
    for (int i = 1; i <= n; i++)
        total += i;
    return total;
}

int main(int argc, char **argv)
{
    int answer = compute(6) * 2 + 0;
    if (argc > 1 && strcmp(argv[1], "threads") == 0) {
        pthread_t t[3];
        pthread_barrier_init(&barrier, NULL, 4);
        for (int i = 0; i < 3; i++)
            pthread_create(&t[i], NULL, worker, NULL);
        pthread_barrier_wait(&barrier);
        checkpoint(answer);
        pthread_barrier_wait(&barrier);
        for (int i = 0; i < 3; i++)
            pthread_join(t[i], NULL);
    }
    if (argc > 1 && strcmp(argv[1], "sleeper") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, stopper, NULL);
        sleeper();
        pthread_join(t, NULL);
    }
    printf("answer %d\n", answer);
    return answer == 42 ? 0 : 1;
}
