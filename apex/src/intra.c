/* Intra-partition communication: buffers (message queues), blackboards (one message that
 * stays), counting semaphores and events, all inside the library under P.lock. A process
 * that must wait blocks in the APEX scheduler with the object's wait queue. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct buffer {
    NAME_TYPE name;
    MESSAGE_SIZE_TYPE max_size;
    MESSAGE_RANGE_TYPE max_nb, count, head;
    APEX_BYTE *slots;            /* max_nb messages of max_size bytes */
    MESSAGE_SIZE_TYPE *lengths;
    struct waitq waiters;        /* senders when full, receivers when empty */
};

struct blackboard {
    NAME_TYPE name;
    MESSAGE_SIZE_TYPE max_size, length;
    int occupied;
    APEX_BYTE *message;
    struct waitq waiters;
};

struct semaphore {
    NAME_TYPE name;
    SEMAPHORE_VALUE_TYPE value, max;
    struct waitq waiters;
};

struct event {
    NAME_TYPE name;
    int up;
    struct waitq waiters;
};

static struct buffer buffers[SYSTEM_LIMIT_NUMBER_OF_BUFFERS + 1];
static struct blackboard blackboards[SYSTEM_LIMIT_NUMBER_OF_BLACKBOARDS + 1];
static struct semaphore semaphores[SYSTEM_LIMIT_NUMBER_OF_SEMAPHORES + 1];
static struct event events[SYSTEM_LIMIT_NUMBER_OF_EVENTS + 1];
static int nbuffers, nblackboards, nsemaphores, nevents;

/* The id of the object called name among the first n, or 0. `size`: the element size. */
static int lookup(const void *table, size_t size, int n, const char *name)
{
    for (int i = 1; i <= n; i++)
        if (names_equal((const char *)table + i * size, name))
            return i;
    return 0;
}
#define LOOKUP(table, n, name) lookup((table), sizeof (table)[0], (n), (name))

/* The checks every CREATE_* starts with: INVALID_MODE in NORMAL mode, NO_ACTION for a
 * name in use, INVALID_CONFIG when the partition has no room for another. */
static RETURN_CODE_TYPE can_create(int exists, int count, int limit)
{
    if (P.mode == NORMAL)
        return INVALID_MODE;
    if (exists)
        return NO_ACTION;
    return count >= limit ? INVALID_CONFIG : NO_ERROR;
}

static int timeout_valid(SYSTEM_TIME_TYPE t)
{
    return t >= INFINITE_TIME_VALUE;
}

static int64_t until_of(SYSTEM_TIME_TYPE t)
{
    return t == INFINITE_TIME_VALUE ? NEVER : now_ns() + t;
}

/* The common tail of a wait: NOT_AVAILABLE for a zero time-out, INVALID_MODE for a
 * process that may not wait, else block (NO_ERROR or TIMED_OUT). */
static RETURN_CODE_TYPE wait_on(struct proc *me, struct waitq *q, SYSTEM_TIME_TYPE timeout)
{
    if (timeout == 0)
        return NOT_AVAILABLE;
    if (!may_wait(me))
        return INVALID_MODE;
    return block(me, until_of(timeout), q, TIMED_OUT);
}

/* ---- buffers -------------------------------------------------------------------------- */

