/* Time: clock_gettime, clock_getres, gettimeofday, time, nanosleep, clock_nanosleep. */
#include "karntest.h"

#include <sys/time.h>
#include <time.h>

static long long ns(const struct timespec *t)
{
    return (long long)t->tv_sec * 1000000000LL + t->tv_nsec;
}

int main(void)
{
    struct timespec a, b, res, req;
    struct timeval tv;

    SHOW("clock_gettime MONOTONIC", clock_gettime(CLOCK_MONOTONIC, &a));
    SHOW("clock_gettime MONOTONIC again", clock_gettime(CLOCK_MONOTONIC, &b));
    YESNO("monotonic does not go back", ns(&b) >= ns(&a));
    YESNO("tv_nsec in range", a.tv_nsec >= 0 && a.tv_nsec < 1000000000L);

    SHOW("clock_getres MONOTONIC", clock_getres(CLOCK_MONOTONIC, &res));
    YESNO("resolution <= 1ms", res.tv_sec == 0 && res.tv_nsec > 0 && res.tv_nsec <= 1000000);
    SHOW("clock_getres REALTIME", clock_getres(CLOCK_REALTIME, &res));
    YESNO("resolution <= 1ms", res.tv_sec == 0 && res.tv_nsec > 0 && res.tv_nsec <= 1000000);
    SHOW("clock_gettime bad clock", clock_gettime((clockid_t)1234, &a));

    /* nanosleep 10 ms really sleeps at least 10 ms, and not absurdly long */
    clock_gettime(CLOCK_MONOTONIC, &a);
    req.tv_sec = 0;
    req.tv_nsec = 10 * 1000 * 1000;
    SHOW("nanosleep 10ms", nanosleep(&req, NULL));
    clock_gettime(CLOCK_MONOTONIC, &b);
    long long slept = ns(&b) - ns(&a);
    YESNO("slept >= 10ms", slept >= 10000000LL);
    YESNO("slept < 2s", slept < 2000000000LL);
    req.tv_nsec = 1000000000L;
    SHOW("nanosleep bad nsec", nanosleep(&req, NULL));

    /* clock_nanosleep relative and absolute */
    clock_gettime(CLOCK_MONOTONIC, &a);
    req.tv_sec = 0;
    req.tv_nsec = 5 * 1000 * 1000;
    printf("clock_nanosleep rel = %d\n", clock_nanosleep(CLOCK_MONOTONIC, 0, &req, NULL));
    clock_gettime(CLOCK_MONOTONIC, &b);
    YESNO("slept >= 5ms", ns(&b) - ns(&a) >= 5000000LL);
    clock_gettime(CLOCK_MONOTONIC, &a);
    req = a;
    req.tv_nsec += 5 * 1000 * 1000;
    if (req.tv_nsec >= 1000000000L) {
        req.tv_sec++;
        req.tv_nsec -= 1000000000L;
    }
    printf("clock_nanosleep abs = %d\n", clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &req, NULL));
    clock_gettime(CLOCK_MONOTONIC, &b);
    YESNO("reached deadline", ns(&b) >= ns(&req));

    /* wall clock: gettimeofday, time and CLOCK_REALTIME agree */
    time_t t0 = time(NULL);
    SHOW("gettimeofday", gettimeofday(&tv, NULL));
    SHOW("clock_gettime REALTIME", clock_gettime(CLOCK_REALTIME, &a));
    time_t t1 = time(NULL);
    YESNO("time plausible (after 2024)", t0 > 1704067200);
    YESNO("gettimeofday close to time", tv.tv_sec >= t0 - 1 && tv.tv_sec <= t1 + 1);
    YESNO("usec in range", tv.tv_usec >= 0 && tv.tv_usec < 1000000);
    YESNO("REALTIME close to time", a.tv_sec >= t0 - 1 && a.tv_sec <= t1 + 1);
    YESNO("time does not go back", t1 >= t0);
    struct timespec c;
    SHOW("CLOCK_MONOTONIC_COARSE", clock_gettime(CLOCK_MONOTONIC_COARSE, &c));
    SHOW("CLOCK_BOOTTIME", clock_gettime(CLOCK_BOOTTIME, &c));
    return 0;
}
