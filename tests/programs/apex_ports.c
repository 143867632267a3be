/* APEX sampling and queuing ports between two karn partitions, case by case (the codes
 * ARINC 653 gives are in tests/test_apex.py). argv[1]: "writer" or "reader". The reader
 * makes its empty-port checks, then sends "go" on `ack`; the writer then writes `sam` and
 * sends `q`. Every check prints "NAME RC". */
#include <stdio.h>
#include <string.h>

#include "apex.h"

static const char *const codes[] = {"NO_ERROR", "NO_ACTION", "NOT_AVAILABLE", "INVALID_PARAM",
                                    "INVALID_CONFIG", "INVALID_MODE", "TIMED_OUT"};
#define CHECK(name, call) do { RETURN_CODE_TYPE rc_ = 99; call; \
    printf("%s %s\n", name, (unsigned)rc_ < 7 ? codes[rc_] : "?"); fflush(stdout); } while (0)
#define RC (&rc_)
#define MS 1000000LL

static SAMPLING_PORT_ID_TYPE sam;
static QUEUING_PORT_ID_TYPE q, ack;

static void writer(void)
{
    RETURN_CODE_TYPE rc;
    APEX_BYTE msg[64] = {0};
    MESSAGE_SIZE_TYPE len;
    VALIDITY_TYPE validity;
    CHECK("READ_SAMPLING_MESSAGE/source", READ_SAMPLING_MESSAGE(sam, msg, &len, &validity, RC));
    CHECK("WRITE_SAMPLING_MESSAGE/too-long", WRITE_SAMPLING_MESSAGE(sam, msg, 33, RC));
    CHECK("WRITE_SAMPLING_MESSAGE/empty", WRITE_SAMPLING_MESSAGE(sam, msg, 0, RC));
    CHECK("WRITE_SAMPLING_MESSAGE/bad-id", WRITE_SAMPLING_MESSAGE(9, msg, 4, RC));
    CHECK("SEND_QUEUING_MESSAGE/too-long", SEND_QUEUING_MESSAGE(q, msg, 33, 0, RC));
    CHECK("SEND_QUEUING_MESSAGE/bad-id", SEND_QUEUING_MESSAGE(9, msg, 4, 0, RC));
    CHECK("SEND_QUEUING_MESSAGE/destination", SEND_QUEUING_MESSAGE(ack, msg, 4, 0, RC));
    CHECK("RECEIVE_QUEUING_MESSAGE/source", RECEIVE_QUEUING_MESSAGE(q, 0, msg, &len, RC));
    CHECK("RECEIVE_QUEUING_MESSAGE/go", RECEIVE_QUEUING_MESSAGE(ack, INFINITE_TIME_VALUE, msg, &len, RC));
    CHECK("WRITE_SAMPLING_MESSAGE/ok", WRITE_SAMPLING_MESSAGE(sam, (MESSAGE_ADDR_TYPE)"s1", 2, RC));
    CHECK("SEND_QUEUING_MESSAGE/ok", SEND_QUEUING_MESSAGE(q, (MESSAGE_ADDR_TYPE)"m1", 2, 0, RC));
    /* stay until the reader is done (it stops the system with its IDLE) */
    RECEIVE_QUEUING_MESSAGE(ack, INFINITE_TIME_VALUE, msg, &len, &rc);
    SET_PARTITION_MODE(IDLE, &rc);
}

static void reader(void)
{
    RETURN_CODE_TYPE rc;
    APEX_BYTE msg[64] = {0};
    MESSAGE_SIZE_TYPE len;
    VALIDITY_TYPE validity;
    SAMPLING_PORT_STATUS_TYPE ss;
    QUEUING_PORT_STATUS_TYPE qs;
    CHECK("READ_SAMPLING_MESSAGE/empty", READ_SAMPLING_MESSAGE(sam, msg, &len, &validity, RC));
    CHECK("WRITE_SAMPLING_MESSAGE/destination", WRITE_SAMPLING_MESSAGE(sam, msg, 4, RC));
    CHECK("RECEIVE_QUEUING_MESSAGE/empty", RECEIVE_QUEUING_MESSAGE(q, 0, msg, &len, RC));
    CHECK("RECEIVE_QUEUING_MESSAGE/time-out", RECEIVE_QUEUING_MESSAGE(q, 20 * MS, msg, &len, RC));
    CHECK("RECEIVE_QUEUING_MESSAGE/bad-timeout", RECEIVE_QUEUING_MESSAGE(q, -9, msg, &len, RC));
    CHECK("SEND_QUEUING_MESSAGE/go", SEND_QUEUING_MESSAGE(ack, (MESSAGE_ADDR_TYPE)"go", 2, INFINITE_TIME_VALUE, RC));
    CHECK("RECEIVE_QUEUING_MESSAGE/blocking", RECEIVE_QUEUING_MESSAGE(q, INFINITE_TIME_VALUE, msg, &len, RC));
    printf("received %.*s\n", (int)len, msg);
    for (int i = 0; i < 500; i++) {  /* its sampling message travels on its own channel */
        READ_SAMPLING_MESSAGE(sam, msg, &len, &validity, &rc);
        if (rc == NO_ERROR)
            break;
        TIMED_WAIT(10 * MS, &rc);
    }
    CHECK("READ_SAMPLING_MESSAGE/fresh", READ_SAMPLING_MESSAGE(sam, msg, &len, &validity, RC));
    printf("sampled %.*s validity %s\n", (int)len, msg, validity == VALID ? "VALID" : "INVALID");
    CHECK("GET_SAMPLING_PORT_STATUS/ok", GET_SAMPLING_PORT_STATUS(sam, &ss, RC));
    printf("sampling status refresh_ms %lld last %s\n", (long long)(ss.REFRESH_PERIOD / MS),
           ss.LAST_MSG_VALIDITY == VALID ? "VALID" : "INVALID");
    TIMED_WAIT(800 * MS, &rc);  /* older than the refresh period now */
    CHECK("READ_SAMPLING_MESSAGE/stale", READ_SAMPLING_MESSAGE(sam, msg, &len, &validity, RC));
    printf("sampled %.*s validity %s\n", (int)len, msg, validity == VALID ? "VALID" : "INVALID");
    CHECK("GET_QUEUING_PORT_STATUS/ok", GET_QUEUING_PORT_STATUS(q, &qs, RC));
    printf("queuing status max_nb %d max_size %d destination %d\n", qs.MAX_NB_MESSAGE,
           qs.MAX_MESSAGE_SIZE, qs.PORT_DIRECTION == DESTINATION);
    CHECK("GET_QUEUING_PORT_STATUS/bad-id", GET_QUEUING_PORT_STATUS(0, &qs, RC));
    SEND_QUEUING_MESSAGE(ack, (MESSAGE_ADDR_TYPE)"bye", 3, INFINITE_TIME_VALUE, &rc);
    SET_PARTITION_MODE(IDLE, &rc);
}