void CREATE_BUFFER(const char BUFFER_NAME[], MESSAGE_SIZE_TYPE MAX_MESSAGE_SIZE,
                   MESSAGE_RANGE_TYPE MAX_NB_MESSAGE, QUEUING_DISCIPLINE_TYPE QUEUING_DISCIPLINE,
                   BUFFER_ID_TYPE *BUFFER_ID, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    RETURN_CODE_TYPE rc = can_create(LOOKUP(buffers, nbuffers, BUFFER_NAME), nbuffers,
                                     SYSTEM_LIMIT_NUMBER_OF_BUFFERS);
    if (rc == NO_ERROR && (MAX_MESSAGE_SIZE <= 0 || MAX_MESSAGE_SIZE > SYSTEM_LIMIT_MESSAGE_SIZE ||
                           MAX_NB_MESSAGE <= 0 || MAX_NB_MESSAGE > SYSTEM_LIMIT_NUMBER_OF_MESSAGES ||
                           (QUEUING_DISCIPLINE != FIFO && QUEUING_DISCIPLINE != PRIORITY)))
        rc = INVALID_PARAM;
    if (rc == NO_ERROR) {
        struct buffer *b = &buffers[nbuffers + 1];
        memset(b, 0, sizeof *b);
        b->slots = malloc((size_t)MAX_MESSAGE_SIZE * MAX_NB_MESSAGE);
        b->lengths = calloc(MAX_NB_MESSAGE, sizeof *b->lengths);
        if (!b->slots || !b->lengths) {
            free(b->slots);
            free(b->lengths);
            rc = INVALID_CONFIG;  /* no storage for it */
        } else {
            copy_name(b->name, BUFFER_NAME);
            b->max_size = MAX_MESSAGE_SIZE;
            b->max_nb = MAX_NB_MESSAGE;
            b->waiters.discipline = QUEUING_DISCIPLINE;
            *BUFFER_ID = ++nbuffers;
        }
    }
    RC(rc);
    leave(me);
}

static void buffer_push(struct buffer *b, const APEX_BYTE *msg, MESSAGE_SIZE_TYPE len)
{
    int slot = (b->head + b->count++) % b->max_nb;
    memcpy(b->slots + (size_t)slot * b->max_size, msg, len);
    b->lengths[slot] = len;
}

void SEND_BUFFER(BUFFER_ID_TYPE BUFFER_ID, MESSAGE_ADDR_TYPE MESSAGE_ADDR,
                 MESSAGE_SIZE_TYPE LENGTH, SYSTEM_TIME_TYPE TIME_OUT,
                 RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct buffer *b = BUFFER_ID >= 1 && BUFFER_ID <= nbuffers ? &buffers[BUFFER_ID] : NULL;
    if (!b || LENGTH <= 0 || LENGTH > b->max_size || !timeout_valid(TIME_OUT)) {
        RC(INVALID_PARAM);
    } else if (b->count == 0 && b->waiters.count) {  /* a receiver waits: hand it over */
        struct proc *r = waitq_pop(&b->waiters);
        memcpy(r->xfer, MESSAGE_ADDR, LENGTH);
        r->xfer_len = LENGTH;
        make_ready(r, NO_ERROR);
        RC(NO_ERROR);
    } else if (b->count < b->max_nb) {
        buffer_push(b, MESSAGE_ADDR, LENGTH);
        RC(NO_ERROR);
    } else {
        me->xfer = MESSAGE_ADDR;  /* a receiver moves it into the buffer */
        me->xfer_len = LENGTH;
        RC(wait_on(me, &b->waiters, TIME_OUT));
    }
    leave(me);
}

void RECEIVE_BUFFER(BUFFER_ID_TYPE BUFFER_ID, SYSTEM_TIME_TYPE TIME_OUT,
                    MESSAGE_ADDR_TYPE MESSAGE_ADDR, MESSAGE_SIZE_TYPE *LENGTH,
                    RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct buffer *b = BUFFER_ID >= 1 && BUFFER_ID <= nbuffers ? &buffers[BUFFER_ID] : NULL;
    *LENGTH = 0;
    if (!b || !timeout_valid(TIME_OUT)) {
        RC(INVALID_PARAM);
    } else if (b->count) {
        *LENGTH = b->lengths[b->head];
        memcpy(MESSAGE_ADDR, b->slots + (size_t)b->head * b->max_size, *LENGTH);
        b->head = (b->head + 1) % b->max_nb;
        b->count--;
        struct proc *s = waitq_pop(&b->waiters);  /* a sender waiting for room */
        if (s) {
            buffer_push(b, s->xfer, s->xfer_len);
            make_ready(s, NO_ERROR);
        }
        RC(NO_ERROR);
    } else {
        me->xfer = MESSAGE_ADDR;
        RETURN_CODE_TYPE rc = wait_on(me, &b->waiters, TIME_OUT);
        if (rc == NO_ERROR)
            *LENGTH = me->xfer_len;
        RC(rc);
    }
    leave(me);
}

