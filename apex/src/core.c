/* libapex core: the partition, its processes and their fixed-priority preemptive
 * scheduling inside the partition, the event thread, and the time services.
 *
 * Every APEX process is a pthread, but only one of them -- the one named by P.running --
 * may execute application code: the others wait on a futex of their own. The running
 * process is the eligible (READY, not suspended) process of highest priority, FIFO among
 * equals, as ARINC 653 asks; a process that has locked preemption keeps the CPU.
 * Scheduling decisions are made under P.lock at two kinds of points:
 *   - every APEX service (a process that is no longer P.running parks itself on the way
 *     out of the service), and
 *   - the event thread (not an APEX process), which wakes for time-outs, releases,
 *     deadlines and port readiness. When it makes a higher-priority process eligible while
 *     the running one executes application code, it sends that thread a signal whose
 *     handler parks it (docs/apex.md gives the latency this costs under karn).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

struct partition P = {.lock = PTHREAD_MUTEX_INITIALIZER};
__thread struct proc *self;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static char **saved_argv;

int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  /* the vDSO: no exit to the monitor */
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long futex(atomic_int *word, int op, int value)
{
    return syscall(SYS_futex, word, op, value, NULL, NULL, 0);
}

void copy_name(char *dst, const char *src)
{
    size_t n = strnlen(src, MAX_NAME_LENGTH);
    memcpy(dst, src, n);
    if (n < MAX_NAME_LENGTH)
        memset(dst + n, 0, MAX_NAME_LENGTH - n);
}

int names_equal(const char *a, const char *b)
{
    return strncmp(a, b, MAX_NAME_LENGTH) == 0;
}

static int64_t env_ns(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? strtoll(v, NULL, 10) : INFINITE_TIME_VALUE;
}

/* ---- parking and dispatching ---------------------------------------------------------- */

/* Wait until this process is the running one; a process stopped (and maybe restarted)
 * meanwhile starts over from its entry point. Called without P.lock. */
static void wait_for_cpu(struct proc *p)
{
    for (;;) {
        int gate = atomic_load(&p->gate);
        if (atomic_load(&P.running) == p->id)
            break;
        futex(&p->gate, FUTEX_WAIT_PRIVATE, gate);
    }
    if (p->thread_incarnation != p->incarnation)
        siglongjmp(p->top, 1);
}

/* On the way out of a service, or after it blocked: continue only as the running process.
 * in_apex is cleared before P.running is checked, and the scheduler writes P.running
 * before it reads in_apex, so one of the two always sees the other (no lost preemption). */
static void settle(struct proc *p)
{
    for (;;) {
        atomic_store(&p->in_apex, 0);
        if (atomic_load(&P.running) == p->id)
            return;
        atomic_store(&p->in_apex, 1);
        wait_for_cpu(p);
    }
}

static void on_preempt_signal(int sig)
{
    (void)sig;
    struct proc *p = self;
    if (!p || atomic_load(&p->in_apex))
        return;  /* inside a service: it parks itself on the way out */
    int saved = errno;
    atomic_store(&p->parked_async, 1);
    wait_for_cpu(p);
    atomic_store(&p->parked_async, 0);
    errno = saved;
}

static int eligible(const struct proc *p)
{
    return p->id && p->state == READY && !p->suspended;
}

struct proc *proc_by_id(PROCESS_ID_TYPE id)
{
    if (id >= 1 && id <= ERROR_HANDLER_ID && P.procs[id].id == id)
        return &P.procs[id];
    return NULL;
}

/* Make the eligible process of highest priority the running one. Under P.lock. */
void reschedule(void)
{
    struct proc *cur = proc_by_id(atomic_load(&P.running));
    struct proc *best = NULL;
    if (P.mode == NORMAL) {
        for (int i = 1; i <= ERROR_HANDLER_ID; i++) {
            struct proc *p = &P.procs[i];
            if (eligible(p) && (!best || p->priority > best->priority ||
                                (p->priority == best->priority && p->ready_seq < best->ready_seq)))
                best = p;
        }
        /* a process that locked preemption keeps the CPU; only the error handler, which
         * runs when something went wrong, goes before it */
        if (cur && cur == P.lock_owner && eligible(cur) && best && best->id != ERROR_HANDLER_ID)
            best = cur;
    }
    if (best == cur)
        return;
    atomic_store(&P.running, best ? best->id : 0);
    if (best) {
        atomic_fetch_add(&best->gate, 1);
        futex(&best->gate, FUTEX_WAKE_PRIVATE, 1);
    }
    if (cur && cur != self && cur->has_thread && !atomic_load(&cur->in_apex))
        pthread_kill(cur->thread, P.preempt_signal);  /* busy in application code */
}

