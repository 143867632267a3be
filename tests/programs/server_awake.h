/* A thread that keeps the fast transport's server awake (getpid all along) until
   `stop_server_awake` is set: for cases that need their calls served in shared memory. */
#include <pthread.h>
#include <unistd.h>

static volatile int stop_server_awake;

static void *keep_server_awake(void *arg) {
    (void)arg;
    while (!stop_server_awake)
        getpid();
    return NULL;
}
