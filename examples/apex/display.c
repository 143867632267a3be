/* The display partition of the APEX avionics example (avionics.toml, docs/apex.md).
 *
 * "show", a periodic process (100 ms), reads the sampling port `altitude` and its
 * validity at each release, and sends commands back on the queuing port `commands`; the
 * system's guard lets only {"cmd": "rate"|"hold", ...} through. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apex.h"

#define PERIOD_NS 100000000LL
#define MS 1000000LL

static SAMPLING_PORT_ID_TYPE altitude;
static QUEUING_PORT_ID_TYPE commands;
static int releases = 40;

static void send(const char *text)
{
    RETURN_CODE_TYPE rc;
    SEND_QUEUING_MESSAGE(commands, (MESSAGE_ADDR_TYPE)text, strlen(text), 10 * MS, &rc);
    printf("display: sent %s: %s\n", text, rc == NO_ERROR ? "NO_ERROR" : "failed");
}

static void show(void)
{
    RETURN_CODE_TYPE rc;
    APEX_BYTE msg[64];
    MESSAGE_SIZE_TYPE len;
    VALIDITY_TYPE validity;
    int valid = 0, invalid = 0, empty = 0;
    for (int i = 0; i < releases; i++) {
        PERIODIC_WAIT(&rc);
        READ_SAMPLING_MESSAGE(altitude, msg, &len, &validity, &rc);
        if (rc == NO_ACTION)
            empty++;
        else if (validity == VALID)
            valid++;
        else
            invalid++;
        if (i == 10)
            send("{\"cmd\":\"rate\",\"value\":2}");
        if (i == 12)
            send("{\"cmd\":\"selfdestruct\"}");  /* the guard's schema refuses it */
        if (i == 14)
            send("{\"cmd\":\"hold\"}");
    }
    printf("display: reads %d valid %d invalid %d empty %d\n", releases, valid, invalid, empty);
    SET_PARTITION_MODE(IDLE, &rc);
}

int main(int argc, char **argv)
{
    RETURN_CODE_TYPE rc;
    PROCESS_ID_TYPE id;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1)
        releases = atoi(argv[1]);
    CREATE_SAMPLING_PORT("altitude", 64, DESTINATION, 250 * MS, &altitude, &rc);
    CREATE_QUEUING_PORT("commands", 64, 8, SOURCE, FIFO, &commands, &rc);
    if (rc != NO_ERROR)
        printf("display: port configuration: %d\n", rc);
    PROCESS_ATTRIBUTE_TYPE a = {.PERIOD = PERIOD_NS, .TIME_CAPACITY = PERIOD_NS,
                                .ENTRY_POINT = show, .STACK_SIZE = 65536, .BASE_PRIORITY = 20,
                                .DEADLINE = HARD, .NAME = "show"};
    CREATE_PROCESS(&a, &id, &rc);
    START(id, &rc);
    SET_PARTITION_MODE(NORMAL, &rc);
    return 1;
}
