/* A high-priority periodic process preempts a busy low-priority one: the high one measures
 * how late each of its releases is (its release point is DEADLINE_TIME - TIME_CAPACITY)
 * and checks that the low one does not run while it does. argv[1] "busy" starts the
 * spinning low-priority process; "idle" leaves it out (the baseline). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apex.h"

#define PERIOD_NS 20000000LL
#define RELEASES 60

static volatile unsigned long spins;
static long long lateness[RELEASES];
static int concurrent, misses;

static void low(void)
{
    for (;;)
        spins++;  /* never calls APEX: only the preemption signal can stop it */
}

static int compare(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static void high(void)
{
    RETURN_CODE_TYPE rc;
    PROCESS_ID_TYPE me;
    PROCESS_STATUS_TYPE st;
    SYSTEM_TIME_TYPE now, end;
    GET_MY_ID(&me, &rc);
    for (int i = 0; i < RELEASES; i++) {
        PERIODIC_WAIT(&rc);
        GET_TIME(&now, &rc);
        GET_PROCESS_STATUS(me, &st, &rc);
        lateness[i] = now - (st.DEADLINE_TIME - st.ATTRIBUTES.TIME_CAPACITY);
        unsigned long before = spins;
        do  /* busy for 1 ms: the low process must not move meanwhile */
            GET_TIME(&end, &rc);
        while (end - now < 1000000);
        concurrent += spins != before;
    }
    qsort(lateness, RELEASES, sizeof lateness[0], compare);
    printf("releases %d p50_us %lld p99_us %lld max_us %lld concurrent %d missed %d low_spun %d\n",
           RELEASES, lateness[RELEASES / 2] / 1000, lateness[RELEASES * 99 / 100] / 1000,
           lateness[RELEASES - 1] / 1000, concurrent, misses, spins > 0);
    SET_PARTITION_MODE(IDLE, &rc);
}

static void on_error(void)
{
    ERROR_STATUS_TYPE e;
    RETURN_CODE_TYPE rc;
    for (GET_ERROR_STATUS(&e, &rc); rc == NO_ERROR; GET_ERROR_STATUS(&e, &rc))
        misses += e.ERROR_CODE == DEADLINE_MISSED;
    STOP_SELF();
}

int main(int argc, char **argv)
{
    RETURN_CODE_TYPE rc;
    PROCESS_ID_TYPE id;
    PROCESS_ATTRIBUTE_TYPE a = {.PERIOD = PERIOD_NS, .TIME_CAPACITY = PERIOD_NS, .ENTRY_POINT = high,
                                .STACK_SIZE = 65536, .BASE_PRIORITY = 20, .DEADLINE = SOFT,
                                .NAME = "high"};
    CREATE_ERROR_HANDLER(on_error, 65536, &rc);
    CREATE_PROCESS(&a, &id, &rc);
    START(id, &rc);
    if (argc > 1 && !strcmp(argv[1], "busy")) {
        PROCESS_ATTRIBUTE_TYPE b = {.PERIOD = INFINITE_TIME_VALUE,
                                    .TIME_CAPACITY = INFINITE_TIME_VALUE, .ENTRY_POINT = low,
                                    .STACK_SIZE = 65536, .BASE_PRIORITY = 5, .DEADLINE = SOFT,
                                    .NAME = "low"};
        CREATE_PROCESS(&b, &id, &rc);
        START(id, &rc);
    }
    SET_PARTITION_MODE(NORMAL, &rc);
    return 1;
}