void make_ready(struct proc *p, RETURN_CODE_TYPE code)
{
    if (p->queue)
        waitq_remove(p->queue, p);
    p->state = READY;
    p->wake_at = NEVER;
    p->wake_code = code;
    p->ready_seq = ++P.ready_counter;
}

int64_t deadline_after(int64_t t, const struct proc *p)
{
    return p->attr.TIME_CAPACITY == INFINITE_TIME_VALUE ? NEVER : t + p->attr.TIME_CAPACITY;
}

static void set_deadline(struct proc *p, int64_t deadline)
{
    p->deadline = deadline;
    p->deadline_reported = 0;
    if (deadline != NEVER)
        event_notify(deadline);
}

/* A process may wait only when it is an APEX process, not the error handler, and has not
 * locked preemption (ARINC 653: INVALID_MODE otherwise). */
int may_wait(struct proc *p)
{
    return p && p->id != ERROR_HANDLER_ID && P.lock_level == 0;
}

/* Block the calling process until `until` (NEVER: no time-out) or until someone makes it
 * ready; q: the object's wait queue, if any. Under P.lock; returns with it held again.
 * The result: the wake_code of whoever woke it, or expiry when the time ran out. */
RETURN_CODE_TYPE block(struct proc *p, int64_t until, struct waitq *q, RETURN_CODE_TYPE expiry)
{
    p->state = WAITING;
    p->wake_at = until;
    p->wake_code = expiry;
    if (q)
        waitq_add(q, p);
    if (until != NEVER && until <= now_ns())
        make_ready(p, expiry);
    else if (until != NEVER)
        event_notify(until);
    reschedule();
    pthread_mutex_unlock(&P.lock);
    wait_for_cpu(p);
    pthread_mutex_lock(&P.lock);
    return p->wake_code;
}

/* ---- the event thread ----------------------------------------------------------------- */

void event_notify(int64_t when)
{
    if ((when < P.event_sleep_until || P.event_fds_changed) && !P.event_notified) {
        P.event_notified = 1;
        ssize_t n = write(P.wake_pipe[1], "", 1);
        (void)n;  /* full: a wake-up is pending anyway */
    }
}

static void release(struct proc *p)
{
    p->release = p->wake_at;
    p->periodic_wait = 0;
    set_deadline(p, deadline_after(p->release, p));
}

static int64_t handle_time(int64_t now)
{
    int64_t next = NEVER;
    for (int i = 1; i <= ERROR_HANDLER_ID; i++) {
        struct proc *p = &P.procs[i];
        if (!p->id)
            continue;
        if (p->state == WAITING && p->wake_at != NEVER) {
            if (p->wake_at <= now) {
                if (p->periodic_wait)
                    release(p);
                if (p->self_suspended)
                    p->suspended = p->self_suspended = 0;  /* SUSPEND_SELF's time-out */
                make_ready(p, p->wake_code);
            } else if (p->wake_at < next) {
                next = p->wake_at;
            }
        }
        if (p->state != DORMANT && p->deadline != NEVER && !p->deadline_reported &&
            !p->periodic_wait) {
            if (p->deadline < now) {
                p->deadline_reported = 1;
                raise_error(DEADLINE_MISSED, p, "deadline missed", 15);
            } else if (p->deadline < next) {
                next = p->deadline;
            }
        }
    }
    return next;
}

