/* A session made on a pty of the program's own, as login_tty, forkpty and Python's
   pty.fork make it: the child leaves its session (setsid), makes the pty its controlling
   terminal (TIOCSCTTY), and reaches it as /dev/tty, as does a child of its own. The parent
   reads what comes through the pty's master. Prints results and errno names, never pids. */
#include "karntest.h"
#include <fcntl.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

static void through_dev_tty(const char *who)
{
    int fd = open("/dev/tty", O_WRONLY);
    if (fd < 0) {
        printf("%s: open /dev/tty = -1 %s\n", who, errno_name(errno));
        return;
    }
    dprintf(fd, "%s wrote through /dev/tty\n", who);
    close(fd);
}

int main(void)
{
    int master, slave;
    MUST(openpty(&master, &slave, NULL, NULL, NULL) == 0);
    fflush(stdout);
    pid_t child = fork();
    MUST(child >= 0);
    if (child == 0) {
        close(master);
        /* its output from here goes to the pty, where the parent reads it */
        MUST(dup2(slave, 1) == 1);
        SHOW("TIOCSCTTY before setsid", ioctl(slave, TIOCSCTTY, 0));
        YESNO("setsid made a session", setsid() == getpid());
        SHOW("TIOCSCTTY", ioctl(slave, TIOCSCTTY, 0));
        SHOW("TIOCSCTTY again", ioctl(slave, TIOCSCTTY, 0));
        pid_t sid = 0;
        SHOW("TIOCGSID", ioctl(slave, TIOCGSID, &sid));
        YESNO("TIOCGSID names the session", sid == getsid(0));
        fflush(stdout);
        through_dev_tty("the session leader");
        pid_t grandchild = fork();
        if (grandchild == 0) {
            through_dev_tty("its child");
            _exit(0);
        }
        MUST(waitpid(grandchild, NULL, 0) == grandchild);
        _exit(0);
    }
    close(slave);
    char buf[4096];
    ssize_t n;
    while ((n = read(master, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != '\r')
                putchar(buf[i]);
    int status;
    MUST(waitpid(child, &status, 0) == child);
    printf("child exit status %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