void GET_BUFFER_ID(const char BUFFER_NAME[], BUFFER_ID_TYPE *BUFFER_ID,
                   RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    int id = LOOKUP(buffers, nbuffers, BUFFER_NAME);
    if (id)
        *BUFFER_ID = id;
    RC(id ? NO_ERROR : INVALID_CONFIG);
    leave(me);
}

void GET_BUFFER_STATUS(BUFFER_ID_TYPE BUFFER_ID, BUFFER_STATUS_TYPE *BUFFER_STATUS,
                       RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct buffer *b = BUFFER_ID >= 1 && BUFFER_ID <= nbuffers ? &buffers[BUFFER_ID] : NULL;
    if (!b) {
        RC(INVALID_PARAM);
    } else {
        BUFFER_STATUS->NB_MESSAGE = b->count;
        BUFFER_STATUS->MAX_NB_MESSAGE = b->max_nb;
        BUFFER_STATUS->MAX_MESSAGE_SIZE = b->max_size;
        BUFFER_STATUS->WAITING_PROCESSES = b->waiters.count;
        RC(NO_ERROR);
    }
    leave(me);
}

/* ---- blackboards ---------------------------------------------------------------------- */

void CREATE_BLACKBOARD(const char BLACKBOARD_NAME[], MESSAGE_SIZE_TYPE MAX_MESSAGE_SIZE,
                       BLACKBOARD_ID_TYPE *BLACKBOARD_ID, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    RETURN_CODE_TYPE rc = can_create(LOOKUP(blackboards, nblackboards, BLACKBOARD_NAME),
                                     nblackboards, SYSTEM_LIMIT_NUMBER_OF_BLACKBOARDS);
    if (rc == NO_ERROR && (MAX_MESSAGE_SIZE <= 0 || MAX_MESSAGE_SIZE > SYSTEM_LIMIT_MESSAGE_SIZE))
        rc = INVALID_PARAM;
    if (rc == NO_ERROR) {
        struct blackboard *bb = &blackboards[nblackboards + 1];
        memset(bb, 0, sizeof *bb);
        bb->message = malloc(MAX_MESSAGE_SIZE);
        if (!bb->message) {
            rc = INVALID_CONFIG;
        } else {
            copy_name(bb->name, BLACKBOARD_NAME);
            bb->max_size = MAX_MESSAGE_SIZE;
            bb->waiters.discipline = FIFO;
            *BLACKBOARD_ID = ++nblackboards;
        }
    }
    RC(rc);
    leave(me);
}

static struct blackboard *blackboard(BLACKBOARD_ID_TYPE id)
{
    return id >= 1 && id <= nblackboards ? &blackboards[id] : NULL;
}

void DISPLAY_BLACKBOARD(BLACKBOARD_ID_TYPE BLACKBOARD_ID, MESSAGE_ADDR_TYPE MESSAGE_ADDR,
                        MESSAGE_SIZE_TYPE LENGTH, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct blackboard *bb = blackboard(BLACKBOARD_ID);
    if (!bb || LENGTH <= 0 || LENGTH > bb->max_size) {
        RC(INVALID_PARAM);
    } else {
        memcpy(bb->message, MESSAGE_ADDR, LENGTH);
        bb->length = LENGTH;
        bb->occupied = 1;
        for (struct proc *r; (r = waitq_pop(&bb->waiters));) {  /* every reader gets it */
            memcpy(r->xfer, MESSAGE_ADDR, LENGTH);
            r->xfer_len = LENGTH;
            make_ready(r, NO_ERROR);
        }
        RC(NO_ERROR);
    }
    leave(me);
}

void READ_BLACKBOARD(BLACKBOARD_ID_TYPE BLACKBOARD_ID, SYSTEM_TIME_TYPE TIME_OUT,
                     MESSAGE_ADDR_TYPE MESSAGE_ADDR, MESSAGE_SIZE_TYPE *LENGTH,
                     RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct blackboard *bb = blackboard(BLACKBOARD_ID);
    *LENGTH = 0;
    if (!bb || !timeout_valid(TIME_OUT)) {
        RC(INVALID_PARAM);
    } else if (bb->occupied) {
        memcpy(MESSAGE_ADDR, bb->message, bb->length);
        *LENGTH = bb->length;
        RC(NO_ERROR);
    } else {
        me->xfer = MESSAGE_ADDR;
        RETURN_CODE_TYPE rc = wait_on(me, &bb->waiters, TIME_OUT);
        if (rc == NO_ERROR)
            *LENGTH = me->xfer_len;
        RC(rc);
    }
    leave(me);
}

