/* Timers on CPU time: setitimer ITIMER_PROF/ITIMER_VIRTUAL, and timer_create on the
 * process's, the thread's and another thread's CPU clock (SIGEV_SIGNAL, SIGEV_THREAD_ID).
 * Prints counts as comparisons only. */
#include "karntest.h"

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t prof, vtalrm, usr1, usr2;
static volatile unsigned long sink;

static void on_signal(int sig)
{
    if (sig == SIGPROF)
        prof++;
    else if (sig == SIGVTALRM)
        vtalrm++;
    else if (sig == SIGUSR1)
        usr1++;
    else if (sig == SIGUSR2)
        usr2++;
}

static long long cpu_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void spin(long long ns)
{
    long long start = cpu_ns();
    while (cpu_ns() - start < ns)
        for (int i = 0; i < 10000; i++)
            sink += i;
}

/* The worker spins until its own timer's signal came (or 5 s of CPU): the main thread
 * waits in pthread_join, so nothing here needs the CPU handed from a spinning thread. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static pid_t worker_tid;
static int armed;

static void *worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    worker_tid = syscall(SYS_gettid);
    pthread_cond_broadcast(&cond);
    while (!armed)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    long long start = cpu_ns();
    while (usr2 < 2 && cpu_ns() - start < 5000000000LL)
        for (int i = 0; i < 10000; i++)
            sink += i;
    return NULL;
}

int main(void)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    for (int s = SIGUSR1; s <= SIGPROF; s++)
        if (s == SIGUSR1 || s == SIGUSR2 || s == SIGPROF || s == SIGVTALRM)
            sigaction(s, &sa, NULL);

    struct itimerval it = {{0, 10000}, {0, 10000}}, cur;
    SHOW("setitimer PROF 10ms", setitimer(ITIMER_PROF, &it, NULL));
    SHOW("getitimer PROF", getitimer(ITIMER_PROF, &cur));
    /* Linux may add a tick to the value it reports */
    printf("interval %ld.%06ld, value in (0, 20ms]: %s\n", (long)cur.it_interval.tv_sec,
           (long)cur.it_interval.tv_usec,
           cur.it_value.tv_sec == 0 && cur.it_value.tv_usec > 0 && cur.it_value.tv_usec <= 20000 ? "yes" : "no");
    spin(300000000LL);
    it.it_value.tv_usec = it.it_interval.tv_usec = 0;
    SHOW("disarm PROF", setitimer(ITIMER_PROF, &it, &cur));
    int got = prof;
    YESNO("at least 10 SIGPROF in 300 ms of CPU", got >= 10);
    YESNO("at most 40", got <= 40);
    spin(50000000LL);
    YESNO("none after disarming", prof == got);

    it.it_value.tv_usec = 20000;
    it.it_interval.tv_usec = 0;
    SHOW("setitimer VIRTUAL 20ms once", setitimer(ITIMER_VIRTUAL, &it, NULL));
    spin(100000000LL);
    YESNO("one SIGVTALRM", vtalrm == 1);
    SHOW("getitimer VIRTUAL after it fired", getitimer(ITIMER_VIRTUAL, &cur));
    YESNO("disarmed once it fired", cur.it_value.tv_sec == 0 && cur.it_value.tv_usec == 0);
    SHOW("setitimer bad which", setitimer(5, &it, NULL));

    /* timer_create on the process's CPU clock */
    timer_t t1, t2, t3;
    struct sigevent ev = {0};
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGUSR1;
    SHOW("timer_create PROCESS_CPUTIME", timer_create(CLOCK_PROCESS_CPUTIME_ID, &ev, &t1));
    struct itimerspec spec = {{0, 20000000}, {0, 20000000}}, left;
    SHOW("timer_settime 20ms", timer_settime(t1, 0, &spec, NULL));
    SHOW("timer_gettime", timer_gettime(t1, &left));
    YESNO("interval 20ms", left.it_interval.tv_sec == 0 && left.it_interval.tv_nsec == 20000000);
    spin(200000000LL);
    struct itimerspec off = {{0, 0}, {0, 0}};
    SHOW("disarm", timer_settime(t1, 0, &off, NULL));
    YESNO("at least 5 SIGUSR1 in 200 ms", usr1 >= 5);
    YESNO("at most 20", usr1 <= 20);
    SHOW("timer_delete", timer_delete(t1));

    /* the calling thread's clock, signal to this thread */
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGUSR2;
#ifdef __GLIBC__
    ev._sigev_un._tid = syscall(SYS_gettid);
#else
    ev.sigev_notify_thread_id = syscall(SYS_gettid);
#endif
    SHOW("timer_create THREAD_CPUTIME", timer_create(CLOCK_THREAD_CPUTIME_ID, &ev, &t2));
    struct itimerspec once = {{0, 0}, {0, 30000000}};
    SHOW("timer_settime 30ms", timer_settime(t2, 0, &once, NULL));
    spin(150000000LL);
    YESNO("one SIGUSR2", usr2 == 1);
    SHOW("timer_delete", timer_delete(t2));

    /* another thread's clock, its signal to that thread */
    pthread_t th;
    clockid_t cid;
    MUST(pthread_create(&th, NULL, worker, NULL) == 0);
    pthread_mutex_lock(&lock);
    while (!worker_tid)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    MUST(pthread_getcpuclockid(th, &cid) == 0);
#ifdef __GLIBC__
    ev._sigev_un._tid = worker_tid;
#else
    ev.sigev_notify_thread_id = worker_tid;
#endif
    SHOW("timer_create on the worker's clock", timer_create(cid, &ev, &t3));
    struct itimerspec at50 = {{0, 0}, {0, 50000000}};
    SHOW("timer_settime 50ms absolute", timer_settime(t3, TIMER_ABSTIME, &at50, NULL));
    pthread_mutex_lock(&lock);
    armed = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    pthread_join(th, NULL);
    YESNO("the worker's timer fired", usr2 == 2);
    return 0;
}
