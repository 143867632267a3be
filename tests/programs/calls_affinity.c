/* sched_setaffinity/sched_getaffinity: a thread's mask is its own, read back as set,
   inherited by the threads it creates and by a fork's child; EINVAL for a mask naming no
   CPU of the machine and for a buffer too small, ESRCH for no such thread. Prints counts
   and comparisons, never CPU numbers (the runs may differ in which CPUs they have: karn
   is given as many as the native run has). */
#include "karntest.h"
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static cpu_set_t first_only; /* the lowest CPU of the initial mask */

static int same_as(pid_t tid, const cpu_set_t *want) {
    cpu_set_t got;
    if (sched_getaffinity(tid, sizeof got, &got) != 0)
        return 0;
    return CPU_EQUAL(&got, want);
}

static void *inheritor(void *arg) {
    (void)arg;
    YESNO("a thread made after the change inherits it", same_as(0, &first_only));
    return NULL;
}

static pid_t thread_tid;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int stage;

static void *waiter(void *arg) {
    (void)arg;
    pthread_mutex_lock(&lock);
    thread_tid = (pid_t)syscall(SYS_gettid);
    stage = 1;
    pthread_cond_broadcast(&changed);
    while (stage < 2)
        pthread_cond_wait(&changed, &lock);
    pthread_mutex_unlock(&lock);
    YESNO("the thread sees the mask main gave it", same_as(0, &first_only));
    return NULL;
}

int main(void) {
    cpu_set_t initial;
    MUST(sched_getaffinity(0, sizeof initial, &initial) == 0);
    int count = CPU_COUNT(&initial);
    printf("CPUs in the initial mask: %d\n", count);
    CPU_ZERO(&first_only);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &initial)) {
            CPU_SET(cpu, &first_only);
            break;
        }

    /* another thread's mask, set by main: main's own is unchanged */
    pthread_t t;
    MUST(pthread_create(&t, NULL, waiter, NULL) == 0);
    pthread_mutex_lock(&lock);
    while (stage < 1)
        pthread_cond_wait(&changed, &lock);
    SHOW("setaffinity of the other thread", sched_setaffinity(thread_tid, sizeof first_only,
                                                              &first_only));
    YESNO("getaffinity of the other thread reads it back", same_as(thread_tid, &first_only));
    YESNO("main's own mask unchanged", same_as(0, &initial));
    stage = 2;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
    pthread_join(t, NULL);

    /* main's own: read back, inherited by a new thread and by a fork's child */
    SHOW("setaffinity of main", sched_setaffinity(0, sizeof first_only, &first_only));
    cpu_set_t now;
    MUST(sched_getaffinity(0, sizeof now, &now) == 0);
    printf("CPUs in the mask now: %d\n", CPU_COUNT(&now));
    YESNO("read back as set", CPU_EQUAL(&now, &first_only));
    MUST(pthread_create(&t, NULL, inheritor, NULL) == 0);
    pthread_join(t, NULL);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        YESNO("a fork's child inherits it", same_as(0, &first_only));
        fflush(stdout);
        _exit(0);
    }
    int status;
    MUST(waitpid(child, &status, 0) == child);

    /* errors */
    cpu_set_t none;
    CPU_ZERO(&none);
    SHOW("setaffinity of an empty mask", sched_setaffinity(0, sizeof none, &none));
    size_t big = CPU_ALLOC_SIZE(4096);
    cpu_set_t *far = CPU_ALLOC(4096);
    CPU_ZERO_S(big, far);
    CPU_SET_S(4000, big, far);
    SHOW("setaffinity of CPU 4000 alone", sched_setaffinity(0, big, far));
    CPU_FREE(far);
    YESNO("the mask survives the refusals", same_as(0, &first_only));
    SHOW("getaffinity into 1 byte", syscall(SYS_sched_getaffinity, 0, 1, &now));
    SHOW("getaffinity into 12 bytes", syscall(SYS_sched_getaffinity, 0, 12, &now));
    SHOW("getaffinity of no such thread", sched_getaffinity(999999, sizeof now, &now));
    SHOW("setaffinity of no such thread", sched_setaffinity(999999, sizeof now, &first_only));
    SHOW("getaffinity of pid -1", sched_getaffinity(-1, sizeof now, &now));
    SHOW("setaffinity of pid -1", sched_setaffinity(-1, sizeof now, &first_only));

    SHOW("setaffinity back to all", sched_setaffinity(0, sizeof initial, &initial));
    YESNO("all again", same_as(0, &initial));
    return 0;
}
