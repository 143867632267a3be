/* APEX return codes, case by case (tests/test_apex.py holds what ARINC 653 Part 1 says
 * each case returns). Every check prints "NAME RC"; processes run the checks that need
 * NORMAL mode, in order, then the partition goes IDLE. Run under `karn run` (no ports). */
#include <stdio.h>
#include <string.h>

#include "apex.h"

static const char *const codes[] = {"NO_ERROR", "NO_ACTION", "NOT_AVAILABLE", "INVALID_PARAM",
                                    "INVALID_CONFIG", "INVALID_MODE", "TIMED_OUT"};

static void report(const char *name, RETURN_CODE_TYPE rc)
{
    printf("%s %s\n", name, (unsigned)rc < 7 ? codes[rc] : "?");
    fflush(stdout);
}

#define CHECK(name, call) do { RETURN_CODE_TYPE rc_ = 99; call; report(name, rc_); } while (0)
#define RC (&rc_)

static PROCESS_ID_TYPE main_pid, helper_pid, periodic_pid, victim_pid;
static SEMAPHORE_ID_TYPE sem;
static EVENT_ID_TYPE ev;
static BUFFER_ID_TYPE buf;
static BLACKBOARD_ID_TYPE bb;
static volatile int handler_saw = -1, handler_runs;

static PROCESS_ATTRIBUTE_TYPE attr(const char *name, void (*entry)(void), int prio,
                                   SYSTEM_TIME_TYPE period, SYSTEM_TIME_TYPE capacity)
{
    PROCESS_ATTRIBUTE_TYPE a;
    memset(&a, 0, sizeof a);
    strncpy(a.NAME, name, sizeof a.NAME);
    a.ENTRY_POINT = entry;
    a.STACK_SIZE = 65536;
    a.BASE_PRIORITY = prio;
    a.PERIOD = period;
    a.TIME_CAPACITY = capacity;
    a.DEADLINE = SOFT;
    return a;
}

static void error_handler(void)
{
    ERROR_STATUS_TYPE e;
    RETURN_CODE_TYPE rc;
    handler_runs++;
    for (;;) {
        GET_ERROR_STATUS(&e, &rc);
        if (rc != NO_ERROR)
            break;
        handler_saw = e.ERROR_CODE;
    }
    CHECK("GET_ERROR_STATUS/empty", GET_ERROR_STATUS(&e, RC));
    STOP_SELF();
}

static void helper(void)  /* lower priority: runs when main waits */
{
    RETURN_CODE_TYPE rc;
    SIGNAL_SEMAPHORE(sem, &rc);    /* wakes main's WAIT_SEMAPHORE */
    SET_EVENT(ev, &rc);            /* wakes main's WAIT_EVENT */
    APEX_BYTE m[8] = "hello";
    DISPLAY_BLACKBOARD(bb, m, 5, &rc);
    SEND_BUFFER(buf, m, 5, 0, &rc);
    SUSPEND_SELF(INFINITE_TIME_VALUE, &rc);
    report("SUSPEND_SELF/resumed", rc);
    STOP_SELF();
}

static void victim(void)
{
    for (;;) {
        RETURN_CODE_TYPE rc;
        TIMED_WAIT(1000000000, &rc);
    }
}

static void periodic(void)
{
    RETURN_CODE_TYPE rc;
    CHECK("SUSPEND_SELF/periodic", SUSPEND_SELF(0, RC));
    CHECK("PERIODIC_WAIT/periodic", PERIODIC_WAIT(RC));
    CHECK("REPLENISH/beyond-release", REPLENISH(10 * 1000000000LL, RC));
    CHECK("REPLENISH/within", REPLENISH(1000000, RC));
    PERIODIC_WAIT(&rc);
    STOP_SELF();
}

