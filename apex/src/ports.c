/* Inter-partition communication: sampling and queuing ports over karn's /dev/ports.
 *
 * A port is /dev/ports/NAME (one write() is one message, one read() one message) and
 * NAME.status tells its kind, direction, size and, for a sampling destination, the age of
 * its latest message (docs/systems.md). The files are opened non-blocking: a process that
 * must wait for a queuing port blocks in the APEX scheduler, and the event thread polls
 * the port for it, so the other processes of the partition keep running meanwhile. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define PORTS_DIR "/dev/ports/"

struct port {
    int used;
    char name[MAX_NAME_LENGTH + 1];
    PORT_DIRECTION_TYPE direction;
    MESSAGE_SIZE_TYPE max_size;
    MESSAGE_RANGE_TYPE max_nb;   /* queuing */
    SYSTEM_TIME_TYPE refresh;    /* sampling */
    VALIDITY_TYPE last_validity; /* sampling: of the last message read */
    int fd;
    struct waitq waiters;        /* queuing: processes waiting to send or receive */
};

static struct port sampling[SYSTEM_LIMIT_NUMBER_OF_SAMPLING_PORTS + 1];
static struct port queuing[SYSTEM_LIMIT_NUMBER_OF_QUEUING_PORTS + 1];

/* What NAME.status says about a port. */
struct port_config {
    char kind[64], direction[64];
    long max_size;
    double refresh_ms, age_ms;  /* age_ms < 0: no message yet */
};

static int read_status(const char *name, struct port_config *c)
{
    char path[sizeof PORTS_DIR + MAX_NAME_LENGTH + 8];
    if (!*name || strchr(name, '/') || name[0] == '.')
        return -1;
    snprintf(path, sizeof path, PORTS_DIR "%s.status", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char text[512];
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return -1;
    text[n] = 0;
    memset(c, 0, sizeof *c);
    c->age_ms = -1;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char key[32], value[64];
        if (sscanf(line, "%31s %63s", key, value) != 2)
            continue;
        if (!strcmp(key, "kind"))
            snprintf(c->kind, sizeof c->kind, "%s", value);
        else if (!strcmp(key, "direction"))
            snprintf(c->direction, sizeof c->direction, "%s", value);
        else if (!strcmp(key, "max_size"))
            c->max_size = atol(value);
        else if (!strcmp(key, "refresh_ms"))
            c->refresh_ms = atof(value);
        else if (!strcmp(key, "age_ms"))
            c->age_ms = atof(value);
    }
    return 0;
}

/* The queue length the system file gives a queuing port (KARN_APEX_QUEUE_DEPTHS,
 * "name=depth,..."); 0 when the partition has no APEX configuration to check against. */
static long configured_depth(const char *name)
{
    const char *list = getenv("KARN_APEX_QUEUE_DEPTHS");
    size_t len = strlen(name);
    while (list && *list) {
        if (!strncmp(list, name, len) && list[len] == '=')
            return atol(list + len + 1);
        list = strchr(list, ',');
        if (list)
            list++;
    }
    return 0;
}

static struct port *find_port(struct port *table, int n, const char *name)
{
    for (int i = 1; i <= n; i++)
        if (table[i].used && names_equal(table[i].name, name))
            return &table[i];
    return NULL;
}

static int free_slot(struct port *table, int n)
{
    for (int i = 1; i <= n; i++)
        if (!table[i].used)
            return i;
    return 0;
}

static int open_port(const char *name, PORT_DIRECTION_TYPE direction)
{
    char path[sizeof PORTS_DIR + MAX_NAME_LENGTH + 1];
    snprintf(path, sizeof path, PORTS_DIR "%s", name);
    return open(path, (direction == SOURCE ? O_WRONLY : O_RDONLY) | O_NONBLOCK | O_CLOEXEC);
}

static int direction_matches(const struct port_config *c, PORT_DIRECTION_TYPE d)
{
    return !strcmp(c->direction, d == SOURCE ? "out" : "in");
}

