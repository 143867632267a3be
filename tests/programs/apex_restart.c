/* SET_PARTITION_MODE(COLD_START) runs the partition again (start condition
 * PARTITION_RESTART); then a process raises an application error with no error handler,
 * and the health monitor stops the partition with APEX_HM_EXIT_STATUS. */
#include <stdio.h>

#include "apex.h"

static void worker(void)
{
    RETURN_CODE_TYPE rc;
    RAISE_APPLICATION_ERROR(APPLICATION_ERROR, (MESSAGE_ADDR_TYPE)"sensor stuck", 12, &rc);
    printf("not reached\n");
}

int main(void)
{
    RETURN_CODE_TYPE rc;
    PARTITION_STATUS_TYPE ps;
    PROCESS_ID_TYPE id;
    GET_PARTITION_STATUS(&ps, &rc);
    printf("start condition %d mode %d\n", ps.START_CONDITION, ps.OPERATING_MODE);
    fflush(stdout);
    if (ps.START_CONDITION == NORMAL_START) {
        SET_PARTITION_MODE(COLD_START, &rc);
        printf("not reached\n");
    }
    PROCESS_ATTRIBUTE_TYPE a = {.PERIOD = INFINITE_TIME_VALUE, .TIME_CAPACITY = INFINITE_TIME_VALUE,
                                .ENTRY_POINT = worker, .STACK_SIZE = 65536, .BASE_PRIORITY = 5,
                                .DEADLINE = SOFT, .NAME = "worker"};
    CREATE_PROCESS(&a, &id, &rc);
    START(id, &rc);
    SET_PARTITION_MODE(NORMAL, &rc);
    return 1;
}
