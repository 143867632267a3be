/* The main thread spins in user mode on a volatile flag that a second thread sets after a
 * few syscalls (getpid, short sleeps, a write): with one CPU the second thread runs only if
 * the spinner is preempted. */
#include "karntest.h"
#include <pthread.h>
#include <time.h>
#include <unistd.h>

static volatile int flag;

static void *setter(void *arg) {
    (void)arg;
    struct timespec ms = {0, 1000000};
    for (int i = 0; i < 20; i++)
        getpid();
    for (int i = 0; i < 5; i++)
        nanosleep(&ms, NULL);
    MUST(write(1, "setter ran\n", 11) == 11);
    flag = 1;
    return NULL;
}

int main(void) {
    pthread_t t;
    setvbuf(stdout, NULL, _IONBF, 0);
    MUST(pthread_create(&t, NULL, setter, NULL) == 0);
    unsigned long spins = 0;
    while (!flag)
        spins++;
    MUST(pthread_join(t, NULL) == 0);
    printf("main saw the flag: %s\n", spins > 0 ? "after spinning" : "at once");
    return 0;
}