void CLEAR_BLACKBOARD(BLACKBOARD_ID_TYPE BLACKBOARD_ID, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct blackboard *bb = blackboard(BLACKBOARD_ID);
    if (bb)
        bb->occupied = 0;
    RC(bb ? NO_ERROR : INVALID_PARAM);
    leave(me);
}

void GET_BLACKBOARD_ID(const char BLACKBOARD_NAME[], BLACKBOARD_ID_TYPE *BLACKBOARD_ID,
                       RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    int id = LOOKUP(blackboards, nblackboards, BLACKBOARD_NAME);
    if (id)
        *BLACKBOARD_ID = id;
    RC(id ? NO_ERROR : INVALID_CONFIG);
    leave(me);
}

void GET_BLACKBOARD_STATUS(BLACKBOARD_ID_TYPE BLACKBOARD_ID,
                           BLACKBOARD_STATUS_TYPE *BLACKBOARD_STATUS,
                           RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct blackboard *bb = blackboard(BLACKBOARD_ID);
    if (!bb) {
        RC(INVALID_PARAM);
    } else {
        BLACKBOARD_STATUS->EMPTY_INDICATOR = bb->occupied ? OCCUPIED : EMPTY;
        BLACKBOARD_STATUS->MAX_MESSAGE_SIZE = bb->max_size;
        BLACKBOARD_STATUS->WAITING_PROCESSES = bb->waiters.count;
        RC(NO_ERROR);
    }
    leave(me);
}

/* ---- semaphores ----------------------------------------------------------------------- */

void CREATE_SEMAPHORE(const char SEMAPHORE_NAME[], SEMAPHORE_VALUE_TYPE CURRENT_VALUE,
                      SEMAPHORE_VALUE_TYPE MAXIMUM_VALUE, QUEUING_DISCIPLINE_TYPE QUEUING_DISCIPLINE,
                      SEMAPHORE_ID_TYPE *SEMAPHORE_ID, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    RETURN_CODE_TYPE rc = can_create(LOOKUP(semaphores, nsemaphores, SEMAPHORE_NAME),
                                     nsemaphores, SYSTEM_LIMIT_NUMBER_OF_SEMAPHORES);
    if (rc == NO_ERROR && (MAXIMUM_VALUE <= 0 || MAXIMUM_VALUE > MAX_SEMAPHORE_VALUE ||
                           CURRENT_VALUE < 0 || CURRENT_VALUE > MAXIMUM_VALUE ||
                           (QUEUING_DISCIPLINE != FIFO && QUEUING_DISCIPLINE != PRIORITY)))
        rc = INVALID_PARAM;
    if (rc == NO_ERROR) {
        struct semaphore *s = &semaphores[++nsemaphores];
        memset(s, 0, sizeof *s);
        copy_name(s->name, SEMAPHORE_NAME);
        s->value = CURRENT_VALUE;
        s->max = MAXIMUM_VALUE;
        s->waiters.discipline = QUEUING_DISCIPLINE;
        *SEMAPHORE_ID = nsemaphores;
    }
    RC(rc);
    leave(me);
}

static struct semaphore *semaphore(SEMAPHORE_ID_TYPE id)
{
    return id >= 1 && id <= nsemaphores ? &semaphores[id] : NULL;
}

void WAIT_SEMAPHORE(SEMAPHORE_ID_TYPE SEMAPHORE_ID, SYSTEM_TIME_TYPE TIME_OUT,
                    RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct semaphore *s = semaphore(SEMAPHORE_ID);
    if (!s || !timeout_valid(TIME_OUT)) {
        RC(INVALID_PARAM);
    } else if (s->value > 0) {
        s->value--;
        RC(NO_ERROR);
    } else {
        RC(wait_on(me, &s->waiters, TIME_OUT));  /* a signal hands the unit over */
    }
    leave(me);
}

