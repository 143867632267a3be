/* The sensor partition of examples/system (docs/systems.md): writes readings, one JSON
 * message per write() to /dev/ports/readings, at --rate messages per second. Two of them
 * are malformed on purpose, for the guard on the channel to reject; the last (id 0) says
 * that no more follow. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const readings[] = {
    "{\"id\":1,\"value\":12.5}",
    "{\"id\":2,\"value\":48.0}",
    "{\"id\":3,\"value\":71.5}",
    "{\"id\":4,\"value\":\"high\"}",                    /* schema: not a number */
    "{\"id\":5,\"value\":30.0}",
    "{\"id\":6,\"value\":95.0}",
    "{\"id\":7,\"value\":1,\"note\":\"drop table\"}",  /* a deny phrase */
    "{\"id\":8,\"value\":20.0}",
    "{\"id\":9,\"value\":88.25}",
    "{\"id\":0,\"value\":0}",                           /* the end */
};

int main(int argc, char **argv)
{
    long rate = 10;
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--rate") == 0)
            rate = strtol(argv[i + 1], NULL, 10);
    if (rate < 1 || rate > 1000) {
        fprintf(stderr, "sensor: --rate must be 1..1000\n");
        return 2;
    }
    const char *mode = getenv("MODE");
    printf("sensor: mode %s, %ld readings per second\n", mode ? mode : "lab", rate);
    FILE *port = fopen("/dev/ports/readings", "w");
    if (port == NULL) {
        perror("sensor: /dev/ports/readings");
        return 1;
    }
    struct timespec pause = {0, 1000000000L / rate};
    size_t count = sizeof readings / sizeof readings[0];
    for (size_t i = 0; i < count; i++) {
        /* one write() is one message: no stdio buffering across messages */
        if (write(fileno(port), readings[i], strlen(readings[i])) < 0) {
            perror("sensor: write");
            return 1;
        }
        nanosleep(&pause, NULL);
    }
    printf("sensor: sent %zu readings\n", count);
    return 0;
}
