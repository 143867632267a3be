/* CPU time: getrusage, times, the CPU-time clocks (process, thread, clock_getcpuclockid,
 * pthread_getcpuclockid), clock_getres/clock_nanosleep/clock_settime on them. Prints
 * only what is the same on every run: comparisons, never times. */
#include "karntest.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/times.h>
#include <time.h>
#include <unistd.h>

static long long ns(const struct timespec *t)
{
    return (long long)t->tv_sec * 1000000000LL + t->tv_nsec;
}

static long long clock_ns(clockid_t clock)
{
    struct timespec t;
    MUST(clock_gettime(clock, &t) == 0);
    return ns(&t);
}

static long long tv_ns(const struct timeval *t)
{
    return (long long)t->tv_sec * 1000000000LL + t->tv_usec * 1000LL;
}

/* Burn `amount` ns of this thread's CPU time. */
static volatile unsigned long sink;
static void spin(long long amount)
{
    long long start = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    while (clock_ns(CLOCK_THREAD_CPUTIME_ID) - start < amount)
        for (int i = 0; i < 100000; i++)
            sink += i;
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int spun, done;

static void *worker(void *arg)
{
    (void)arg;
    spin(150000000LL);
    pthread_mutex_lock(&lock);
    spun = 1;
    pthread_cond_broadcast(&cond);
    while (!done)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(void)
{
    struct rusage ru;
    struct timespec t, res;

    long long before = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    spin(300000000LL);
    long long thread_now = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    YESNO("thread clock advanced by the spin", thread_now - before >= 300000000LL);
    YESNO("thread clock below 60 s", thread_now < 60000000000LL);
    long long proc_now = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    YESNO("process clock >= thread clock", proc_now >= thread_now);
    YESNO("process clock below 60 s", proc_now < 60000000000LL);

    SHOW("getrusage SELF", getrusage(RUSAGE_SELF, &ru));
    long long self_cpu = tv_ns(&ru.ru_utime) + tv_ns(&ru.ru_stime);
    YESNO("SELF cpu >= spin", self_cpu >= 290000000LL);
    YESNO("SELF mostly user time", tv_ns(&ru.ru_utime) > tv_ns(&ru.ru_stime));
    YESNO("SELF usec in range", ru.ru_utime.tv_usec >= 0 && ru.ru_utime.tv_usec < 1000000);
    SHOW("getrusage THREAD", getrusage(RUSAGE_THREAD, &ru));
    long long thread_cpu = tv_ns(&ru.ru_utime) + tv_ns(&ru.ru_stime);
    YESNO("THREAD cpu >= spin", thread_cpu >= 290000000LL);
    YESNO("THREAD cpu <= SELF cpu + 10ms", thread_cpu <= self_cpu + 10000000LL);
    SHOW("getrusage CHILDREN", getrusage(RUSAGE_CHILDREN, &ru));
    YESNO("CHILDREN cpu is 0", tv_ns(&ru.ru_utime) + tv_ns(&ru.ru_stime) == 0);
    SHOW("getrusage 7", getrusage(7, &ru));
    SHOW("getrusage bad pointer", syscall(SYS_getrusage, RUSAGE_SELF, (void *)8));

    struct tms tms;
    clock_t elapsed = times(&tms);
    YESNO("times: elapsed > 0", elapsed > 0);
    YESNO("times: user+system >= 25 ticks",
          tms.tms_utime + tms.tms_stime >= 25 * sysconf(_SC_CLK_TCK) / 100);
    YESNO("times: children 0", tms.tms_cutime + tms.tms_cstime == 0);

    /* maxrss: 48 MiB touched must show (Linux counts resident pages lazily: half of it) */
    size_t size = 48 << 20;
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(p != MAP_FAILED);
    for (size_t i = 0; i < size; i += 4096)
        p[i] = 1;
    SHOW("getrusage SELF after touching 48 MiB", getrusage(RUSAGE_SELF, &ru));
    YESNO("maxrss >= half of 48 MiB", ru.ru_maxrss >= 24 * 1024);
    YESNO("maxrss < 1 GiB", ru.ru_maxrss < 1024 * 1024);
    munmap(p, size);
    SHOW("getrusage SELF after munmap", getrusage(RUSAGE_SELF, &ru));
    YESNO("maxrss stays a peak", ru.ru_maxrss >= 24 * 1024);

    /* another thread's clock */
    pthread_t th;
    clockid_t cid;
    MUST(pthread_create(&th, NULL, worker, NULL) == 0);
    pthread_mutex_lock(&lock);
    while (!spun)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    SHOW("pthread_getcpuclockid", pthread_getcpuclockid(th, &cid));
    long long worker_cpu = clock_ns(cid);
    YESNO("worker clock >= its spin", worker_cpu >= 150000000LL);
    YESNO("worker clock < 300ms spin of main", worker_cpu < thread_now);
    SHOW("clock_getres worker clock", clock_getres(cid, &res));
    printf("resolution = %ld.%09ld\n", (long)res.tv_sec, res.tv_nsec);
    pthread_mutex_lock(&lock);
    done = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    pthread_join(th, NULL);
    YESNO("process clock counts both threads",
          clock_ns(CLOCK_PROCESS_CPUTIME_ID) >= thread_now + 150000000LL);

    SHOW("pthread_getcpuclockid self", pthread_getcpuclockid(pthread_self(), &cid));
    YESNO("own thread clock >= spin", clock_ns(cid) >= 300000000LL);
    SHOW("clock_nanosleep on own thread clock", clock_nanosleep(cid, 0, &res, NULL));
    SHOW("clock_getcpuclockid 0", clock_getcpuclockid(0, &cid));
    YESNO("process clock by id >= both spins", clock_ns(cid) >= 450000000LL);
    SHOW("clock_getres PROCESS", clock_getres(CLOCK_PROCESS_CPUTIME_ID, &res));
    printf("resolution = %ld.%09ld\n", (long)res.tv_sec, res.tv_nsec);
    SHOW("clock_getres THREAD", clock_getres(CLOCK_THREAD_CPUTIME_ID, &res));
    printf("resolution = %ld.%09ld\n", (long)res.tv_sec, res.tv_nsec);
    /* a per-thread clock id (tid 0 is the caller) with the invalid clock kind 3 */
    SHOW("clock_gettime bad CPU clock kind", syscall(SYS_clock_gettime, (clockid_t)(~0 << 3 | 7), &t));
    SHOW("clock_gettime VIRT of own thread", syscall(SYS_clock_gettime, (clockid_t)(~0 << 3 | 5), &t));
    YESNO("VIRT counted", ns(&t) > 0);
    SHOW("clock_gettime PROF of process", syscall(SYS_clock_gettime, (clockid_t)(~0 << 3 | 0), &t));
    YESNO("PROF counted", ns(&t) > 0);
    t.tv_sec = 0;
    t.tv_nsec = 1000000;
    SHOW("clock_nanosleep THREAD", clock_nanosleep(CLOCK_THREAD_CPUTIME_ID, 0, &t, NULL));
    SHOW("clock_settime PROCESS", clock_settime(CLOCK_PROCESS_CPUTIME_ID, &t));
    SHOW("clock_settime MONOTONIC", clock_settime(CLOCK_MONOTONIC, &t));
    SHOW("clock_settime bad clock", clock_settime((clockid_t)1234, &t));
    /* CLOCK_REALTIME: only without privileges (never change the host's clock) */
    MUST(setgid(65534) == 0 && setuid(65534) == 0);
    MUST(clock_gettime(CLOCK_REALTIME, &t) == 0);
    SHOW("clock_settime REALTIME unprivileged", clock_settime(CLOCK_REALTIME, &t));
    t.tv_nsec = 2000000000L;
    SHOW("clock_settime REALTIME bad nsec", clock_settime(CLOCK_REALTIME, &t));
    return 0;
}