static void main_process(void)
{
    RETURN_CODE_TYPE rc;
    PROCESS_ID_TYPE id;
    PROCESS_STATUS_TYPE st;
    PARTITION_STATUS_TYPE ps;
    LOCK_LEVEL_TYPE level;
    APEX_BYTE msg[64];
    MESSAGE_SIZE_TYPE len;
    SYSTEM_TIME_TYPE t0, t1;

    CHECK("GET_MY_ID/process", GET_MY_ID(&id, RC));
    printf("my id matches %d\n", id == main_pid);
    CHECK("GET_PARTITION_STATUS/normal", GET_PARTITION_STATUS(&ps, RC));
    printf("mode NORMAL %d\n", ps.OPERATING_MODE == NORMAL);
    CHECK("SET_PARTITION_MODE/normal-again", SET_PARTITION_MODE(NORMAL, RC));
    CHECK("SET_PARTITION_MODE/bad", SET_PARTITION_MODE((OPERATING_MODE_TYPE)9, RC));
    PROCESS_ATTRIBUTE_TYPE late = attr("late", victim, 5, INFINITE_TIME_VALUE, INFINITE_TIME_VALUE);
    CHECK("CREATE_PROCESS/normal-mode", CREATE_PROCESS(&late, &id, RC));
    CHECK("CREATE_SEMAPHORE/normal-mode", CREATE_SEMAPHORE("late", 0, 1, FIFO, &id, RC));

    /* time */
    CHECK("TIMED_WAIT/negative", TIMED_WAIT(-5, RC));
    CHECK("TIMED_WAIT/zero", TIMED_WAIT(0, RC));
    GET_TIME(&t0, &rc);
    CHECK("TIMED_WAIT/10ms", TIMED_WAIT(10000000, RC));
    GET_TIME(&t1, &rc);
    printf("waited at least 10ms %d\n", t1 - t0 >= 10000000);
    CHECK("PERIODIC_WAIT/aperiodic", PERIODIC_WAIT(RC));
    CHECK("GET_TIME/any", GET_TIME(&t0, RC));
    CHECK("REPLENISH/negative", REPLENISH(-7, RC));

    /* processes */
    CHECK("GET_PROCESS_ID/known", GET_PROCESS_ID("helper", &id, RC));
    CHECK("GET_PROCESS_ID/unknown", GET_PROCESS_ID("nobody", &id, RC));
    CHECK("GET_PROCESS_STATUS/unknown", GET_PROCESS_STATUS(999, &st, RC));
    CHECK("GET_PROCESS_STATUS/known", GET_PROCESS_STATUS(victim_pid, &st, RC));
    printf("victim dormant %d\n", st.PROCESS_STATE == DORMANT);
    CHECK("START/unknown", START(999, RC));
    CHECK("SET_PRIORITY/dormant", SET_PRIORITY(victim_pid, 10, RC));
    CHECK("SUSPEND/dormant", SUSPEND(victim_pid, RC));
    CHECK("RESUME/dormant", RESUME(victim_pid, RC));
    CHECK("STOP/dormant", STOP(victim_pid, RC));
    CHECK("DELAYED_START/negative", DELAYED_START(victim_pid, -3, RC));
    CHECK("DELAYED_START/ok", DELAYED_START(victim_pid, 1000000, RC));
    CHECK("START/not-dormant", START(victim_pid, RC));
    CHECK("SET_PRIORITY/out-of-range", SET_PRIORITY(victim_pid, MAX_PRIORITY_VALUE + 1, RC));
    CHECK("SET_PRIORITY/ok", SET_PRIORITY(victim_pid, 3, RC));
    CHECK("SUSPEND/self", SUSPEND(main_pid, RC));
    CHECK("SUSPEND/ok", SUSPEND(victim_pid, RC));
    CHECK("SUSPEND/again", SUSPEND(victim_pid, RC));
    CHECK("RESUME/ok", RESUME(victim_pid, RC));
    CHECK("RESUME/not-suspended", RESUME(victim_pid, RC));
    CHECK("SUSPEND/periodic", SUSPEND(periodic_pid, RC));
    CHECK("STOP/self", STOP(main_pid, RC));
    CHECK("STOP/ok", STOP(victim_pid, RC));
    CHECK("SUSPEND_SELF/negative", SUSPEND_SELF(-9, RC));
    CHECK("SUSPEND_SELF/zero", SUSPEND_SELF(0, RC));
    CHECK("SUSPEND_SELF/time-out", SUSPEND_SELF(5000000, RC));

    /* preemption lock */
    CHECK("UNLOCK_PREEMPTION/not-locked", UNLOCK_PREEMPTION(&level, RC));
    CHECK("LOCK_PREEMPTION/ok", LOCK_PREEMPTION(&level, RC));
    printf("lock level %d\n", level);
    CHECK("TIMED_WAIT/locked", TIMED_WAIT(1000000, RC));
    CHECK("WAIT_SEMAPHORE/locked", WAIT_SEMAPHORE(sem, 1000000, RC));
    for (int i = 1; i < MAX_LOCK_LEVEL; i++)
        LOCK_PREEMPTION(&level, &rc);
    CHECK("LOCK_PREEMPTION/max", LOCK_PREEMPTION(&level, RC));
    while (level > 0)
        UNLOCK_PREEMPTION(&level, &rc);
    printf("lock level %d\n", level);

    /* intra-partition: waits that the helper (lower priority) satisfies */
    CHECK("START/helper", START(helper_pid, RC));
    CHECK("WAIT_SEMAPHORE/bad-id", WAIT_SEMAPHORE(99, 0, RC));
    CHECK("WAIT_SEMAPHORE/zero-timeout-empty", WAIT_SEMAPHORE(sem, 0, RC));
    CHECK("WAIT_SEMAPHORE/signalled", WAIT_SEMAPHORE(sem, INFINITE_TIME_VALUE, RC));
    CHECK("WAIT_SEMAPHORE/time-out", WAIT_SEMAPHORE(sem, 2000000, RC));
    CHECK("SIGNAL_SEMAPHORE/ok", SIGNAL_SEMAPHORE(sem, RC));
    CHECK("SIGNAL_SEMAPHORE/at-max", SIGNAL_SEMAPHORE(sem, RC));
    CHECK("WAIT_EVENT/set", WAIT_EVENT(ev, INFINITE_TIME_VALUE, RC));
    CHECK("RESET_EVENT/ok", RESET_EVENT(ev, RC));
    CHECK("WAIT_EVENT/zero-timeout-down", WAIT_EVENT(ev, 0, RC));
    CHECK("WAIT_EVENT/time-out", WAIT_EVENT(ev, 2000000, RC));
    CHECK("SET_EVENT/bad-id", SET_EVENT(77, RC));
    CHECK("READ_BLACKBOARD/displayed", READ_BLACKBOARD(bb, INFINITE_TIME_VALUE, msg, &len, RC));
    printf("blackboard %.*s\n", (int)len, msg);
    CHECK("DISPLAY_BLACKBOARD/too-long", DISPLAY_BLACKBOARD(bb, msg, 100, RC));
    CHECK("CLEAR_BLACKBOARD/ok", CLEAR_BLACKBOARD(bb, RC));
    CHECK("READ_BLACKBOARD/empty", READ_BLACKBOARD(bb, 0, msg, &len, RC));
    CHECK("READ_BLACKBOARD/time-out", READ_BLACKBOARD(bb, 2000000, msg, &len, RC));
    CHECK("RECEIVE_BUFFER/sent", RECEIVE_BUFFER(buf, INFINITE_TIME_VALUE, msg, &len, RC));
    CHECK("RECEIVE_BUFFER/empty", RECEIVE_BUFFER(buf, 0, msg, &len, RC));
    CHECK("RECEIVE_BUFFER/time-out", RECEIVE_BUFFER(buf, 2000000, msg, &len, RC));
    CHECK("SEND_BUFFER/too-long", SEND_BUFFER(buf, msg, 64, 0, RC));
    CHECK("SEND_BUFFER/ok", SEND_BUFFER(buf, msg, 5, 0, RC));
    CHECK("SEND_BUFFER/ok2", SEND_BUFFER(buf, msg, 5, 0, RC));
    CHECK("SEND_BUFFER/full", SEND_BUFFER(buf, msg, 5, 0, RC));
    CHECK("SEND_BUFFER/full-time-out", SEND_BUFFER(buf, msg, 5, 2000000, RC));
    BUFFER_STATUS_TYPE bs;
    CHECK("GET_BUFFER_STATUS/ok", GET_BUFFER_STATUS(buf, &bs, RC));
    printf("buffer holds %d of %d\n", bs.NB_MESSAGE, bs.MAX_NB_MESSAGE);
    CHECK("GET_BUFFER_ID/unknown", GET_BUFFER_ID("nobuf", &id, RC));
    CHECK("GET_SEMAPHORE_ID/known", GET_SEMAPHORE_ID("sem", &id, RC));
    CHECK("GET_EVENT_STATUS/bad-id", GET_EVENT_STATUS(0, NULL, RC));
    CHECK("RESUME/self-suspended", RESUME(helper_pid, RC));
    /* the helper runs on and stops itself: waited for (a loaded host can hold it back
     * past any fixed wait), at most ~20 s */
    PROCESS_STATUS_TYPE helper;
    for (int i = 0; i < 10000; i++) {
        GET_PROCESS_STATUS(helper_pid, &helper, &rc);
        if (rc != NO_ERROR || helper.PROCESS_STATE == DORMANT)
            break;
        TIMED_WAIT(2000000, &rc);
    }
    CHECK("STOP/stopped-itself", STOP(helper_pid, RC));

    /* health monitoring */
    CHECK("GET_ERROR_STATUS/not-handler", GET_ERROR_STATUS(NULL, RC));
    CHECK("RAISE_APPLICATION_ERROR/bad-code", RAISE_APPLICATION_ERROR(DEADLINE_MISSED, msg, 4, RC));
    CHECK("RAISE_APPLICATION_ERROR/too-long",
          RAISE_APPLICATION_ERROR(APPLICATION_ERROR, msg, MAX_ERROR_MESSAGE_SIZE + 1, RC));
    CHECK("RAISE_APPLICATION_ERROR/handled",
          RAISE_APPLICATION_ERROR(APPLICATION_ERROR, (MESSAGE_ADDR_TYPE)"oops", 4, RC));
    printf("handler ran %d saw APPLICATION_ERROR %d\n", handler_runs,
           handler_saw == APPLICATION_ERROR);
    CHECK("CREATE_ERROR_HANDLER/normal-mode", CREATE_ERROR_HANDLER(error_handler, 65536, RC));
    CHECK("REPORT_APPLICATION_MESSAGE/ok",
          REPORT_APPLICATION_MESSAGE((MESSAGE_ADDR_TYPE)"report", 6, RC));

    /* the periodic process runs its checks, then the partition ends */
    CHECK("START/periodic", START(periodic_pid, RC));
    TIMED_WAIT(300000000, &rc);
    printf("done\n");
    fflush(stdout);
    SET_PARTITION_MODE(IDLE, &rc);
}