static struct port *by_id(struct port *table, int n, APEX_INTEGER id)
{
    return id >= 1 && id <= n && table[id].used ? &table[id] : NULL;
}

/* ---- sampling ports ------------------------------------------------------------------- */

void CREATE_SAMPLING_PORT(const char SAMPLING_PORT_NAME[],
                          MESSAGE_SIZE_TYPE MAX_MESSAGE_SIZE, PORT_DIRECTION_TYPE PORT_DIRECTION,
                          SYSTEM_TIME_TYPE REFRESH_PERIOD, SAMPLING_PORT_ID_TYPE *SAMPLING_PORT_ID,
                          RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    char name[MAX_NAME_LENGTH + 1] = {0};
    memcpy(name, SAMPLING_PORT_NAME, strnlen(SAMPLING_PORT_NAME, MAX_NAME_LENGTH));
    struct port_config c;
    int slot;
    if (read_status(name, &c) != 0 || strcmp(c.kind, "sampling"))
        RC(INVALID_CONFIG);  /* no such sampling port in the configuration */
    else if (find_port(sampling, SYSTEM_LIMIT_NUMBER_OF_SAMPLING_PORTS, name))
        RC(NO_ACTION);
    else if (MAX_MESSAGE_SIZE != c.max_size ||
             (PORT_DIRECTION != SOURCE && PORT_DIRECTION != DESTINATION) ||
             !direction_matches(&c, PORT_DIRECTION) ||
             (REFRESH_PERIOD < 0 && REFRESH_PERIOD != INFINITE_TIME_VALUE) ||
             (PORT_DIRECTION == DESTINATION && c.refresh_ms > 0 &&
              REFRESH_PERIOD != (SYSTEM_TIME_TYPE)(c.refresh_ms * 1e6 + 0.5)))
        RC(INVALID_CONFIG);
    else if (P.mode == NORMAL)
        RC(INVALID_MODE);
    else if (!(slot = free_slot(sampling, SYSTEM_LIMIT_NUMBER_OF_SAMPLING_PORTS)))
        RC(INVALID_CONFIG);
    else {
        int fd = open_port(name, PORT_DIRECTION);
        if (fd < 0) {
            RC(INVALID_CONFIG);
        } else {
            struct port *p = &sampling[slot];
            memset(p, 0, sizeof *p);
            p->used = 1;
            memcpy(p->name, name, sizeof p->name);
            p->direction = PORT_DIRECTION;
            p->max_size = MAX_MESSAGE_SIZE;
            p->refresh = REFRESH_PERIOD;
            p->last_validity = INVALID;
            p->fd = fd;
            *SAMPLING_PORT_ID = slot;
            RC(NO_ERROR);
        }
    }
    leave(me);
}

void WRITE_SAMPLING_MESSAGE(SAMPLING_PORT_ID_TYPE SAMPLING_PORT_ID, MESSAGE_ADDR_TYPE MESSAGE_ADDR,
                            MESSAGE_SIZE_TYPE LENGTH, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct port *p = by_id(sampling, SYSTEM_LIMIT_NUMBER_OF_SAMPLING_PORTS, SAMPLING_PORT_ID);
    if (!p)
        RC(INVALID_PARAM);
    else if (LENGTH > p->max_size)
        RC(INVALID_CONFIG);
    else if (LENGTH <= 0)
        RC(INVALID_PARAM);
    else if (p->direction != SOURCE)
        RC(INVALID_MODE);
    else {
        ssize_t n = write(p->fd, MESSAGE_ADDR, LENGTH);
        RC(n == LENGTH ? NO_ERROR : NOT_AVAILABLE);
    }
    leave(me);
}