static void *event_thread(void *arg)
{
    (void)arg;
    struct pollfd fds[1 + SYSTEM_LIMIT_NUMBER_OF_QUEUING_PORTS];
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);  /* signals are for the processes */
    pthread_mutex_lock(&P.lock);
    for (;;) {
        int64_t now = now_ns();
        int64_t next = handle_time(now);
        fds[0].fd = P.wake_pipe[0];
        fds[0].events = POLLIN;
        int n = 1 + ports_collect(fds + 1, SYSTEM_LIMIT_NUMBER_OF_QUEUING_PORTS);
        P.event_fds_changed = 0;
        reschedule();
        P.event_sleep_until = next;
        P.event_notified = 0;
        pthread_mutex_unlock(&P.lock);
        struct timespec ts, *timeout = NULL;
        if (next != NEVER) {
            int64_t wait = next - now_ns();
            if (wait < 0)
                wait = 0;
            ts.tv_sec = wait / 1000000000;
            ts.tv_nsec = wait % 1000000000;
            timeout = &ts;
        }
        int ready = ppoll(fds, n, timeout, NULL);
        char drain[64];
        if (ready > 0 && (fds[0].revents & POLLIN))
            while (read(P.wake_pipe[0], drain, sizeof drain) > 0) {
            }
        pthread_mutex_lock(&P.lock);
        for (int i = 1; ready > 0 && i < n; i++)
            if (fds[i].revents)
                port_ready(fds[i].fd, fds[i].revents);
    }
    return NULL;
}

/* ---- start-up ------------------------------------------------------------------------- */

static void read_argv(void)
{
    /* kept for COLD_START/WARM_START, which run the program again */
    FILE *f = fopen("/proc/self/cmdline", "r");
    if (!f)
        return;
    static char buf[8192];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    int argc = 0;
    for (size_t i = 0; i < len; i++)
        argc += buf[i] == 0;
    saved_argv = calloc(argc + 1, sizeof *saved_argv);
    for (size_t i = 0, a = 0; i < len && saved_argv; a++) {
        saved_argv[a] = buf + i;
        i += strlen(buf + i) + 1;
    }
}