int main(int argc, char **argv)
{
    RETURN_CODE_TYPE rc_;
    SAMPLING_PORT_ID_TYPE sid;
    QUEUING_PORT_ID_TYPE qid;
    PROCESS_ID_TYPE pid;
    int is_writer = argc > 1 && !strcmp(argv[1], "writer");
    PORT_DIRECTION_TYPE out = is_writer ? SOURCE : DESTINATION;
    PORT_DIRECTION_TYPE in = is_writer ? DESTINATION : SOURCE;
    SYSTEM_TIME_TYPE refresh = is_writer ? INFINITE_TIME_VALUE : 500 * MS;

    CHECK("CREATE_SAMPLING_PORT/unknown-name", CREATE_SAMPLING_PORT("nosuch", 32, out, refresh, &sid, RC));
    CHECK("CREATE_SAMPLING_PORT/wrong-size", CREATE_SAMPLING_PORT("sam", 31, out, refresh, &sid, RC));
    CHECK("CREATE_SAMPLING_PORT/wrong-direction", CREATE_SAMPLING_PORT("sam", 32, in, refresh, &sid, RC));
    CHECK("CREATE_SAMPLING_PORT/queuing-port", CREATE_SAMPLING_PORT("q", 32, out, refresh, &sid, RC));
    if (!is_writer)
        CHECK("CREATE_SAMPLING_PORT/refresh-mismatch", CREATE_SAMPLING_PORT("sam", 32, out, 10 * MS, &sid, RC));
    CHECK("CREATE_SAMPLING_PORT/ok", CREATE_SAMPLING_PORT("sam", 32, out, refresh, &sam, RC));
    CHECK("CREATE_SAMPLING_PORT/again", CREATE_SAMPLING_PORT("sam", 32, out, refresh, &sid, RC));
    CHECK("GET_SAMPLING_PORT_ID/ok", GET_SAMPLING_PORT_ID("sam", &sid, RC));
    CHECK("GET_SAMPLING_PORT_ID/unknown", GET_SAMPLING_PORT_ID("nosuch", &sid, RC));
    CHECK("CREATE_QUEUING_PORT/wrong-depth", CREATE_QUEUING_PORT("q", 32, 5, out, FIFO, &qid, RC));
    CHECK("CREATE_QUEUING_PORT/bad-discipline", CREATE_QUEUING_PORT("q", 32, 4, out, (QUEUING_DISCIPLINE_TYPE)5, &qid, RC));
    CHECK("CREATE_QUEUING_PORT/wrong-direction", CREATE_QUEUING_PORT("q", 32, 4, in, FIFO, &qid, RC));
    CHECK("CREATE_QUEUING_PORT/ok", CREATE_QUEUING_PORT("q", 32, 4, out, FIFO, &q, RC));
    CHECK("CREATE_QUEUING_PORT/again", CREATE_QUEUING_PORT("q", 32, 4, out, FIFO, &qid, RC));
    CHECK("GET_QUEUING_PORT_ID/ok", GET_QUEUING_PORT_ID("q", &qid, RC));
    CHECK("GET_QUEUING_PORT_ID/unknown", GET_QUEUING_PORT_ID("nosuch", &qid, RC));
    CREATE_QUEUING_PORT("ack", 8, 2, in, PRIORITY, &ack, &rc_);
    PROCESS_ATTRIBUTE_TYPE a = {.PERIOD = INFINITE_TIME_VALUE, .TIME_CAPACITY = INFINITE_TIME_VALUE,
                                .ENTRY_POINT = is_writer ? writer : reader, .STACK_SIZE = 65536,
                                .BASE_PRIORITY = 10, .DEADLINE = SOFT, .NAME = "main"};
    CREATE_PROCESS(&a, &pid, &rc_);
    START(pid, &rc_);
    SET_PARTITION_MODE(NORMAL, &rc_);
    return 1;
}