void READ_SAMPLING_MESSAGE(SAMPLING_PORT_ID_TYPE SAMPLING_PORT_ID, MESSAGE_ADDR_TYPE MESSAGE_ADDR,
                           MESSAGE_SIZE_TYPE *LENGTH, VALIDITY_TYPE *VALIDITY,
                           RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct port *p = by_id(sampling, SYSTEM_LIMIT_NUMBER_OF_SAMPLING_PORTS, SAMPLING_PORT_ID);
    if (!p) {
        RC(INVALID_PARAM);
    } else if (p->direction != DESTINATION) {
        RC(INVALID_MODE);
    } else {
        /* The age first: the message read next is this one or a newer one, so VALID is
         * never claimed for a message older than the refresh period. */
        struct port_config c;
        int aged = read_status(p->name, &c) == 0 && c.age_ms >= 0;
        ssize_t n = read(p->fd, MESSAGE_ADDR, p->max_size);
        if (n <= 0) {
            *LENGTH = 0;
            *VALIDITY = INVALID;
            RC(NO_ACTION);  /* nothing has arrived yet */
        } else {
            *LENGTH = n;
            p->last_validity = p->refresh == INFINITE_TIME_VALUE ||
                                       (aged && c.age_ms * 1e6 <= (double)p->refresh)
                                   ? VALID : INVALID;
            *VALIDITY = p->last_validity;
            RC(NO_ERROR);
        }
    }
    leave(me);
}

void GET_SAMPLING_PORT_ID(const char SAMPLING_PORT_NAME[],
                          SAMPLING_PORT_ID_TYPE *SAMPLING_PORT_ID, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct port *p = find_port(sampling, SYSTEM_LIMIT_NUMBER_OF_SAMPLING_PORTS,
                               SAMPLING_PORT_NAME);
    if (!p) {
        RC(INVALID_CONFIG);
    } else {
        *SAMPLING_PORT_ID = (SAMPLING_PORT_ID_TYPE)(p - sampling);
        RC(NO_ERROR);
    }
    leave(me);
}

void GET_SAMPLING_PORT_STATUS(SAMPLING_PORT_ID_TYPE SAMPLING_PORT_ID,
                              SAMPLING_PORT_STATUS_TYPE *SAMPLING_PORT_STATUS,
                              RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct port *p = by_id(sampling, SYSTEM_LIMIT_NUMBER_OF_SAMPLING_PORTS, SAMPLING_PORT_ID);
    if (!p) {
        RC(INVALID_PARAM);
    } else {
        SAMPLING_PORT_STATUS->REFRESH_PERIOD = p->refresh;
        SAMPLING_PORT_STATUS->MAX_MESSAGE_SIZE = p->max_size;
        SAMPLING_PORT_STATUS->PORT_DIRECTION = p->direction;
        SAMPLING_PORT_STATUS->LAST_MSG_VALIDITY = p->last_validity;
        RC(NO_ERROR);
    }
    leave(me);
}

/* ---- queuing ports -------------------------------------------------------------------- */