void SIGNAL_SEMAPHORE(SEMAPHORE_ID_TYPE SEMAPHORE_ID, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct semaphore *s = semaphore(SEMAPHORE_ID);
    struct proc *w;
    if (!s) {
        RC(INVALID_PARAM);
    } else if ((w = waitq_pop(&s->waiters))) {
        make_ready(w, NO_ERROR);
        RC(NO_ERROR);
    } else if (s->value == s->max) {
        RC(NO_ACTION);
    } else {
        s->value++;
        RC(NO_ERROR);
    }
    leave(me);
}

void GET_SEMAPHORE_ID(const char SEMAPHORE_NAME[], SEMAPHORE_ID_TYPE *SEMAPHORE_ID,
                      RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    int id = LOOKUP(semaphores, nsemaphores, SEMAPHORE_NAME);
    if (id)
        *SEMAPHORE_ID = id;
    RC(id ? NO_ERROR : INVALID_CONFIG);
    leave(me);
}

void GET_SEMAPHORE_STATUS(SEMAPHORE_ID_TYPE SEMAPHORE_ID, SEMAPHORE_STATUS_TYPE *SEMAPHORE_STATUS,
                          RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct semaphore *s = semaphore(SEMAPHORE_ID);
    if (!s) {
        RC(INVALID_PARAM);
    } else {
        SEMAPHORE_STATUS->CURRENT_VALUE = s->value;
        SEMAPHORE_STATUS->MAXIMUM_VALUE = s->max;
        SEMAPHORE_STATUS->WAITING_PROCESSES = s->waiters.count;
        RC(NO_ERROR);
    }
    leave(me);
}

/* ---- events --------------------------------------------------------------------------- */

void CREATE_EVENT(const char EVENT_NAME[], EVENT_ID_TYPE *EVENT_ID,
                  RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    RETURN_CODE_TYPE rc = can_create(LOOKUP(events, nevents, EVENT_NAME), nevents,
                                     SYSTEM_LIMIT_NUMBER_OF_EVENTS);
    if (rc == NO_ERROR) {
        struct event *e = &events[++nevents];
        memset(e, 0, sizeof *e);
        copy_name(e->name, EVENT_NAME);
        e->waiters.discipline = FIFO;
        *EVENT_ID = nevents;
    }
    RC(rc);
    leave(me);
}

static struct event *event(EVENT_ID_TYPE id)
{
    return id >= 1 && id <= nevents ? &events[id] : NULL;
}

void SET_EVENT(EVENT_ID_TYPE EVENT_ID, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct event *e = event(EVENT_ID);
    if (e) {
        e->up = 1;
        for (struct proc *w; (w = waitq_pop(&e->waiters));)
            make_ready(w, NO_ERROR);
    }
    RC(e ? NO_ERROR : INVALID_PARAM);
    leave(me);
}

void RESET_EVENT(EVENT_ID_TYPE EVENT_ID, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct event *e = event(EVENT_ID);
    if (e)
        e->up = 0;
    RC(e ? NO_ERROR : INVALID_PARAM);
    leave(me);
}

void WAIT_EVENT(EVENT_ID_TYPE EVENT_ID, SYSTEM_TIME_TYPE TIME_OUT, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct event *e = event(EVENT_ID);
    if (!e || !timeout_valid(TIME_OUT))
        RC(INVALID_PARAM);
    else if (e->up)
        RC(NO_ERROR);
    else
        RC(wait_on(me, &e->waiters, TIME_OUT));
    leave(me);
}

void GET_EVENT_ID(const char EVENT_NAME[], EVENT_ID_TYPE *EVENT_ID,
                  RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    int id = LOOKUP(events, nevents, EVENT_NAME);
    if (id)
        *EVENT_ID = id;
    RC(id ? NO_ERROR : INVALID_CONFIG);
    leave(me);
}

void GET_EVENT_STATUS(EVENT_ID_TYPE EVENT_ID, EVENT_STATUS_TYPE *EVENT_STATUS,
                      RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct event *e = event(EVENT_ID);
    if (!e) {
        RC(INVALID_PARAM);
    } else {
        EVENT_STATUS->EVENT_STATE = e->up ? UP : DOWN;
        EVENT_STATUS->WAITING_PROCESSES = e->waiters.count;
        RC(NO_ERROR);
    }
    leave(me);
}
