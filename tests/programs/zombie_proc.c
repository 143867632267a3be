/* /proc/PID/stat of a child: while it runs, its group and session are the parent's;
   ended and not waited for, it is a zombie in /proc: its stat says Z (name and parent
   kept), busybox ps lists it; once reaped its directory is gone.
   argv[1]: busybox, for ps. Prints nothing that depends on pid numbering. */
#include "karntest.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* /proc/PID/stat's state ('-' when the file cannot be read), its name and ppid. */
static char proc_stat(pid_t pid, char *name, size_t len, pid_t *ppid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return '-';
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return '-';
    buf[n] = 0;
    char *open_paren = strchr(buf, '('), *close_paren = strrchr(buf, ')');
    if (!open_paren || !close_paren) return '?';
    snprintf(name, len, "%.*s", (int)(close_paren - open_paren - 1), open_paren + 1);
    char state = close_paren[2];
    *ppid = (pid_t)atoi(close_paren + 4);
    return state;
}

/* Whether `busybox ps -o pid,stat,comm` lists pid with state Z. */
static int ps_shows_zombie(const char *busybox, pid_t pid) {
    int out[2];
    MUST(pipe(out) == 0);
    pid_t ps = fork();
    if (ps == 0) {
        dup2(out[1], 1);
        close(out[0]);
        execl(busybox, "ps", "-o", "pid,stat,comm", (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    char buf[65536];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof buf - 1 && (n = read(out[0], buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)n;
    buf[got] = 0;
    close(out[0]);
    int status;
    waitpid(ps, &status, 0);
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        int lpid;
        char st[16], comm[64];
        if (sscanf(line, "%d %15s %63s", &lpid, st, comm) == 3 && lpid == pid)
            return st[0] == 'Z';
    }
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    MUST(argc == 2);
    int gone[2], hold[2];
    MUST(pipe(gone) == 0 && pipe(hold) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(gone[0]);
        close(hold[1]);
        char c;
        _exit(read(hold[0], &c, 1) == 0 ? 7 : 8);  /* its end closes `gone` */
    }
    close(gone[1]);
    close(hold[0]);
    char name[64] = "";
    pid_t ppid = 0;
    char state = proc_stat(pid, name, sizeof name, &ppid);
    printf("alive: state is not Z: %d\n", state != 'Z' && state != '-');
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0) close(fd);
    long pgrp = -1, session = -1;
    if (n > 0) {
        buf[n] = 0;
        sscanf(strrchr(buf, ')') + 2, "%*c %*d %ld %ld", &pgrp, &session);
    }
    printf("alive: its group and session are the parent's: %d %d\n", pgrp == getpgrp(),
           session == getsid(0));
    close(hold[1]);
    char c;
    MUST(read(gone[0], &c, 1) == 0);
    /* the pipe closes as it ends; it is a zombie a moment later */
    while ((state = proc_stat(pid, name, sizeof name, &ppid)) != 'Z' && state != '-')
        ;
    printf("state before reaping: %c\n", state);
    printf("name kept: %d, parent kept: %d\n", strncmp(name, "zombie_proc", 15) == 0,
           ppid == getpid());
    snprintf(path, sizeof path, "/proc/%d", pid);
    struct stat st;
    YESNO("its /proc directory is there", stat(path, &st) == 0);
    YESNO("busybox ps shows it as Z", ps_shows_zombie(argv[1], pid));
    int status;
    SHOW("waitpid", waitpid(pid, &status, 0) == pid);
    printf("exit status: %d\n", WEXITSTATUS(status));
    YESNO("its /proc directory is gone once reaped", stat(path, &st) != 0 && errno == ENOENT);
    YESNO("busybox ps no longer lists it", !ps_shows_zombie(argv[1], pid));
    return 0;
}
