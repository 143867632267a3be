/* libapex internals shared by its modules (docs/apex.md, "How it works"). */
#ifndef KARN_APEX_INTERNAL_H
#define KARN_APEX_INTERNAL_H

#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdint.h>

#include "apex.h"

#define NEVER INT64_MAX
#define HANDLER_PRIORITY (MAX_PRIORITY_VALUE + 1)  /* the error handler is above them all */
#define ERROR_HANDLER_ID (SYSTEM_LIMIT_NUMBER_OF_PROCESSES + 1)
#define MAX_STACK_SIZE (64u << 20)

struct proc;

/* Processes waiting on one object (a port, buffer, semaphore ...), in FIFO or priority
 * order as the object's QUEUING_DISCIPLINE asks. */
struct waitq {
    struct proc *head;
    QUEUING_DISCIPLINE_TYPE discipline;
    int count;
};

struct proc {
    int id;  /* 1..SYSTEM_LIMIT_NUMBER_OF_PROCESSES, or ERROR_HANDLER_ID; 0: slot free */
    PROCESS_ATTRIBUTE_TYPE attr;
    PRIORITY_TYPE priority;
    PROCESS_STATE_TYPE state;  /* DORMANT, READY or WAITING (RUNNING is derived) */
    int suspended;             /* SUSPEND/SUSPEND_SELF: waits for RESUME (or a time-out) */
    int self_suspended;        /* the wait is SUSPEND_SELF's own */
    int64_t wake_at;           /* a time-out, delay or release point; NEVER if none */
    struct waitq *queue;       /* the object it waits on, if any */
    struct proc *next_waiter;
    RETURN_CODE_TYPE wake_code;  /* NO_ERROR, or TIMED_OUT when the time-out ended the wait */
    int periodic_wait;         /* waiting for its next release (PERIODIC_WAIT, START) */
    int64_t release;           /* its last release point */
    int64_t deadline;          /* NEVER: none */
    int deadline_reported;
    uint64_t ready_seq;        /* FIFO order among equal priorities */
    /* handed over by a sender or receiver that found this process waiting */
    APEX_BYTE *xfer;
    MESSAGE_SIZE_TYPE xfer_len;
    /* its thread */
    pthread_t thread;
    int has_thread;
    atomic_int gate;           /* futex word: bumped each time it is dispatched */
    atomic_int in_apex;        /* inside a service: it parks itself at the exit */
    atomic_int parked_async;   /* parked by the preemption signal, in application code */
    unsigned incarnation;      /* bumped by STOP/START: a stale thread starts over */
    unsigned thread_incarnation;
    sigjmp_buf top;
};

struct partition {
    pthread_mutex_t lock;
    atomic_int running;  /* id of the one process allowed to run application code */
    OPERATING_MODE_TYPE mode;
    START_CONDITION_TYPE start_condition;
    PARTITION_ID_TYPE identifier;
    int64_t period, duration;  /* INFINITE_TIME_VALUE when not configured */
    int64_t normal_since;      /* when NORMAL mode began: release points count from it */
    LOCK_LEVEL_TYPE lock_level;
    struct proc *lock_owner;
    uint64_t ready_counter;
    struct proc procs[SYSTEM_LIMIT_NUMBER_OF_PROCESSES + 2];  /* [0] unused */
    int nprocs;
    int preempt_signal;
    /* the event thread (time-outs, releases, deadlines, port readiness) */
    int wake_pipe[2];
    int64_t event_sleep_until;
    int event_notified;
    int event_fds_changed;
};

extern struct partition P;
extern __thread struct proc *self;

/* core.c */
int64_t now_ns(void);
void apex_init(void);
struct proc *enter(void);
void leave(struct proc *p);
struct proc *proc_by_id(PROCESS_ID_TYPE id);
int may_wait(struct proc *p);
RETURN_CODE_TYPE block(struct proc *p, int64_t until, struct waitq *q, RETURN_CODE_TYPE expiry);
void make_ready(struct proc *p, RETURN_CODE_TYPE code);
void reschedule(void);
void event_notify(int64_t when);
void copy_name(char *dst, const char *src);
int names_equal(const char *a, const char *b);
int64_t deadline_after(int64_t t, const struct proc *p);

void *apex_process_thread(void *arg);

/* waitq.c: wait queues */
void waitq_add(struct waitq *q, struct proc *p);
void waitq_remove(struct waitq *q, struct proc *p);
struct proc *waitq_pop(struct waitq *q);

/* health.c */
void raise_error(ERROR_CODE_TYPE code, struct proc *failed, const char *msg, int len);
void partition_error(ERROR_CODE_TYPE code, struct proc *failed, const char *msg, int len);

/* ports.c: port readiness seen by the event thread */
struct pollfd;
int ports_collect(struct pollfd *fds, int max);
void port_ready(int fd, short revents);

#define RC(x) do { *RETURN_CODE = (x); } while (0)

#endif