static void init(void)
{
    const char *restart = getenv("KARN_APEX_RESTART");
    P.mode = restart && !strcmp(restart, "warm") ? WARM_START : COLD_START;
    P.start_condition = restart ? PARTITION_RESTART : NORMAL_START;
    unsetenv("KARN_APEX_RESTART");
    const char *id = getenv("KARN_APEX_PARTITION_ID");
    P.identifier = id ? atoi(id) : 0;
    P.period = env_ns("KARN_APEX_PERIOD_NS");
    P.duration = env_ns("KARN_APEX_DURATION_NS");
    P.event_sleep_until = NEVER;
    read_argv();
    P.preempt_signal = SIGRTMIN + 4;
    struct sigaction sa = {.sa_handler = on_preempt_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(P.preempt_signal, &sa, NULL);
    if (pipe2(P.wake_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        perror("apex: pipe");
        _exit(APEX_HM_EXIT_STATUS);
    }
    pthread_t t;
    if (pthread_create(&t, NULL, event_thread, NULL) != 0) {
        fputs("apex: cannot start the event thread\n", stderr);
        _exit(APEX_HM_EXIT_STATUS);
    }
}

void apex_init(void)
{
    pthread_once(&init_once, init);
}

struct proc *enter(void)
{
    apex_init();
    struct proc *p = self;
    if (p)
        atomic_store(&p->in_apex, 1);
    pthread_mutex_lock(&P.lock);
    return p;
}

void leave(struct proc *p)
{
    reschedule();
    pthread_mutex_unlock(&P.lock);
    if (p)
        settle(p);
}

/* ---- processes ------------------------------------------------------------------------ */

void *apex_process_thread(void *arg)
{
    struct proc *p = arg;
    self = p;
    sigsetjmp(p->top, 1);
    atomic_store(&p->parked_async, 0);
    atomic_store(&p->in_apex, 1);
    for (;;) {  /* parked until dispatched; a start that went stale loops here */
        int gate = atomic_load(&p->gate);
        if (atomic_load(&P.running) == p->id)
            break;
        futex(&p->gate, FUTEX_WAIT_PRIVATE, gate);
    }
    p->thread_incarnation = p->incarnation;
    settle(p);
    p->attr.ENTRY_POINT();
    STOP_SELF();  /* returning from the entry point stops the process */
    return NULL;
}

static RETURN_CODE_TYPE spawn(struct proc *p)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    size_t stack = p->attr.STACK_SIZE < 65536 ? 65536 : p->attr.STACK_SIZE;
    pthread_attr_setstacksize(&attr, stack);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int err = pthread_create(&p->thread, &attr, apex_process_thread, p);
    pthread_attr_destroy(&attr);
    if (err)
        return INVALID_CONFIG;  /* no storage for it */
    p->has_thread = 1;
    return NO_ERROR;
}

static void init_proc(struct proc *p, int id, const PROCESS_ATTRIBUTE_TYPE *attr)
{
    memset(p, 0, sizeof *p);
    p->attr = *attr;
    p->priority = attr->BASE_PRIORITY;
    p->state = DORMANT;
    p->wake_at = NEVER;
    p->deadline = NEVER;
    p->id = id;
}

void CREATE_PROCESS(PROCESS_ATTRIBUTE_TYPE *ATTRIBUTES, PROCESS_ID_TYPE *PROCESS_ID,
                    RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    const PROCESS_ATTRIBUTE_TYPE *a = ATTRIBUTES;
    if (P.mode == NORMAL) {
        RC(INVALID_MODE);
    } else if (!a || !a->ENTRY_POINT || a->STACK_SIZE > MAX_STACK_SIZE ||
               a->BASE_PRIORITY < MIN_PRIORITY_VALUE || a->BASE_PRIORITY > MAX_PRIORITY_VALUE ||
               (a->PERIOD != INFINITE_TIME_VALUE && a->PERIOD <= 0) ||
               (a->TIME_CAPACITY != INFINITE_TIME_VALUE && a->TIME_CAPACITY <= 0) ||
               (a->PERIOD != INFINITE_TIME_VALUE && a->TIME_CAPACITY > a->PERIOD) ||
               (a->PERIOD != INFINITE_TIME_VALUE && a->TIME_CAPACITY == INFINITE_TIME_VALUE) ||
               (a->DEADLINE != SOFT && a->DEADLINE != HARD)) {
        RC(INVALID_PARAM);
    } else {
        int exists = 0;
        for (int i = 1; i <= P.nprocs; i++)
            exists |= names_equal(P.procs[i].attr.NAME, a->NAME);
        if (exists) {
            RC(NO_ACTION);
        } else if (P.nprocs >= SYSTEM_LIMIT_NUMBER_OF_PROCESSES) {
            RC(INVALID_CONFIG);
        } else {
            int id = P.nprocs + 1;
            init_proc(&P.procs[id], id, a);
            RETURN_CODE_TYPE rc = spawn(&P.procs[id]);
            if (rc == NO_ERROR) {
                P.nprocs = id;
                *PROCESS_ID = id;
            } else {
                P.procs[id].id = 0;
            }
            RC(rc);
        }
    }
    leave(me);
}

/* The next release point at or after t: the start of one of the partition's periods
 * counted from NORMAL mode (t itself when the partition has no configured period). */
static int64_t release_point(int64_t t)
{
    if (P.period == INFINITE_TIME_VALUE || P.period <= 0 || t <= P.normal_since)
        return t < P.normal_since ? P.normal_since : t;
    int64_t k = (t - P.normal_since + P.period - 1) / P.period;
    return P.normal_since + k * P.period;
}

/* Start a dormant process now (NORMAL mode) with a delay. */
static void start_now(struct proc *p, int64_t delay)
{
    int64_t now = now_ns();
    p->suspended = p->self_suspended = 0;
    p->priority = p->attr.BASE_PRIORITY;
    p->incarnation++;
    if (p->attr.PERIOD == INFINITE_TIME_VALUE) {
        if (delay == 0) {
            make_ready(p, NO_ERROR);
            set_deadline(p, deadline_after(now, p));
        } else {
            p->state = WAITING;
            p->periodic_wait = 1;  /* released (and its deadline set) when the delay ends */
            p->wake_at = now + delay;
            p->wake_code = NO_ERROR;
            event_notify(p->wake_at);
        }
    } else {
        p->state = WAITING;
        p->periodic_wait = 1;
        p->wake_at = release_point(now) + delay;
        p->wake_code = NO_ERROR;
        event_notify(p->wake_at);
    }
}

/* START in the initialisation modes: the process waits for NORMAL mode. */
static int64_t pending_delay[ERROR_HANDLER_ID + 1];

static void start_process(struct proc *p, int64_t delay)
{
    if (P.mode == NORMAL) {
        start_now(p, delay);
    } else {
        p->state = WAITING;
        p->incarnation++;
        pending_delay[p->id] = delay;
    }
}

static RETURN_CODE_TYPE check_start(PROCESS_ID_TYPE id, struct proc **out)
{
    struct proc *p = proc_by_id(id);
    if (!p || id == ERROR_HANDLER_ID)
        return INVALID_PARAM;
    *out = p;
    return p->state == DORMANT ? NO_ERROR : NO_ACTION;
}

void START(PROCESS_ID_TYPE PROCESS_ID, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter(), *p;
    RETURN_CODE_TYPE rc = check_start(PROCESS_ID, &p);
    if (rc == NO_ERROR)
        start_process(p, 0);
    RC(rc);
    leave(me);
}

void DELAYED_START(PROCESS_ID_TYPE PROCESS_ID, SYSTEM_TIME_TYPE DELAY_TIME,
                   RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter(), *p;
    RETURN_CODE_TYPE rc = check_start(PROCESS_ID, &p);
    if (rc != INVALID_PARAM && (DELAY_TIME < 0 ||
                                (p->attr.PERIOD != INFINITE_TIME_VALUE &&
                                 DELAY_TIME >= p->attr.PERIOD)))
        rc = INVALID_PARAM;  /* negative or infinite; a periodic one: within its period */
    if (rc == NO_ERROR)
        start_process(p, DELAY_TIME);
    RC(rc);
    leave(me);
}

static void make_dormant(struct proc *p)
{
    if (p->queue)
        waitq_remove(p->queue, p);
    p->state = DORMANT;
    p->suspended = p->self_suspended = 0;
    p->periodic_wait = 0;
    p->wake_at = NEVER;
    p->deadline = NEVER;
    p->incarnation++;
    if (P.lock_owner == p) {
        P.lock_level = 0;
        P.lock_owner = NULL;
    }
}

void STOP(PROCESS_ID_TYPE PROCESS_ID, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct proc *p = proc_by_id(PROCESS_ID);
    if (!p || p == me)
        RC(INVALID_PARAM);
    else if (p->state == DORMANT)
        RC(NO_ACTION);
    else {
        make_dormant(p);
        RC(NO_ERROR);
    }
    leave(me);
}

void STOP_SELF(void)
{
    struct proc *me = enter();
    if (!me) {  /* the initialisation: nothing to stop */
        leave(me);
        return;
    }
    make_dormant(me);
    reschedule();
    pthread_mutex_unlock(&P.lock);
    siglongjmp(me->top, 1);  /* park at the top until started again */
}

void SUSPEND_SELF(SYSTEM_TIME_TYPE TIME_OUT, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    if (!may_wait(me) || me->attr.PERIOD != INFINITE_TIME_VALUE)
        RC(INVALID_MODE);
    else if (TIME_OUT < INFINITE_TIME_VALUE)
        RC(INVALID_PARAM);
    else if (TIME_OUT == 0)
        RC(NO_ERROR);
    else {
        me->suspended = me->self_suspended = 1;
        int64_t until = TIME_OUT == INFINITE_TIME_VALUE ? NEVER : now_ns() + TIME_OUT;
        RC(block(me, until, NULL, TIMED_OUT));
    }
    leave(me);
}

void SUSPEND(PROCESS_ID_TYPE PROCESS_ID, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct proc *p = proc_by_id(PROCESS_ID);
    if (!p || p == me || PROCESS_ID == ERROR_HANDLER_ID)
        RC(INVALID_PARAM);
    else if (p->state == DORMANT || p->attr.PERIOD != INFINITE_TIME_VALUE ||
             (P.lock_owner == p && P.lock_level > 0))
        RC(INVALID_MODE);
    else if (p->suspended)
        RC(NO_ACTION);
    else {
        p->suspended = 1;
        RC(NO_ERROR);
    }
    leave(me);
}

void RESUME(PROCESS_ID_TYPE PROCESS_ID, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct proc *p = proc_by_id(PROCESS_ID);
    if (!p || p == me || PROCESS_ID == ERROR_HANDLER_ID)
        RC(INVALID_PARAM);
    else if (p->state == DORMANT || p->attr.PERIOD != INFINITE_TIME_VALUE)
        RC(INVALID_MODE);
    else if (!p->suspended)
        RC(NO_ACTION);
    else {
        p->suspended = 0;
        if (p->self_suspended) {
            p->self_suspended = 0;
            make_ready(p, NO_ERROR);  /* it suspended itself: the wait ends */
        }
        RC(NO_ERROR);
    }
    leave(me);
}

void SET_PRIORITY(PROCESS_ID_TYPE PROCESS_ID, PRIORITY_TYPE PRIORITY,
                  RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct proc *p = proc_by_id(PROCESS_ID);
    if (!p || PROCESS_ID == ERROR_HANDLER_ID || PRIORITY < MIN_PRIORITY_VALUE ||
        PRIORITY > MAX_PRIORITY_VALUE)
        RC(INVALID_PARAM);
    else if (p->state == DORMANT)
        RC(INVALID_MODE);
    else {
        p->priority = PRIORITY;
        p->ready_seq = ++P.ready_counter;  /* the newest of its new priority */
        RC(NO_ERROR);
    }
    leave(me);
}

void LOCK_PREEMPTION(LOCK_LEVEL_TYPE *LOCK_LEVEL, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    if (!me || me->id == ERROR_HANDLER_ID || P.mode != NORMAL)
        RC(NO_ACTION);
    else if (P.lock_level >= MAX_LOCK_LEVEL)
        RC(INVALID_CONFIG);
    else {
        P.lock_level++;
        P.lock_owner = me;
        *LOCK_LEVEL = P.lock_level;
        RC(NO_ERROR);
    }
    leave(me);
}

void UNLOCK_PREEMPTION(LOCK_LEVEL_TYPE *LOCK_LEVEL, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    if (!me || me->id == ERROR_HANDLER_ID || P.mode != NORMAL || P.lock_level == 0)
        RC(NO_ACTION);
    else {
        if (--P.lock_level == 0)
            P.lock_owner = NULL;
        *LOCK_LEVEL = P.lock_level;
        RC(NO_ERROR);
    }
    leave(me);
}

void GET_MY_ID(PROCESS_ID_TYPE *PROCESS_ID, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    if (!me || me->id == ERROR_HANDLER_ID)
        RC(INVALID_MODE);
    else {
        *PROCESS_ID = me->id;
        RC(NO_ERROR);
    }
    leave(me);
}

void GET_PROCESS_ID(const char PROCESS_NAME[], PROCESS_ID_TYPE *PROCESS_ID,
                    RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    RC(INVALID_CONFIG);
    for (int i = 1; i <= P.nprocs; i++)
        if (names_equal(P.procs[i].attr.NAME, PROCESS_NAME)) {
            *PROCESS_ID = i;
            RC(NO_ERROR);
        }
    leave(me);
}

void GET_PROCESS_STATUS(PROCESS_ID_TYPE PROCESS_ID, PROCESS_STATUS_TYPE *PROCESS_STATUS,
                        RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    struct proc *p = proc_by_id(PROCESS_ID);
    if (!p) {
        RC(INVALID_PARAM);
    } else {
        PROCESS_STATUS->ATTRIBUTES = p->attr;
        PROCESS_STATUS->CURRENT_PRIORITY = p->priority;
        PROCESS_STATUS->DEADLINE_TIME = p->deadline == NEVER ? INFINITE_TIME_VALUE : p->deadline;
        PROCESS_STATE_TYPE state = p->state;
        if (p->suspended)
            state = WAITING;
        else if (state == READY && atomic_load(&P.running) == p->id)
            state = RUNNING;
        PROCESS_STATUS->PROCESS_STATE = state;
        RC(NO_ERROR);
    }
    leave(me);
}

/* ---- the partition -------------------------------------------------------------------- */

void GET_PARTITION_STATUS(PARTITION_STATUS_TYPE *PARTITION_STATUS,
                          RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    PARTITION_STATUS->PERIOD = P.period;
    PARTITION_STATUS->DURATION = P.duration;
    PARTITION_STATUS->IDENTIFIER = P.identifier;
    PARTITION_STATUS->LOCK_LEVEL = P.lock_level;
    PARTITION_STATUS->OPERATING_MODE = P.mode;
    PARTITION_STATUS->START_CONDITION = P.start_condition;
    RC(NO_ERROR);
    leave(me);
}

static void enter_normal(void)
{
    P.mode = NORMAL;
    P.normal_since = now_ns();
    for (int i = 1; i <= ERROR_HANDLER_ID; i++) {
        struct proc *p = &P.procs[i];
        if (p->id && p->state == WAITING && !p->periodic_wait && !p->queue) {
            p->state = DORMANT;  /* started during the initialisation */
            start_now(p, pending_delay[i]);
        }
    }
}

void SET_PARTITION_MODE(OPERATING_MODE_TYPE OPERATING_MODE, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    OPERATING_MODE_TYPE mode = OPERATING_MODE;
    if (mode != IDLE && mode != COLD_START && mode != WARM_START && mode != NORMAL) {
        RC(INVALID_PARAM);
    } else if (mode == NORMAL && P.mode == NORMAL) {
        RC(NO_ACTION);
    } else if (mode == WARM_START && P.mode == COLD_START) {
        RC(INVALID_MODE);
    } else if (mode == IDLE) {
        fflush(NULL);
        _exit(0);  /* the partition stops: its health rule on_exit applies */
    } else if (mode == COLD_START || mode == WARM_START) {
        fflush(NULL);
        setenv("KARN_APEX_RESTART", mode == WARM_START ? "warm" : "cold", 1);
        if (saved_argv)
            execv("/proc/self/exe", saved_argv);
        partition_error(ILLEGAL_REQUEST, me, "restart failed", 14);
    } else {
        enter_normal();
        RC(NO_ERROR);
        if (!me) {  /* the initialisation is over: this thread only waits now */
            reschedule();
            pthread_mutex_unlock(&P.lock);
            for (;;)
                pause();
        }
    }
    leave(me);
}

/* ---- time ----------------------------------------------------------------------------- */

void GET_TIME(SYSTEM_TIME_TYPE *SYSTEM_TIME, RETURN_CODE_TYPE *RETURN_CODE)
{
    *SYSTEM_TIME = now_ns();
    RC(NO_ERROR);
}

void TIMED_WAIT(SYSTEM_TIME_TYPE DELAY_TIME, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    if (!may_wait(me))
        RC(INVALID_MODE);
    else if (DELAY_TIME < 0)
        RC(INVALID_PARAM);  /* negative, or infinite */
    else if (DELAY_TIME == 0) {
        me->ready_seq = ++P.ready_counter;  /* behind the others of its priority */
        RC(NO_ERROR);
    } else {
        block(me, now_ns() + DELAY_TIME, NULL, NO_ERROR);
        RC(NO_ERROR);
    }
    leave(me);
}

void PERIODIC_WAIT(RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    if (!may_wait(me) || me->attr.PERIOD == INFINITE_TIME_VALUE) {
        RC(INVALID_MODE);
    } else {
        me->periodic_wait = 1;
        int64_t next = me->release + me->attr.PERIOD;
        block(me, next, NULL, NO_ERROR);
        if (me->periodic_wait) {  /* released by block() itself: the point had passed */
            me->wake_at = next;
            release(me);
        }
        RC(NO_ERROR);
    }
    leave(me);
}

void REPLENISH(SYSTEM_TIME_TYPE BUDGET_TIME, RETURN_CODE_TYPE *RETURN_CODE)
{
    struct proc *me = enter();
    if (!me || me->id == ERROR_HANDLER_ID) {
        RC(INVALID_MODE);
    } else if (BUDGET_TIME < INFINITE_TIME_VALUE) {
        RC(INVALID_PARAM);
    } else {
        int64_t deadline = BUDGET_TIME == INFINITE_TIME_VALUE ? NEVER : now_ns() + BUDGET_TIME;
        if (me->attr.PERIOD != INFINITE_TIME_VALUE &&
            (deadline == NEVER || deadline > me->release + me->attr.PERIOD)) {
            RC(INVALID_MODE);  /* beyond its next release point */
        } else {
            set_deadline(me, deadline);
            RC(NO_ERROR);
        }
    }
    leave(me);
}
