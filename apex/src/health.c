/* Health monitoring: application errors and missed deadlines go to the partition's error
 * handler process when it has one; otherwise (or when the handler itself fails, or during
 * the initialisation) the partition stops with APEX_HM_EXIT_STATUS, and karn's system
 * health monitor applies the partition's on_error rule (restart, halt or stop). */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define ERROR_QUEUE 32

static ERROR_STATUS_TYPE errors[ERROR_QUEUE];
static int error_head, error_count;

static const char *const error_names[] = {
    "DEADLINE_MISSED", "APPLICATION_ERROR", "NUMERIC_ERROR", "ILLEGAL_REQUEST",
    "STACK_OVERFLOW", "MEMORY_VIOLATION", "HARDWARE_FAULT", "POWER_FAIL",
};

static const char *process_name(const struct proc *p)
{
    static char name[MAX_NAME_LENGTH + 1];
    if (!p)
        return "the initialisation";
    if (p->id == ERROR_HANDLER_ID)
        return "the error handler";
    memcpy(name, p->attr.NAME, MAX_NAME_LENGTH);
    name[MAX_NAME_LENGTH] = 0;
    return name;
}

void partition_error(ERROR_CODE_TYPE code, struct proc *failed, const char *msg, int len)
{
    const char *what = (unsigned)code < 8 ? error_names[code] : "UNKNOWN_ERROR";
    fflush(stdout);
    fprintf(stderr, "apex: health monitor: %s in process %s: %.*s; stopping the partition "
            "(status %d)\n", what, process_name(failed), len, msg, APEX_HM_EXIT_STATUS);
    fflush(stderr);
    _exit(APEX_HM_EXIT_STATUS);
}

void raise_error(ERROR_CODE_TYPE code, struct proc *failed, const char *msg, int len)
{
    struct proc *handler = proc_by_id(ERROR_HANDLER_ID);
    if (!handler || failed == handler || P.mode != NORMAL || error_count == ERROR_QUEUE)
        partition_error(code, failed, msg, len);
    ERROR_STATUS_TYPE *e = &errors[(error_head + error_count++) % ERROR_QUEUE];
    memset(e, 0, sizeof *e);
    e->ERROR_CODE = code;
    e->LENGTH = len;
    memcpy(e->MESSAGE, msg, len);
    e->FAILED_PROCESS_ID = failed ? failed->id : 0;
    e->FAILED_ADDRESS = failed ? failed->attr.ENTRY_POINT : NULL;
    if (handler->state == DORMANT) {
        handler->incarnation++;
        make_ready(handler, NO_ERROR);
    }
}

void CREATE_ERROR_HANDLER(SYSTEM_ADDRESS_TYPE ENTRY_POINT, STACK_SIZE_TYPE STACK_SIZE,
                          RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct proc *h = &P.procs[ERROR_HANDLER_ID];
    if (P.mode == NORMAL) {
        RC(INVALID_MODE);
    } else if (h->id) {
        RC(NO_ACTION);
    } else if (!ENTRY_POINT || STACK_SIZE > MAX_STACK_SIZE) {
        RC(INVALID_CONFIG);
    } else {
        memset(h, 0, sizeof *h);
        h->attr.ENTRY_POINT = ENTRY_POINT;
        h->attr.STACK_SIZE = STACK_SIZE;
        h->attr.PERIOD = h->attr.TIME_CAPACITY = INFINITE_TIME_VALUE;
        h->attr.BASE_PRIORITY = h->priority = HANDLER_PRIORITY;
        memcpy(h->attr.NAME, "ERROR_HANDLER", 14);
        h->state = DORMANT;
        h->wake_at = h->deadline = NEVER;
        h->id = ERROR_HANDLER_ID;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, STACK_SIZE < 65536 ? 65536 : STACK_SIZE);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&h->thread, &attr, apex_process_thread, h) != 0) {
            h->id = 0;
            RC(INVALID_CONFIG);
        } else {
            h->has_thread = 1;
            RC(NO_ERROR);
        }
        pthread_attr_destroy(&attr);
    }
    leave(me);
}

void GET_ERROR_STATUS(ERROR_STATUS_TYPE *ERROR_STATUS, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    if (!me || me->id != ERROR_HANDLER_ID) {
        RC(INVALID_CONFIG);
    } else if (error_count == 0) {
        RC(NO_ACTION);
    } else {
        *ERROR_STATUS = errors[error_head];
        error_head = (error_head + 1) % ERROR_QUEUE;
        error_count--;
        RC(NO_ERROR);
    }
    leave(me);
}

void RAISE_APPLICATION_ERROR(ERROR_CODE_TYPE ERROR_CODE, MESSAGE_ADDR_TYPE MESSAGE_ADDR,
                             ERROR_MESSAGE_SIZE_TYPE LENGTH, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    if (ERROR_CODE != APPLICATION_ERROR || LENGTH < 0 || LENGTH > MAX_ERROR_MESSAGE_SIZE ||
        (LENGTH > 0 && !MESSAGE_ADDR)) {
        RC(INVALID_PARAM);
    } else {
        raise_error(ERROR_CODE, me, (const char *)MESSAGE_ADDR, LENGTH);
        RC(NO_ERROR);  /* the handler, above every process, runs before this returns */
    }
    leave(me);
}

void REPORT_APPLICATION_MESSAGE(MESSAGE_ADDR_TYPE MESSAGE_ADDR, MESSAGE_SIZE_TYPE LENGTH,
                                RETURN_CODE_TYPE *RETURN_CODE)
{
    if (LENGTH < 0 || LENGTH > MAX_ERROR_MESSAGE_SIZE || (LENGTH > 0 && !MESSAGE_ADDR)) {
        RC(INVALID_PARAM);
        return;
    }
    struct proc *me = enter();
    fprintf(stderr, "apex: %s: %.*s\n", process_name(me), (int)LENGTH, (const char *)MESSAGE_ADDR);
    RC(NO_ERROR);
    leave(me);
}