void CREATE_QUEUING_PORT(const char QUEUING_PORT_NAME[],
                         MESSAGE_SIZE_TYPE MAX_MESSAGE_SIZE, MESSAGE_RANGE_TYPE MAX_NB_MESSAGE,
                         PORT_DIRECTION_TYPE PORT_DIRECTION,
                         QUEUING_DISCIPLINE_TYPE QUEUING_DISCIPLINE,
                         QUEUING_PORT_ID_TYPE *QUEUING_PORT_ID, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    char name[MAX_NAME_LENGTH + 1] = {0};
    memcpy(name, QUEUING_PORT_NAME, strnlen(QUEUING_PORT_NAME, MAX_NAME_LENGTH));
    struct port_config c;
    long depth = configured_depth(name);
    int slot;
    if (read_status(name, &c) != 0 || strcmp(c.kind, "queuing"))
        RC(INVALID_CONFIG);
    else if (find_port(queuing, SYSTEM_LIMIT_NUMBER_OF_QUEUING_PORTS, name))
        RC(NO_ACTION);
    else if (MAX_MESSAGE_SIZE != c.max_size || MAX_NB_MESSAGE <= 0 ||
             MAX_NB_MESSAGE > SYSTEM_LIMIT_NUMBER_OF_MESSAGES ||
             (depth && MAX_NB_MESSAGE != depth) ||
             (PORT_DIRECTION != SOURCE && PORT_DIRECTION != DESTINATION) ||
             !direction_matches(&c, PORT_DIRECTION) ||
             (QUEUING_DISCIPLINE != FIFO && QUEUING_DISCIPLINE != PRIORITY))
        RC(INVALID_CONFIG);
    else if (P.mode == NORMAL)
        RC(INVALID_MODE);
    else if (!(slot = free_slot(queuing, SYSTEM_LIMIT_NUMBER_OF_QUEUING_PORTS)))
        RC(INVALID_CONFIG);
    else {
        int fd = open_port(name, PORT_DIRECTION);
        if (fd < 0) {
            RC(INVALID_CONFIG);
        } else {
            struct port *p = &queuing[slot];
            memset(p, 0, sizeof *p);
            p->used = 1;
            memcpy(p->name, name, sizeof p->name);
            p->direction = PORT_DIRECTION;
            p->max_size = MAX_MESSAGE_SIZE;
            p->max_nb = MAX_NB_MESSAGE;
            p->waiters.discipline = QUEUING_DISCIPLINE;
            p->fd = fd;
            *QUEUING_PORT_ID = slot;
            RC(NO_ERROR);
        }
    }
    leave(me);
}

/* Wait for the port (the event thread polls it while someone waits). */
static RETURN_CODE_TYPE wait_port(struct proc *me, struct port *p, int64_t until)
{
    P.event_fds_changed = 1;
    event_notify(until);
    return block(me, until, &p->waiters, TIMED_OUT);
}

static int64_t deadline_of(SYSTEM_TIME_TYPE timeout)
{
    return timeout == INFINITE_TIME_VALUE ? NEVER : now_ns() + timeout;
}

void SEND_QUEUING_MESSAGE(QUEUING_PORT_ID_TYPE QUEUING_PORT_ID, MESSAGE_ADDR_TYPE MESSAGE_ADDR,
                          MESSAGE_SIZE_TYPE LENGTH, SYSTEM_TIME_TYPE TIME_OUT,
                          RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct port *p = by_id(queuing, SYSTEM_LIMIT_NUMBER_OF_QUEUING_PORTS, QUEUING_PORT_ID);
    if (!p || TIME_OUT < INFINITE_TIME_VALUE)
        RC(INVALID_PARAM);
    else if (LENGTH > p->max_size)
        RC(INVALID_CONFIG);
    else if (LENGTH <= 0)
        RC(INVALID_PARAM);
    else if (p->direction != SOURCE)
        RC(INVALID_MODE);
    else {
        int64_t until = deadline_of(TIME_OUT);
        for (;;) {
            /* processes already waiting go first, in the port's discipline */
            if (p->waiters.count == 0 && write(p->fd, MESSAGE_ADDR, LENGTH) == LENGTH) {
                RC(NO_ERROR);
                break;
            }
            if (TIME_OUT == 0) {
                RC(NOT_AVAILABLE);
                break;
            }
            if (!may_wait(me)) {
                RC(INVALID_MODE);
                break;
            }
            if (wait_port(me, p, until) == TIMED_OUT) {
                RC(TIMED_OUT);
                break;
            }
            if (write(p->fd, MESSAGE_ADDR, LENGTH) == LENGTH) {
                RC(NO_ERROR);
                break;
            }
        }
    }
    leave(me);
}

