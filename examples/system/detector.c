/* The detector partition of examples/system (docs/systems.md): reads the readings that
 * passed the guard and the diode from /dev/ports/readings and, for each value over the
 * limit, writes an alert to /dev/ports/alerts. Reading id 0 ends the run. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define LIMIT 60.0
#define READING_MAX 256  /* the port's max_size: one read() is one whole message */

int main(void)
{
    int in = open("/dev/ports/readings", O_RDONLY);
    int out = open("/dev/ports/alerts", O_WRONLY);
    if (in < 0 || out < 0) {
        perror("detector: /dev/ports");
        return 1;
    }
    char msg[READING_MAX + 1], alert[128];
    int seen = 0, alerts = 0;
    for (;;) {
        ssize_t n = read(in, msg, READING_MAX);
        if (n < 0) {
            perror("detector: read");
            return 1;
        }
        msg[n] = '\0';
        int id;
        double value;
        /* the guard forwards its canonical JSON: {"id":N,"value":X} */
        if (sscanf(msg, "{\"id\":%d,\"value\":%lf}", &id, &value) != 2) {
            printf("detector: unexpected message %s\n", msg);
            continue;
        }
        if (id == 0)
            break;
        seen++;
        if (value > LIMIT) {
            int len = snprintf(alert, sizeof alert, "reading %d: %g is over %g", id, value, LIMIT);
            if (write(out, alert, len) != len) {
                perror("detector: write");
                return 1;
            }
            alerts++;
        }
    }
    write(out, "end", 3);
    printf("detector: %d readings, %d alerts\n", seen, alerts);
    return 0;
}
