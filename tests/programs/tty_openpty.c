/* A pty of the guest's own: posix_openpt/grantpt/unlockpt/ptsname, then openpty().
 * Prints what a native run prints (the pty numbers differ, so they are not printed):
 * the lock (slave open before unlockpt), a line through the line discipline (echo on the
 * master, ONLCR on the way back), the slave's name and stat, isatty, termios. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pty.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

static void show(const char *what, const char *buf, ssize_t n) {
    printf("%s:", what);
    for (ssize_t i = 0; i < n; i++)
        printf(buf[i] >= 32 && buf[i] < 127 ? "%c" : "\\x%02x", (unsigned char)buf[i]);
    printf("\n");
}

static int roundtrip(int master, int slave) {
    char buf[64];
    if (write(master, "ping\n", 5) != 5) return perror("write master"), 1;
    ssize_t n = read(slave, buf, sizeof buf); /* canonical mode: the whole line */
    show("slave read", buf, n);
    n = read(master, buf, sizeof buf); /* the echo */
    show("echo", buf, n);
    if (write(slave, "pong\n", 5) != 5) return perror("write slave"), 1;
    n = read(master, buf, sizeof buf);
    show("master read", buf, n);
    return 0;
}

int main(void) {
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0) return perror("posix_openpt"), 1;
    if (grantpt(master) != 0) return perror("grantpt"), 1;
    char *name = ptsname(master);
    if (name == NULL) return perror("ptsname"), 1;
    printf("name under /dev/pts/: %d\n", strncmp(name, "/dev/pts/", 9) == 0);
    int early = open(name, O_RDWR | O_NOCTTY);
    printf("open before unlockpt: %s\n", early < 0 ? strerror(errno) : "opened");
    if (unlockpt(master) != 0) return perror("unlockpt"), 1;
    int slave = open(name, O_RDWR | O_NOCTTY);
    if (slave < 0) return perror("open slave"), 1;
    struct stat by_name, by_fd;
    stat(name, &by_name);
    fstat(slave, &by_fd);
    printf("chr: %d same: %d\n", S_ISCHR(by_fd.st_mode),
           by_name.st_rdev == by_fd.st_rdev && by_name.st_ino == by_fd.st_ino);
    printf("isatty master %d slave %d\n", isatty(master), isatty(slave));
    char *tty = ttyname(slave);
    printf("ttyname is the name: %d\n", tty != NULL && strcmp(tty, name) == 0);
    if (roundtrip(master, slave)) return 1;
    close(slave);
    close(master);

    char pname[64];
    struct winsize ws = {.ws_row = 33, .ws_col = 99};
    if (openpty(&master, &slave, pname, NULL, &ws) != 0) return perror("openpty"), 1;
    struct winsize got;
    ioctl(slave, TIOCGWINSZ, &got);
    printf("openpty winsize %dx%d\n", got.ws_row, got.ws_col);
    struct termios t;
    tcgetattr(slave, &t);
    t.c_lflag &= ~ECHO;
    tcsetattr(slave, TCSANOW, &t);
    if (write(master, "quiet\n", 6) != 6) return 1;
    char buf[64];
    ssize_t n = read(slave, buf, sizeof buf);
    show("no echo, slave read", buf, n);
    int pending = -1;
    ioctl(master, FIONREAD, &pending);
    printf("bytes waiting on the master: %d\n", pending);
    t.c_lflag |= ECHO;
    tcsetattr(slave, TCSANOW, &t);
    return roundtrip(master, slave);
}
