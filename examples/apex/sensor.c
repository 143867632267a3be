/* The sensor partition of the APEX avionics example (avionics.toml, docs/apex.md).
 *
 * "acquire", a periodic process (100 ms), writes the altitude to the sampling port
 * `altitude` at each release and measures how late the release was; "command", an
 * aperiodic process of lower priority, waits on the queuing port `commands` for what the
 * display sends back through the guard. After RELEASES releases the partition goes IDLE.
 * Plain ARINC 653 APEX: it builds against any APEX implementation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apex.h"

#define PERIOD_NS 100000000LL
#define MS 1000000LL

static SAMPLING_PORT_ID_TYPE altitude;
static QUEUING_PORT_ID_TYPE commands;
static int releases = 40, missed, received;
static long long lateness[1000];
static double climb = 5.0;

static int compare(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static void acquire(void)
{
    RETURN_CODE_TYPE rc;
    PROCESS_ID_TYPE me;
    PROCESS_STATUS_TYPE st;
    SYSTEM_TIME_TYPE now;
    char msg[64];
    double alt = 1000.0;
    GET_MY_ID(&me, &rc);
    for (int i = 0; i < releases; i++) {
        PERIODIC_WAIT(&rc);
        GET_TIME(&now, &rc);
        GET_PROCESS_STATUS(me, &st, &rc);  /* this release: DEADLINE_TIME - TIME_CAPACITY */
        lateness[i] = now - (st.DEADLINE_TIME - st.ATTRIBUTES.TIME_CAPACITY);
        alt += climb;
        int len = snprintf(msg, sizeof msg, "{\"seq\":%d,\"alt\":%.1f}", i, alt);
        WRITE_SAMPLING_MESSAGE(altitude, (MESSAGE_ADDR_TYPE)msg, len, &rc);
        if (rc != NO_ERROR)
            printf("sensor: write failed: %d\n", rc);
    }
    qsort(lateness, releases, sizeof lateness[0], compare);
    printf("sensor: releases %d jitter_p50_us %lld jitter_p99_us %lld jitter_max_us %lld "
           "deadline_missed %d commands %d\n", releases, lateness[releases / 2] / 1000,
           lateness[releases * 99 / 100] / 1000, lateness[releases - 1] / 1000, missed, received);
    SET_PARTITION_MODE(IDLE, &rc);
}

static void command(void)
{
    APEX_BYTE msg[64];
    MESSAGE_SIZE_TYPE len;
    RETURN_CODE_TYPE rc;
    for (;;) {
        RECEIVE_QUEUING_MESSAGE(commands, INFINITE_TIME_VALUE, msg, &len, &rc);
        if (rc != NO_ERROR)
            continue;
        received++;
        printf("sensor: command %.*s\n", (int)len, msg);
        if (strstr((char *)msg, "\"hold\""))
            climb = 0.0;
    }
}

static void health(void)
{
    ERROR_STATUS_TYPE e;
    RETURN_CODE_TYPE rc;
    for (GET_ERROR_STATUS(&e, &rc); rc == NO_ERROR; GET_ERROR_STATUS(&e, &rc)) {
        missed += e.ERROR_CODE == DEADLINE_MISSED;
        printf("sensor: error %d in process %d\n", e.ERROR_CODE, e.FAILED_PROCESS_ID);
    }
    STOP_SELF();
}

static void create(const char *name, void (*entry)(void), int priority, SYSTEM_TIME_TYPE period)
{
    RETURN_CODE_TYPE rc;
    PROCESS_ID_TYPE id;
    PROCESS_ATTRIBUTE_TYPE a = {.PERIOD = period, .TIME_CAPACITY = period,
                                .ENTRY_POINT = entry, .STACK_SIZE = 65536,
                                .BASE_PRIORITY = priority, .DEADLINE = HARD};
    snprintf(a.NAME, sizeof a.NAME, "%s", name);
    CREATE_PROCESS(&a, &id, &rc);
    START(id, &rc);
    if (rc != NO_ERROR)
        printf("sensor: cannot start %s: %d\n", name, rc);
}

int main(int argc, char **argv)
{
    RETURN_CODE_TYPE rc;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1)
        releases = atoi(argv[1]) < 1000 ? atoi(argv[1]) : 999;
    CREATE_SAMPLING_PORT("altitude", 64, SOURCE, INFINITE_TIME_VALUE, &altitude, &rc);
    CREATE_QUEUING_PORT("commands", 64, 8, DESTINATION, FIFO, &commands, &rc);
    if (rc != NO_ERROR)
        printf("sensor: port configuration: %d\n", rc);
    CREATE_ERROR_HANDLER(health, 65536, &rc);
    create("acquire", acquire, 20, PERIOD_NS);
    create("command", command, 10, INFINITE_TIME_VALUE);
    SET_PARTITION_MODE(NORMAL, &rc);
    return 1;
}
