/* Port latency through APEX and through raw /dev/ports (bench/apex.py). argv[1]: "ping"
 * sends N queuing messages carrying their send time, one every 5 ms, on `q`; "pong"
 * receives them and reports the write-to-read latency; argv[2]: "apex" or "raw". The
 * pong side also times READ_SAMPLING_MESSAGE against a raw read() of `s`. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apex.h"

#define N 400
static int apex;
static QUEUING_PORT_ID_TYPE q;
static SAMPLING_PORT_ID_TYPE s;

static long long now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int compare(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static void summary(const char *what, long long *v, int n)
{
    qsort(v, n, sizeof *v, compare);
    printf("%s p50_us %.1f p99_us %.1f\n", what, v[n / 2] / 1e3, v[n * 99 / 100] / 1e3);
}

static void ping(void)
{
    RETURN_CODE_TYPE rc;
    int fd = apex ? -1 : open("/dev/ports/q", O_WRONLY);
    for (int i = 0; i < N + 20; i++) {
        long long t = now();
        if (apex)
            SEND_QUEUING_MESSAGE(q, (MESSAGE_ADDR_TYPE)&t, sizeof t, INFINITE_TIME_VALUE, &rc);
        else if (write(fd, &t, sizeof t) != sizeof t)
            perror("write");
        if (apex)
            TIMED_WAIT(5000000, &rc);
        else
            usleep(5000);
    }
    sleep(2);
    exit(0);
}

static void pong(void)
{
    static long long latency[N], sample_cost[N];
    RETURN_CODE_TYPE rc;
    MESSAGE_SIZE_TYPE len;
    VALIDITY_TYPE validity;
    APEX_BYTE buf[64];
    int fd = apex ? -1 : open("/dev/ports/q", O_RDONLY);
    int sfd = apex ? -1 : open("/dev/ports/s", O_RDONLY | O_NONBLOCK);
    for (int i = 0; i < N + 20; i++) {
        long long t;
        if (apex)
            RECEIVE_QUEUING_MESSAGE(q, INFINITE_TIME_VALUE, (MESSAGE_ADDR_TYPE)&t, &len, &rc);
        else if (read(fd, &t, sizeof t) != sizeof t)
            perror("read");
        long long arrived = now();
        if (i >= 20)  /* after the warm-up */
            latency[i - 20] = arrived - t;
    }
    for (int i = 0; i < N; i++) {
        long long t0 = now();
        if (apex)
            READ_SAMPLING_MESSAGE(s, buf, &len, &validity, &rc);
        else if (read(sfd, buf, sizeof buf) < 0)
            ;  /* nothing written: EAGAIN, the same call cost */
        sample_cost[i] = now() - t0;
    }
    summary(apex ? "apex queuing_latency" : "raw queuing_latency", latency, N);
    summary(apex ? "apex sampling_read_call" : "raw sampling_read_call", sample_cost, N);
    fflush(stdout);
    exit(0);
}

int main(int argc, char **argv)
{
    RETURN_CODE_TYPE rc;
    PROCESS_ID_TYPE id;
    int is_ping = argc > 1 && !strcmp(argv[1], "ping");
    apex = argc > 2 && !strcmp(argv[2], "apex");
    if (!apex) {
        if (is_ping)
            ping();
        pong();
    }
    CREATE_QUEUING_PORT("q", 8, 16, is_ping ? SOURCE : DESTINATION, FIFO, &q, &rc);
    if (!is_ping)
        CREATE_SAMPLING_PORT("s", 8, DESTINATION, INFINITE_TIME_VALUE, &s, &rc);
    else
        CREATE_SAMPLING_PORT("s", 8, SOURCE, INFINITE_TIME_VALUE, &s, &rc);
    PROCESS_ATTRIBUTE_TYPE a = {.PERIOD = INFINITE_TIME_VALUE, .TIME_CAPACITY = INFINITE_TIME_VALUE,
                                .ENTRY_POINT = is_ping ? ping : pong, .STACK_SIZE = 65536,
                                .BASE_PRIORITY = 10, .DEADLINE = SOFT, .NAME = "main"};
    CREATE_PROCESS(&a, &id, &rc);
    START(id, &rc);
    SET_PARTITION_MODE(NORMAL, &rc);
    return 1;
}
