/* Port tool for the partitioned-system tests (docs/systems.md): one program, several roles.
 *   sensor PORT MSG...     each MSG to PORT, one write() each
 *   detector IN OUT LIMIT  read readings from IN; for each value over LIMIT write an alert
 *   logger PORT N          print N messages from PORT (poll, then read), one per line
 *   probe PORT             try the wrong direction on PORT and print what happened
 *   sender PORT N PAUSE_MS write N messages, print each result, errno and time class
 *   sampler PORT MS1 MS2   the latest sampling message and PORT.status, twice
 *   drain PORT             read forever
 *   wakeup COUNT PERIOD_US wake-up latency percentiles of COUNT sleeps
 *   idle                   sleep forever
 *   exit CODE              exit with CODE
 *   ping OUT IN N SIZE, echo IN OUT, blast OUT N SIZE [RATE [DELAY_MS]], sink IN N:
 *                          bench/system.py (blast: RATE messages/s at most, after DELAY_MS)
 *   mapped ROLE ...        ping, echo, blast or sink through the mapped ring
 *                          (karn/guest/karn_port.h) instead of write() and read()
 *   mapprobe PORT N        print what mapping PORT allows; a receiver then writes over
 *                          its view of the ring and reads N messages with read()
 *   maphostile PORT        a sender that fills its ring with garbage, then write()s
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../karn/guest/karn_port.h"

static char path[256];
static int mapped; /* ping, echo, blast and sink go through karn_port.h */

static const char *port(const char *name)
{
    snprintf(path, sizeof path, "/dev/ports/%s", name);
    return path;
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int open_or_die(const char *name, int flags)
{
    int fd = open(port(name), flags);
    if (fd < 0) {
        printf("open %s: %s\n", path, strerror(errno));
        exit(2);
    }
    return fd;
}

/* One end of a channel: its fd, or its mapped ring ("mapped"). */
struct end {
    int fd;
    struct karn_port map;
};

static void end_open(struct end *e, const char *name, int flags)
{
    if (!mapped) {
        e->fd = open_or_die(name, flags);
        return;
    }
    if (karn_port_open(&e->map, name) != 0) {
        printf("map %s: %s\n", name, strerror(errno));
        exit(2);
    }
    e->fd = e->map.fd;
}

static ssize_t end_send(struct end *e, const void *buf, size_t len)
{
    if (!mapped)
        return write(e->fd, buf, len);
    return karn_port_send(&e->map, buf, len) == 0 ? (ssize_t)len : -1;
}

static ssize_t end_recv(struct end *e, void *buf, size_t size)
{
    return mapped ? karn_port_recv(&e->map, buf, size) : read(e->fd, buf, size);
}

/* A message within timeout_ms: its length, or -1 with errno (ETIMEDOUT: none came). */
static ssize_t end_recv_within(struct end *e, void *buf, size_t size, int timeout_ms)
{
    if (mapped)
        return karn_port_recv_within(&e->map, buf, size, timeout_ms);
    struct pollfd pfd = {e->fd, POLLIN, 0};
    int ready = poll(&pfd, 1, timeout_ms);
    if (ready == 0)
        errno = ETIMEDOUT;
    return ready <= 0 ? -1 : read(e->fd, buf, size);
}

/* Each argument is one message: the test decides what is well-formed. */
static int sensor(const char *name, int count, char **messages)
{
    struct end w;
    end_open(&w, name, O_WRONLY);
    for (int i = 0; i < count; i++) {
        ssize_t n = end_send(&w, messages[i], strlen(messages[i]));
        if (n != (ssize_t)strlen(messages[i]))
            printf("write %d: %zd %s\n", i, n, strerror(errno));
    }
    printf("sensor sent %d\n", count);
    return 0;
}

/* Waits with epoll, then reads one message per read(). */
static int detector(const char *in, const char *out, int limit)
{
    int rfd = open_or_die(in, O_RDONLY), wfd = open_or_die(out, O_WRONLY);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = rfd};
    char buf[512], alert[600];
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, rfd, &ev) != 0) {
        printf("epoll: %s\n", strerror(errno));
        return 1;
    }
    for (;;) {
        if (epoll_wait(ep, &ev, 1, -1) != 1 || !(ev.events & EPOLLIN))
            continue;
        ssize_t n = read(rfd, buf, sizeof buf - 1);
        if (n < 0) {
            printf("read: %s\n", strerror(errno));
            return 1;
        }
        buf[n] = 0;
        int id = -1, value = -1;
        char *p = strstr(buf, "\"id\":"), *q = strstr(buf, "\"value\":");
        if (p && q && sscanf(p + 5, "%d", &id) == 1 && sscanf(q + 8, "%d", &value) == 1
            && value > limit) {
            int len = snprintf(alert, sizeof alert, "ALERT id=%d value=%d", id, value);
            if (write(wfd, alert, len) != len)
                printf("alert write: %s\n", strerror(errno));
        }
    }
}

