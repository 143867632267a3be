/* fork, vfork and wait as Linux reports them: exit codes, deaths by signal, pipes
   between parent and child, zombies, SIGCHLD's siginfo, WNOHANG, process groups, kill.
   Prints only what does not depend on pid numbering, to compare with a native run. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static volatile sig_atomic_t chld_pid, chld_status, chld_code, chld_count;

static void on_chld(int sig, siginfo_t *info, void *ctx) {
    (void)sig; (void)ctx;
    chld_pid = info->si_pid;
    chld_status = info->si_status;
    chld_code = info->si_code;
    chld_count++;
}

static void report(const char *what, int status) {
    if (WIFEXITED(status))
        printf("%s: exited %d\n", what, WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        printf("%s: killed by signal %d\n", what, WTERMSIG(status));
    else
        printf("%s: status %#x\n", what, status);
}

static pid_t spawn_exit(int code) {
    pid_t pid = fork();
    if (pid == 0) _exit(code);
    return pid;
}

static void exit_codes(void) {
    int codes[] = {0, 3, 255};
    for (unsigned i = 0; i < 3; i++) {
        int status;
        pid_t pid = spawn_exit(codes[i]);
        pid_t got = waitpid(pid, &status, 0);
        printf("waitpid returns the child: %d\n", got == pid);
        report("exit code", status);
    }
}

static void crash(void) {
    pid_t pid = fork();
    if (pid == 0) {
        volatile int *null = NULL;
        *null = 1;
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    report("crashing child", status);
}

static void killed(void) {
    int ready[2];
    pipe(ready);
    pid_t pid = fork();
    if (pid == 0) {
        close(ready[0]);
        write(ready[1], "r", 1);
        for (;;) pause();
    }
    close(ready[1]);
    char c;
    read(ready[0], &c, 1);
    close(ready[0]);
    printf("kill: %d\n", kill(pid, SIGTERM));
    int status;
    waitpid(pid, &status, 0);
    report("killed child", status);
}

static void pipe_both_ways(void) {
    int down[2], up[2];
    pipe(down);
    pipe(up);
    pid_t pid = fork();
    if (pid == 0) {
        close(down[1]);
        close(up[0]);
        char buf[64];
        ssize_t n = read(down[0], buf, sizeof buf);
        for (ssize_t i = 0; i < n; i++) buf[i] = buf[i] >= 'a' && buf[i] <= 'z' ? buf[i] - 32 : buf[i];
        write(up[1], buf, n);
        _exit(getppid() == (pid_t)atoi(getenv("PARENT")) ? 0 : 1);
    }
    close(down[0]);
    close(up[1]);
    write(down[1], "through the pipe", 16);
    close(down[1]);
    char buf[64] = {0};
    ssize_t n = read(up[0], buf, sizeof buf - 1);
    printf("child answered: %.*s\n", (int)n, buf);
    int status;
    waitpid(pid, &status, 0);
    report("child saw its parent's pid", status);
}

static void nohang_and_zombie(void) {
    int go[2];
    pipe(go);
    pid_t pid = fork();
    if (pid == 0) {
        char c;
        close(go[1]);
        read(go[0], &c, 1);
        _exit(9);
    }
    close(go[0]);
    int status;
    printf("WNOHANG while it runs: %d\n", waitpid(pid, &status, WNOHANG));
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, &old);
    chld_count = 0;
    write(go[1], "x", 1);
    close(go[1]);
    siginfo_t info;
    sigwaitinfo(&set, &info);
    printf("SIGCHLD: from the child %d, code %d, status %d\n", info.si_pid == pid,
           info.si_code, info.si_status);
    sigprocmask(SIG_SETMASK, &old, NULL);
    siginfo_t peek = {0};
    waitid(P_PID, pid, &peek, WEXITED | WNOWAIT);
    printf("zombie seen by WNOWAIT: %d status %d\n", peek.si_pid == pid, peek.si_status);
    pid_t got = waitpid(pid, &status, WNOHANG);
    printf("reaped: %d\n", got == pid);
    report("zombie", status);
    int again = waitpid(pid, &status, 0);
    printf("again: %d %s\n", again, strerror(errno));
}

static void sigchld_handler(void) {
    struct sigaction sa = {0};
    sa.sa_sigaction = on_chld;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    chld_count = 0;
    pid_t pid = spawn_exit(42);
    int status;
    waitpid(pid, &status, 0);
    while (!chld_count) usleep(1000);
    printf("handler: from the child %d, code %d, status %d\n", chld_pid == pid, chld_code,
           chld_status);
    signal(SIGCHLD, SIG_DFL);
}

static void any_child(void) {
    pid_t a = spawn_exit(1), b = spawn_exit(2);
    int sum = 0, found = 0, status;
    pid_t got;
    while ((got = waitpid(-1, &status, 0)) > 0) {
        found += got == a || got == b;
        sum += WEXITSTATUS(status);
    }
    printf("waitpid(-1): %d children, codes sum %d, then %s\n", found, sum, strerror(errno));
}

static void groups(void) {
    int ready[2];
    pipe(ready);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        close(ready[0]);
        write(ready[1], "r", 1);
        for (;;) pause();
    }
    close(ready[1]);
    char c;
    read(ready[0], &c, 1);
    printf("child leads its group: %d, parent not in it: %d\n", getpgid(pid) == pid,
           getpgrp() != pid);
    printf("kill(-pgid): %d\n", kill(-pid, SIGUSR1));
    int status;
    waitpid(pid, &status, 0);
    report("group member", status);
    int gone = kill(pid, 0);
    printf("kill gone pid: %d %s\n", gone, strerror(errno));
}

static void sessions(void) {
    pid_t pid = fork();
    if (pid == 0) {
        int ok = setsid() == getpid() && getsid(0) == getpid() && getpgrp() == getpid();
        int leader_stays = setpgid(0, getppid()) == -1 && errno == EPERM;
        _exit(ok + 2 * leader_stays);
    }
    int status;
    waitpid(pid, &status, 0);
    report("setsid in a child (3: new session, leader stays)", status);
    printf("child's session is not ours: %d\n", getsid(0) != pid);
}

static void with_vfork(void) {
    int status;
    pid_t pid = vfork();
    if (pid == 0) _exit(5);
    waitpid(pid, &status, 0);
    report("vfork child", status);
}

static void spawned(const char *self) {
    pid_t pid;
    char *argv[] = {(char *)self, "child", NULL};
    int err = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, environ);
    int status = 0;
    waitpid(pid, &status, 0);
    printf("posix_spawn: %d\n", err);
    report("spawned program", status);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "child") == 0) {
        printf("spawned child runs\n");
        return 17;
    }
    setvbuf(stdout, NULL, _IONBF, 0);
    char parent[16];
    snprintf(parent, sizeof parent, "%d", getpid());
    setenv("PARENT", parent, 1);
    exit_codes();
    crash();
    killed();
    pipe_both_ways();
    nohang_and_zombie();
    sigchld_handler();
    any_child();
    groups();
    sessions();
    with_vfork();
    spawned(argv[0]);
    int left = wait(NULL);
    printf("no children left: %d %s\n", left, strerror(errno));
    return 0;
}
