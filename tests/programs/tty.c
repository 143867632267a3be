/* Terminal ioctls on stdin/stdout when they are a pseudo-terminal: TCGETS, TIOCGWINSZ. */
#include "karntest.h"

#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

int main(void)
{
    struct termios t;
    struct winsize ws;
    for (int fd = 0; fd <= 1; fd++) {
        printf("fd %d isatty: %d\n", fd, isatty(fd));
        memset(&t, 0, sizeof t);
        SHOW("TCGETS", ioctl(fd, TCGETS, &t));
        printf("ICANON=%d ECHO=%d ONLCR=%d\n", (t.c_lflag & ICANON) != 0, (t.c_lflag & ECHO) != 0,
               (t.c_oflag & ONLCR) != 0);
        memset(&ws, 0, sizeof ws);
        SHOW("TIOCGWINSZ", ioctl(fd, TIOCGWINSZ, &ws));
        printf("rows=%d cols=%d\n", ws.ws_row, ws.ws_col);
    }
    return 0;
}
