/* Descriptors: pipe2, dup/dup2/dup3, fcntl, ioctl, and the /dev devices. */
#include "karntest.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <termios.h>
#include <unistd.h>

static void show_fd_flags(const char *label, int fd)
{
    int fl = fcntl(fd, F_GETFL);
    int fdfl = fcntl(fd, F_GETFD);
    if (fl == -1 || fdfl == -1) {
        printf("%s: fcntl -1 %s\n", label, errno_name(errno));
        return;
    }
    printf("%s: accmode=%d nonblock=%d append=%d cloexec=%d\n", label, fl & O_ACCMODE,
           (fl & O_NONBLOCK) ? 1 : 0, (fl & O_APPEND) ? 1 : 0, (fdfl & FD_CLOEXEC) ? 1 : 0);
}

int main(void)
{
    int p[2];
    char buf[64];

    /* pipe2 and data through it */
    SHOW("pipe2", pipe2(p, 0));
    printf("pipe fds: %d %d\n", p[0], p[1]);
    show_fd_flags("pipe read end", p[0]);
    show_fd_flags("pipe write end", p[1]);
    SHOW("write pipe", write(p[1], "through the pipe", 16));
    int avail = -1;
    SHOW("FIONREAD", ioctl(p[0], FIONREAD, &avail));
    printf("available: %d\n", avail);
    memset(buf, 0, sizeof buf);
    SHOW("read pipe 7", read(p[0], buf, 7));
    printf("got: [%s]\n", buf);
    struct iovec wv[2] = {{"vec", 3}, {"tor", 3}};
    SHOW("writev pipe", writev(p[1], wv, 2));
    memset(buf, 0, sizeof buf);
    SHOW("read pipe rest", read(p[0], buf, sizeof buf));
    printf("got: [%s]\n", buf);
    SHOW("lseek pipe", lseek(p[0], 0, SEEK_SET));
    SHOW("read write end", read(p[1], buf, 1));
    SHOW("write read end", write(p[0], "x", 1));

    /* O_NONBLOCK: empty pipe read is EAGAIN */
    SHOW("F_SETFL O_NONBLOCK", fcntl(p[0], F_SETFL, O_NONBLOCK));
    show_fd_flags("after F_SETFL", p[0]);
    SHOW("read empty nonblocking", read(p[0], buf, 1));
    int off = 0;
    SHOW("FIONBIO off", ioctl(p[0], FIONBIO, &off));
    show_fd_flags("after FIONBIO off", p[0]);
    int on = 1;
    SHOW("FIONBIO on", ioctl(p[0], FIONBIO, &on));
    show_fd_flags("after FIONBIO on", p[0]);
    SHOW("read empty again", read(p[0], buf, 1));

    /* closing the write end: read gives EOF */
    SHOW("close write end", close(p[1]));
    SHOW("read at EOF", read(p[0], buf, 1));
    SHOW("close read end", close(p[0]));

    SHOW("pipe2 O_CLOEXEC|O_NONBLOCK", pipe2(p, O_CLOEXEC | O_NONBLOCK));
    show_fd_flags("cloexec pipe", p[0]);
    SHOW("pipe2 bad flags", pipe2(p, 0x4));

    /* dup family */
    int d = dup(p[1]);
    printf("dup -> %d\n", d);
    show_fd_flags("dup'd (no cloexec)", d);
    SHOW("dup2 to 10", dup2(p[1], 10));
    SHOW("dup2 same fd", dup2(10, 10));
    SHOW("dup2 bad fd", dup2(1234, 11));
    SHOW("dup3 O_CLOEXEC", dup3(p[1], 12, O_CLOEXEC));
    show_fd_flags("dup3'd", 12);
    SHOW("dup3 same fd", dup3(12, 12, 0));
    SHOW("F_DUPFD 20", fcntl(p[1], F_DUPFD, 20));
    SHOW("F_DUPFD 20 again", fcntl(p[1], F_DUPFD, 20));
    SHOW("F_DUPFD_CLOEXEC 30", fcntl(p[1], F_DUPFD_CLOEXEC, 30));
    show_fd_flags("F_DUPFD_CLOEXEC'd", 30);
    SHOW("F_SETFD cloexec", fcntl(10, F_SETFD, FD_CLOEXEC));
    show_fd_flags("fd 10", 10);
    SHOW("F_SETFD 0", fcntl(10, F_SETFD, 0));
    show_fd_flags("fd 10", 10);
    SHOW("fcntl bad fd", fcntl(1234, F_GETFL));
    /* a shared file description: writes through a dup land in the same pipe */
    SHOW("write via dup", write(20, "AB", 2));
    SHOW("write via fd 10", write(10, "CD", 2));
    memset(buf, 0, sizeof buf);
    SHOW("read both", read(p[0], buf, sizeof buf));
    printf("got: [%s]\n", buf);
    int lowest = dup(0);
    printf("lowest free fd: %d\n", lowest);
    for (int fd = 3; fd < 40; fd++)
        close(fd);

    /* ioctl on non-terminals */
    struct termios t;
    struct winsize ws;
    int devnull = open("/dev/null", O_RDWR);
    SHOW("TCGETS /dev/null", ioctl(devnull, TCGETS, &t));
    SHOW("TIOCGWINSZ /dev/null", ioctl(devnull, TIOCGWINSZ, &ws));
    SHOW("isatty /dev/null", isatty(devnull));
    SHOW("ioctl bad fd", ioctl(1234, FIONREAD, &avail));

    /* devices */
    SHOW("read /dev/null", read(devnull, buf, sizeof buf));
    SHOW("write /dev/null", write(devnull, "gone", 4));
    close(devnull);
    int zero = open("/dev/zero", O_RDONLY);
    memset(buf, 7, sizeof buf);
    SHOW("read /dev/zero", read(zero, buf, sizeof buf));
    int allzero = 1;
    for (size_t i = 0; i < sizeof buf; i++)
        allzero &= buf[i] == 0;
    YESNO("/dev/zero gives zeros", allzero);
    close(zero);
    int full = open("/dev/full", O_WRONLY);
    SHOW("write /dev/full", write(full, "x", 1));
    close(full);
    int ur = open("/dev/urandom", O_RDONLY);
    SHOW("read /dev/urandom", read(ur, buf, 32));
    close(ur);
    int r = open("/dev/random", O_RDONLY);
    SHOW("read /dev/random", read(r, buf, 16));
    close(r);
    struct stat st;
    SHOW("stat /dev/null", stat("/dev/null", &st));
    YESNO("/dev/null is chr", S_ISCHR(st.st_mode));
    SHOW("open /dev/nonexistent", open("/dev/karn-nonexistent", O_RDONLY));

    /* stdio pass-through: stderr gets a line, stdout keeps order */
    fprintf(stderr, "to stderr\n");
    fflush(stdout);
    SHOW("write fd 1", write(1, "raw write on fd 1\n", 18));
    return 0;
}
