/* The logger partition of examples/system (docs/systems.md): prints each alert the
 * detector sends on /dev/ports/alerts until the detector says "end". */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define ALERT_MAX 128  /* the port's max_size */

int main(void)
{
    int in = open("/dev/ports/alerts", O_RDONLY);
    if (in < 0) {
        perror("logger: /dev/ports/alerts");
        return 1;
    }
    char msg[ALERT_MAX + 1];
    int count = 0;
    for (;;) {
        ssize_t n = read(in, msg, ALERT_MAX);
        if (n < 0) {
            perror("logger: read");
            return 1;
        }
        msg[n] = '\0';
        if (strcmp(msg, "end") == 0)
            break;
        printf("ALERT %s\n", msg);
        count++;
    }
    printf("logger: %d alerts\n", count);
    return 0;
}
