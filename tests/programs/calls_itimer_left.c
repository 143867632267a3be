/* An armed periodic timer never reads as 0 (which would mean disarmed), even when it is
 * read just as it expires: getitimer(ITIMER_PROF) and timer_gettime report the time to its
 * next expiry. A short interval makes the moment after an expiry common. (Not ITIMER_REAL:
 * Linux re-arms it only when SIGALRM is dequeued, and reads 0 until then.) */
#include "karntest.h"
#include <signal.h>
#include <sys/time.h>
#include <time.h>

#define READS 3000

int main(void)
{
    signal(SIGALRM, SIG_IGN);
    signal(SIGPROF, SIG_IGN);
    struct itimerval it = {{0, 200}, {0, 200}}, cur;
    MUST(setitimer(ITIMER_PROF, &it, NULL) == 0);
    int zero = 0;
    for (int i = 0; i < READS; i++) {
        MUST(getitimer(ITIMER_PROF, &cur) == 0);
        zero += cur.it_value.tv_sec == 0 && cur.it_value.tv_usec == 0;
    }
    printf("ITIMER_PROF read as 0 while armed: %s\n", zero ? "yes" : "no");
    it.it_value.tv_usec = it.it_interval.tv_usec = 0;
    MUST(setitimer(ITIMER_PROF, &it, NULL) == 0);
    timer_t t;
    struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGALRM};
    MUST(timer_create(CLOCK_MONOTONIC, &ev, &t) == 0);
    struct itimerspec spec = {{0, 200000}, {0, 200000}}, got;
    MUST(timer_settime(t, 0, &spec, NULL) == 0);
    zero = 0;
    for (int i = 0; i < READS; i++) {
        MUST(timer_gettime(t, &got) == 0);
        zero += got.it_value.tv_sec == 0 && got.it_value.tv_nsec == 0;
    }
    printf("timer_gettime read as 0 while armed: %s\n", zero ? "yes" : "no");
    return 0;
}