static int logger(const char *name, int count)
{
    struct end r;
    end_open(&r, name, O_RDONLY | O_NONBLOCK);
    char buf[512];
    for (int i = 0; i < count;) {
        ssize_t n = end_recv_within(&r, buf, sizeof buf, 20000);
        if (n < 0 && errno == ETIMEDOUT) {
            printf("poll timed out\n");
            return 1;
        }
        if (n < 0 && errno == EAGAIN)
            continue;
        if (n < 0) {
            printf("read: %s\n", strerror(errno));
            return 1;
        }
        printf("%.*s\n", (int)n, buf);
        fflush(stdout);
        i++;
    }
    printf("logger done\n");
    return 0;
}

static int probe(const char *name)
{
    char buf[64];
    int fd = open(port(name), O_RDWR);
    printf("open rdwr: %s\n", fd < 0 ? strerror(errno) : "ok");
    fd = open(port(name), O_RDONLY);
    if (fd >= 0) {
        ssize_t n = write(fd, "x", 1);
        printf("open rdonly: ok; write: %s\n", n < 0 ? strerror(errno) : "ok");
    } else {
        printf("open rdonly: %s\n", strerror(errno));
    }
    fd = open(port(name), O_WRONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof buf);
        printf("open wronly: ok; read: %s\n", n < 0 ? strerror(errno) : "ok");
    } else {
        printf("open wronly: %s\n", strerror(errno));
    }
    return 0;
}

static const char *result(void *m)
{
    return m == MAP_FAILED ? strerror(errno) : "ok";
}

/* What mapping PORT allows; a receiver then writes over its whole view of the ring and
 * reads COUNT messages with read(), which the monitor serves from its own view. */
static int mapprobe(const char *name, int count)
{
    struct karn_port p;
    if (karn_port_open(&p, name) != 0) {
        printf("map: %s\n", strerror(errno));
        return 1;
    }
    int source = (p.info.flags & KARN_PORT_SOURCE) != 0;
    printf("slots %lu limit %lu source %d\n", (unsigned long)p.info.slots,
           (unsigned long)p.info.limit, source);
    printf("ring writable: %s\n", result(mmap(NULL, p.info.ring_size, PROT_READ | PROT_WRITE,
                                              MAP_SHARED, p.fd, 0)));
    printf("reader page: %s\n", result(mmap(NULL, 4096, PROT_READ, MAP_SHARED, p.fd,
                                            (off_t)p.info.reader_offset)));
    printf("private: %s\n", result(mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, p.fd, 0)));
    printf("elsewhere: %s\n", result(mmap(NULL, 4096, PROT_READ, MAP_SHARED, p.fd,
                                          (off_t)p.info.reader_offset + 4096)));
    if (source)
        return 0;
    memset((void *)p.ring, 0xff, p.info.ring_size);
    printf("scribbled\n");
    char buf[512];
    for (int i = 0; i < count; i++) {
        ssize_t n = read(p.fd, buf, sizeof buf);
        if (n < 0) {
            printf("read: %s\n", strerror(errno));
            return 1;
        }
        printf("got %.*s\n", (int)n, buf);
    }
    return 0;
}

/* A sender's guest that breaks its own ring: a published count at the top of the range,
 * every slot's sequence and length garbage, then a wake-up and three write()s. */
static int maphostile(const char *name)
{
    struct karn_port p;
    if (karn_port_open(&p, name) != 0) {
        printf("map: %s\n", strerror(errno));
        return 1;
    }
    memset((void *)p.ring, 0xff, p.info.ring_size);
    ioctl(p.fd, KARN_PORT_NOTIFY);
    for (int i = 0; i < 3; i++) {
        char msg[32];
        int len = snprintf(msg, sizeof msg, "after %d", i);
        if (write(p.fd, msg, len) != len)
            printf("write %d: %s\n", i, strerror(errno));
    }
    printf("hostile done\n");
    return 0;
}

