/* pidfds as Linux gives them: pidfd_open, poll and epoll on a pidfd becoming readable
   when its process ends, pidfd_send_signal, waitid(P_PIDFD) (PIDFD_NONBLOCK's EAGAIN,
   a non-child's ECHILD), the errors of a pidfd misused. Prints nothing that depends on
   pid numbering, to compare with a native run. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#define PIDFD_NONBLOCK O_NONBLOCK

static int pidfd_open(pid_t pid, unsigned flags) {
    return (int)syscall(SYS_pidfd_open, pid, flags);
}

static int pidfd_signal(int fd, int sig, siginfo_t *info) {
    return (int)syscall(SYS_pidfd_send_signal, fd, sig, info, 0);
}

static const char *err(long r) { return r < 0 ? strerror(errno) : "ok"; }

static int readable(int fd, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n = poll(&p, 1, timeout_ms);
    return n == 1 && (p.revents & POLLIN);
}

/* A child that waits until the pipe's write end is closed, then exits with code. */
static pid_t waiting_child(int *release, int code) {
    int fds[2];
    if (pipe(fds)) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        char c;
        close(fds[1]);
        while (read(fds[0], &c, 1) > 0) {}
        _exit(code);
    }
    close(fds[0]);
    *release = fds[1];
    return pid;
}

static void report(const char *what, siginfo_t *info, pid_t child) {
    printf("%s: si_pid is child %d, si_code %d, si_status %d\n", what,
           info->si_pid == child, info->si_code, info->si_status);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    int self = pidfd_open(getpid(), 0);
    printf("pidfd_open(self): %s, cloexec %d, readable %d\n", err(self),
           (fcntl(self, F_GETFD) & FD_CLOEXEC) != 0, readable(self, 0));
    char buf[8];
    printf("read: %s\n", err(read(self, buf, sizeof buf)));
    printf("write: %s\n", err(write(self, "x", 1)));
    printf("signal 0 to self: %s\n", err(pidfd_signal(self, 0, NULL)));
    printf("pidfd_open(bad flags): %s\n", err(pidfd_open(getpid(), 1)));
    printf("pidfd_open(0): %s\n", err(pidfd_open(0, 0)));
    printf("pidfd_open(no such pid): %s\n", err(pidfd_open(4000000, 0)));
    printf("pidfd_send_signal(not a pidfd): %s\n", err(pidfd_signal(1, 0, NULL)));
    printf("pidfd_send_signal(flags): %s\n",
           err(syscall(SYS_pidfd_send_signal, self, 0, NULL, 0x40)));

    /* a child killed through its pidfd; poll sees it end; waitid(P_PIDFD) reaps it */
    int release;
    pid_t child = waiting_child(&release, 0);
    int fd = pidfd_open(child, 0);
    printf("pidfd_open(child): %s, readable before %d\n", err(fd), readable(fd, 0));
    printf("SIGTERM through the pidfd: %s\n", err(pidfd_signal(fd, SIGTERM, NULL)));
    printf("readable after its end: %d\n", readable(fd, 60000));
    siginfo_t info = {0};
    printf("waitid(P_PIDFD): %s\n", err(waitid(P_PIDFD, fd, &info, WEXITED)));
    report("killed child", &info, child);
    printf("signal after the reap: %s\n", err(pidfd_signal(fd, SIGTERM, NULL)));
    printf("pidfd_open(reaped): %s\n", err(pidfd_open(child, 0)));
    close(fd);
    close(release);

    /* PIDFD_NONBLOCK: waitid says EAGAIN while the child runs; epoll sees the end */
    child = waiting_child(&release, 5);
    fd = pidfd_open(child, PIDFD_NONBLOCK);
    memset(&info, 0, sizeof info);
    printf("nonblocking waitid while it runs: %s\n",
           err(waitid(P_PIDFD, fd, &info, WEXITED)));
    printf("waitid WNOHANG while it runs: %s\n",
           err(waitid(P_PIDFD, fd, &info, WEXITED | WNOHANG)));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 7}, got = {0};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    printf("epoll before: %d\n", epoll_wait(ep, &got, 1, 0));
    close(release);
    int n = epoll_wait(ep, &got, 1, 60000);
    printf("epoll after: %d, data %u, EPOLLIN %d\n", n, got.data.u32,
           (got.events & EPOLLIN) != 0);
    memset(&info, 0, sizeof info);
    printf("waitid(P_PIDFD): %s\n", err(waitid(P_PIDFD, fd, &info, WEXITED)));
    report("exited child", &info, child);
    close(fd);

    /* a pidfd to a process that is not one's child: waitid says ECHILD */
    int fds[2];
    pipe(fds);
    child = fork();
    if (child == 0) {
        int parent = pidfd_open(getppid(), 0);
        siginfo_t none;
        int r = waitid(P_PIDFD, parent, &none, WEXITED | WNOHANG);
        char line[96];
        int len = snprintf(line, sizeof line, "child: pidfd_open(parent) %s, waitid %s\n",
                           err(parent), err(r));
        write(fds[1], line, len);
        _exit(0);
    }
    close(fds[1]);
    char line[96];
    ssize_t len = read(fds[0], line, sizeof line - 1);
    line[len > 0 ? len : 0] = 0;
    fputs(line, stdout);
    waitpid(child, NULL, 0);
    printf("waitid(P_PIDFD, not a pidfd): %s\n", err(waitid(P_PIDFD, 1, &info, WEXITED)));

    /* /proc/PID opened as a directory is a pidfd for pidfd_send_signal */
    char dir[32];
    snprintf(dir, sizeof dir, "/proc/%d", getpid());
    int me = open(dir, O_RDONLY | O_DIRECTORY);
    printf("pidfd_send_signal(own /proc dir, 0): %s\n", err(pidfd_signal(me, 0, NULL)));
    int release2;
    child = waiting_child(&release2, 0);
    snprintf(dir, sizeof dir, "/proc/%d", child);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
    printf("pidfd_send_signal(child's /proc dir, SIGTERM): %s\n",
           err(pidfd_signal(dirfd, SIGTERM, NULL)));
    int status;
    waitpid(child, &status, 0);
    printf("child killed by signal %d\n", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    printf("pidfd_send_signal(reaped child's /proc dir): %s\n",
           err(pidfd_signal(dirfd, 0, NULL)));
    int root = open("/", O_RDONLY | O_DIRECTORY);
    printf("pidfd_send_signal(a plain directory): %s\n", err(pidfd_signal(root, 0, NULL)));
    close(release2);
    return 0;
}