void RECEIVE_QUEUING_MESSAGE(QUEUING_PORT_ID_TYPE QUEUING_PORT_ID, SYSTEM_TIME_TYPE TIME_OUT,
                             MESSAGE_ADDR_TYPE MESSAGE_ADDR, MESSAGE_SIZE_TYPE *LENGTH,
                             RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct port *p = by_id(queuing, SYSTEM_LIMIT_NUMBER_OF_QUEUING_PORTS, QUEUING_PORT_ID);
    *LENGTH = 0;
    if (!p || TIME_OUT < INFINITE_TIME_VALUE)
        RC(INVALID_PARAM);
    else if (p->direction != DESTINATION)
        RC(INVALID_MODE);
    else {
        int64_t until = deadline_of(TIME_OUT);
        ssize_t n = -1;
        for (int first = 1;; first = 0) {
            if (!first || p->waiters.count == 0)
                n = read(p->fd, MESSAGE_ADDR, p->max_size);
            if (n > 0) {
                *LENGTH = n;
                RC(NO_ERROR);
                break;
            }
            if (TIME_OUT == 0) {
                RC(NOT_AVAILABLE);
                break;
            }
            if (!may_wait(me)) {
                RC(INVALID_MODE);
                break;
            }
            if (wait_port(me, p, until) == TIMED_OUT) {
                RC(TIMED_OUT);
                break;
            }
        }
    }
    leave(me);
}

void GET_QUEUING_PORT_ID(const char QUEUING_PORT_NAME[],
                         QUEUING_PORT_ID_TYPE *QUEUING_PORT_ID, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct port *p = find_port(queuing, SYSTEM_LIMIT_NUMBER_OF_QUEUING_PORTS, QUEUING_PORT_NAME);
    if (!p) {
        RC(INVALID_CONFIG);
    } else {
        *QUEUING_PORT_ID = (QUEUING_PORT_ID_TYPE)(p - queuing);
        RC(NO_ERROR);
    }
    leave(me);
}

void GET_QUEUING_PORT_STATUS(QUEUING_PORT_ID_TYPE QUEUING_PORT_ID,
                             QUEUING_PORT_STATUS_TYPE *QUEUING_PORT_STATUS,
                             RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct port *p = by_id(queuing, SYSTEM_LIMIT_NUMBER_OF_QUEUING_PORTS, QUEUING_PORT_ID);
    if (!p) {
        RC(INVALID_PARAM);
    } else {
        /* A destination's socket does not say how many messages wait: 1 means "at least
         * one" (docs/apex.md); a source's messages leave at once for the supervisor. */
        struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
        QUEUING_PORT_STATUS->NB_MESSAGE =
            p->direction == DESTINATION && poll(&pfd, 1, 0) == 1 ? 1 : 0;
        QUEUING_PORT_STATUS->MAX_NB_MESSAGE = p->max_nb;
        QUEUING_PORT_STATUS->MAX_MESSAGE_SIZE = p->max_size;
        QUEUING_PORT_STATUS->PORT_DIRECTION = p->direction;
        QUEUING_PORT_STATUS->WAITING_PROCESSES = p->waiters.count;
        RC(NO_ERROR);
    }
    leave(me);
}

/* ---- the event thread's side ---------------------------------------------------------- */

int ports_collect(struct pollfd *fds, int max)
{
    int n = 0;
    for (int i = 1; i <= SYSTEM_LIMIT_NUMBER_OF_QUEUING_PORTS && n < max; i++) {
        struct port *p = &queuing[i];
        if (p->used && p->waiters.count) {
            fds[n].fd = p->fd;
            fds[n].events = p->direction == SOURCE ? POLLOUT : POLLIN;
            fds[n].revents = 0;
            n++;
        }
    }
    return n;
}

void port_ready(int fd, short revents)
{
    (void)revents;  /* readable, writable, or an error the retry will meet */
    for (int i = 1; i <= SYSTEM_LIMIT_NUMBER_OF_QUEUING_PORTS; i++) {
        struct port *p = &queuing[i];
        if (p->used && p->fd == fd) {
            struct proc *w = waitq_pop(&p->waiters);
            if (w)
                make_ready(w, NO_ERROR);
        }
    }
}