/* Every result of a diode sender: the return value, errno, and the time class of each
 * write (under 1 s, "fast", or not: a write held back by the receiver would never
 * return), plus the slowest write. */
static int sender(const char *name, int count, int pause_ms)
{
    int fd = open_or_die(name, O_WRONLY);
    char msg[64];
    int fast = 0, ok = 0;
    double slowest = 0;
    for (int i = 0; i < count; i++) {
        int len = snprintf(msg, sizeof msg, "message %d", i);
        double t0 = now_us();
        ssize_t n = write(fd, msg, len);
        double dt = now_us() - t0;
        if (n == len)
            ok++;
        else
            printf("write %d: %zd %s\n", i, n, n < 0 ? strerror(errno) : "short");
        if (dt < 1000000)
            fast++;
        if (dt > slowest)
            slowest = dt;
        if (pause_ms) {
            struct timespec ts = {0, pause_ms * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    printf("sent %d ok %d fast %d\n", count, ok, fast);
    printf("slowest_us %.0f\n", slowest);
    return 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The latest sampling message and PORT.status, twice: after FIRST_MS and SECOND_MS more. */
static int sampler(const char *name, int first_ms, int second_ms)
{
    struct end r;
    end_open(&r, name, O_RDONLY);
    char buf[256], status[256];
    snprintf(status, sizeof status, "/dev/ports/%s.status", name);
    for (int round = 0; round < 2; round++) {
        sleep_ms(round == 0 ? first_ms : second_ms);
        ssize_t n = mapped ? karn_port_latest(&r.map, buf, sizeof buf)
                           : read(r.fd, buf, sizeof buf);
        printf("read %.*s\n", (int)(n < 0 ? 0 : n), buf);
        int sfd = open(status, O_RDONLY);
        n = read(sfd, buf, sizeof buf);
        close(sfd);
        printf("%.*s", (int)(n < 0 ? 0 : n), buf);
    }
    return 0;
}

/* Reads forever and never prints: a receiver that keeps up. */
static int drain(const char *name)
{
    int fd = open_or_die(name, O_RDONLY);
    char buf[512];
    for (;;)
        if (read(fd, buf, sizeof buf) < 0)
            return 1;
}

/* Wake-up latency: COUNT sleeps of PERIOD_US; prints percentiles of the oversleep. */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int wakeup(int count, int period_us)
{
    double *late = calloc(count, sizeof *late);
    for (int i = 0; i < count; i++) {
        struct timespec ts = {0, period_us * 1000L};
        double t0 = now_us();
        nanosleep(&ts, NULL);
        late[i] = now_us() - t0 - period_us;
    }
    qsort(late, count, sizeof *late, cmp_double);
    printf("wakeup_us p50 %.0f p90 %.0f p99 %.0f max %.0f\n", late[count / 2],
           late[count * 9 / 10], late[count * 99 / 100], late[count - 1]);
    return 0;
}

/* Benchmarks (bench/system.py). ping: COUNT round trips of SIZE bytes through OUT and
 * back on IN, percentiles of the round trip; echo: send back what arrives. */
static int ping(const char *out, const char *in, int count, int size)
{
    struct end w, r;
    end_open(&w, out, O_WRONLY);
    end_open(&r, in, O_RDONLY);
    char *buf = calloc(1, size + 1);
    double *rtt = calloc(count, sizeof *rtt);
    if (size >= 8) { /* a JSON document, so a guard's checks can pass it */
        memset(buf, 'x', size);
        memcpy(buf, "{\"v\":\"", 6);
        memcpy(buf + size - 2, "\"}", 2);
    }
    for (int i = 0; i < count; i++) {
        double t0 = now_us();
        if (end_send(&w, buf, size) != size || end_recv(&r, buf, size) != size) {
            printf("ping %d: %s\n", i, strerror(errno));
            return 1;
        }
        rtt[i] = now_us() - t0;
    }
    qsort(rtt, count, sizeof *rtt, cmp_double);
    printf("rtt_us p50 %.1f p99 %.1f\n", rtt[count / 2], rtt[count * 99 / 100]);
    return 0;
}

static int echo(const char *in, const char *out)
{
    struct end r, w;
    end_open(&r, in, O_RDONLY);
    end_open(&w, out, O_WRONLY);
    static char buf[65536];
    for (;;) {
        ssize_t n = end_recv(&r, buf, sizeof buf);
        if (n < 0 || end_send(&w, buf, n) != n)
            return 1;
    }
}

/* blast: COUNT messages of SIZE bytes as fast as they go; sink: time from the first to
 * the last of up to COUNT messages (it stops 1 s after the last one arrived). */
static int blast(const char *out, int count, int size, double rate, int delay_ms)
{
    struct end w;
    end_open(&w, out, O_WRONLY);
    char *buf = calloc(1, size);
    if (size >= 8) { /* a JSON document, so a guard's checks can pass it (as ping) */
        memset(buf, 'x', size);
        memcpy(buf, "{\"v\":\"", 6);
        memcpy(buf + size - 2, "\"}", 2);
    }
    sleep_ms(delay_ms); /* a diode's receiver may not be up yet: it would miss the start */
    double t0 = now_us();
    for (int i = 0; i < count; i++) {
        while (rate > 0 && now_us() < t0 + i * 1e6 / rate)
            ; /* paced: the i-th message not before i/rate s */
        if (end_send(&w, buf, size) != size) {
            printf("blast %d: %s\n", i, strerror(errno));
            return 1;
        }
    }
    printf("blast_us %.0f\n", now_us() - t0);
    return 0;
}

static int sink(const char *in, int count)
{
    struct end r;
    end_open(&r, in, O_RDONLY);
    static char buf[65536];
    double first = 0, last = 0;
    long bytes = 0;
    int got = 0;
    while (got < count) {
        ssize_t n = end_recv_within(&r, buf, sizeof buf, got ? 1000 : 60000);
        if (n < 0 && errno == ETIMEDOUT)
            break;
        if (n < 0)
            return 1;
        last = now_us();
        if (!got++)
            first = last;
        else
            bytes += n;
    }
    printf("sink got %d bytes %ld us %.0f\n", got, bytes, last - first);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && !strcmp(argv[1], "mapped")) {
        mapped = 1;
        argc--;
        argv++;
    }
    if (argc >= 3 && !strcmp(argv[1], "sensor"))
        return sensor(argv[2], argc - 3, argv + 3);
    if (argc >= 5 && !strcmp(argv[1], "detector"))
        return detector(argv[2], argv[3], atoi(argv[4]));
    if (argc >= 4 && !strcmp(argv[1], "logger"))
        return logger(argv[2], atoi(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "probe"))
        return probe(argv[2]);
    if (argc >= 5 && !strcmp(argv[1], "sender"))
        return sender(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc >= 5 && !strcmp(argv[1], "sampler"))
        return sampler(argv[2], atoi(argv[3]), atoi(argv[4]));
    if (argc >= 3 && !strcmp(argv[1], "drain"))
        return drain(argv[2]);
    if (argc >= 4 && !strcmp(argv[1], "wakeup"))
        return wakeup(atoi(argv[2]), atoi(argv[3]));
    if (argc >= 6 && !strcmp(argv[1], "ping"))
        return ping(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
    if (argc >= 4 && !strcmp(argv[1], "echo"))
        return echo(argv[2], argv[3]);
    if (argc >= 5 && !strcmp(argv[1], "blast"))
        return blast(argv[2], atoi(argv[3]), atoi(argv[4]), argc >= 6 ? atof(argv[5]) : 0,
                     argc >= 7 ? atoi(argv[6]) : 0);
    if (argc >= 4 && !strcmp(argv[1], "sink"))
        return sink(argv[2], atoi(argv[3]));
    if (argc >= 4 && !strcmp(argv[1], "mapprobe"))
        return mapprobe(argv[2], atoi(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "maphostile"))
        return maphostile(argv[2]);
    if (argc >= 2 && !strcmp(argv[1], "idle"))
        for (;;)
            pause();
    if (argc >= 3 && !strcmp(argv[1], "exit")) {
        printf("exiting with %d\n", atoi(argv[2]));
        return atoi(argv[2]);
    }
    fprintf(stderr, "usage: sys_ports sensor|detector|logger|probe|sender|sampler|drain|"
            "wakeup|idle|exit|ping|echo|blast|sink|mapprobe|maphostile ...\n");
    return 2;
}