int main(void)
{
    RETURN_CODE_TYPE rc_;
    PROCESS_ID_TYPE id;
    LOCK_LEVEL_TYPE level;
    PROCESS_ATTRIBUTE_TYPE a = attr("main", main_process, 50, INFINITE_TIME_VALUE,
                                    INFINITE_TIME_VALUE);
    CHECK("CREATE_PROCESS/ok", CREATE_PROCESS(&a, &main_pid, RC));
    CHECK("CREATE_PROCESS/same-name", CREATE_PROCESS(&a, &id, RC));
    a = attr("bad", main_process, MAX_PRIORITY_VALUE + 1, INFINITE_TIME_VALUE, INFINITE_TIME_VALUE);
    CHECK("CREATE_PROCESS/bad-priority", CREATE_PROCESS(&a, &id, RC));
    a = attr("bad", main_process, 10, 10000000, 20000000);
    CHECK("CREATE_PROCESS/capacity-over-period", CREATE_PROCESS(&a, &id, RC));
    a = attr("bad", main_process, 10, -5, INFINITE_TIME_VALUE);
    CHECK("CREATE_PROCESS/bad-period", CREATE_PROCESS(&a, &id, RC));
    a = attr("bad", main_process, 10, INFINITE_TIME_VALUE, INFINITE_TIME_VALUE);
    a.STACK_SIZE = 0xffffffffu;
    CHECK("CREATE_PROCESS/huge-stack", CREATE_PROCESS(&a, &id, RC));
    a = attr("helper", helper, 20, INFINITE_TIME_VALUE, INFINITE_TIME_VALUE);
    CREATE_PROCESS(&a, &helper_pid, &rc_);
    a = attr("victim", victim, 10, INFINITE_TIME_VALUE, INFINITE_TIME_VALUE);
    CREATE_PROCESS(&a, &victim_pid, &rc_);
    a = attr("periodic", periodic, 40, 50000000, 50000000);
    CREATE_PROCESS(&a, &periodic_pid, &rc_);
    CHECK("DELAYED_START/periodic-delay-over-period", DELAYED_START(periodic_pid, 60000000, RC));
    CHECK("GET_MY_ID/initialisation", GET_MY_ID(&id, RC));
    CHECK("TIMED_WAIT/initialisation", TIMED_WAIT(1000, RC));
    CHECK("LOCK_PREEMPTION/initialisation", LOCK_PREEMPTION(&level, RC));
    CHECK("CREATE_SEMAPHORE/ok", CREATE_SEMAPHORE("sem", 0, 1, PRIORITY, &sem, RC));
    CHECK("CREATE_SEMAPHORE/same-name", CREATE_SEMAPHORE("sem", 0, 1, PRIORITY, &id, RC));
    CHECK("CREATE_SEMAPHORE/current-over-max", CREATE_SEMAPHORE("s2", 3, 2, FIFO, &id, RC));
    CHECK("CREATE_SEMAPHORE/bad-discipline", CREATE_SEMAPHORE("s3", 0, 2, (QUEUING_DISCIPLINE_TYPE)7, &id, RC));
    CHECK("CREATE_EVENT/ok", CREATE_EVENT("ev", &ev, RC));
    CHECK("CREATE_EVENT/same-name", CREATE_EVENT("ev", &id, RC));
    CHECK("CREATE_BUFFER/ok", CREATE_BUFFER("buf", 16, 2, FIFO, &buf, RC));
    CHECK("CREATE_BUFFER/zero-size", CREATE_BUFFER("buf2", 0, 2, FIFO, &id, RC));
    CHECK("CREATE_BLACKBOARD/ok", CREATE_BLACKBOARD("bb", 16, &bb, RC));
    CHECK("CREATE_BLACKBOARD/same-name", CREATE_BLACKBOARD("bb", 16, &id, RC));
    CHECK("CREATE_ERROR_HANDLER/ok", CREATE_ERROR_HANDLER(error_handler, 65536, RC));
    CHECK("CREATE_ERROR_HANDLER/again", CREATE_ERROR_HANDLER(error_handler, 65536, RC));
    CHECK("START/main", START(main_pid, RC));
    CHECK("SET_PARTITION_MODE/warm-from-cold", SET_PARTITION_MODE(WARM_START, RC));
    SET_PARTITION_MODE(NORMAL, &rc_);
    return 1;  /* not reached */
}
