/* Job-control stops as a parent sees them: a child that stops itself or is stopped by
   SIGSTOP/SIGTSTP/SIGTTIN, waitpid with WUNTRACED and WCONTINUED, waitid with WSTOPPED,
   WCONTINUED and WNOWAIT, SIGCHLD's CLD_STOPPED/CLD_CONTINUED (none with SA_NOCLDSTOP),
   /proc/PID/stat's state, every thread of a stopped child stopped, SIGKILL of a stopped
   child, SIGTSTP discarded in an orphaned group, SIGHUP and SIGCONT to a stopped group
   its parent's end orphans. Prints nothing that depends on pid numbering, to compare
   with a native run. */
#include "karntest.h"
#include <poll.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void on_chld(int sig) { (void)sig; }

static void report(const char *what, int status) {
    if (WIFEXITED(status))
        printf("%s: exited %d\n", what, WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        printf("%s: killed by signal %d\n", what, WTERMSIG(status));
    else if (WIFSTOPPED(status))
        printf("%s: stopped by signal %d\n", what, WSTOPSIG(status));
    else if (WIFCONTINUED(status))
        printf("%s: continued\n", what);
    else
        printf("%s: status %#x\n", what, status);
}

/* The next SIGCHLD (blocked, so it queues): its si_code and si_status, or none. */
static void next_sigchld(const char *what, pid_t child, int wait_ms) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    struct timespec ts = {wait_ms / 1000, (wait_ms % 1000) * 1000000L};
    siginfo_t info;
    if (sigtimedwait(&set, &info, &ts) < 0) {
        printf("%s: no SIGCHLD (%s)\n", what, errno_name(errno));
        return;
    }
    const char *code = info.si_code == CLD_EXITED ? "CLD_EXITED"
                       : info.si_code == CLD_KILLED ? "CLD_KILLED"
                       : info.si_code == CLD_STOPPED ? "CLD_STOPPED"
                       : info.si_code == CLD_CONTINUED ? "CLD_CONTINUED" : "other";
    /* A CLD_STOPPED notice made after the parent's wait took the stop says status 0 on
       Linux (the wait cleared the stop code first), as seen natively on a busy host: its
       status is printed as "a stop signal" either way (the waits print which). */
    char status[32];
    int s = info.si_status;
    if (info.si_code == CLD_STOPPED &&
        (s == 0 || s == SIGSTOP || s == SIGTSTP || s == SIGTTIN || s == SIGTTOU))
        snprintf(status, sizeof status, "a stop signal");
    else
        snprintf(status, sizeof status, "%d", s);
    printf("%s: SIGCHLD %s status %s from the child: %d\n", what, code, status,
           info.si_pid == child);
}

static char proc_state(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return '?';
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *end = strrchr(buf, ')');
    return end && end[1] == ' ' ? end[2] : '?';
}

/* /proc/PID/stat's process group (its fifth field). */
static long proc_pgrp(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *end = strrchr(buf, ')');
    long ppid, pgrp;
    char state;
    if (!end || sscanf(end + 2, "%c %ld %ld", &state, &ppid, &pgrp) != 3) return -1;
    return pgrp;
}

static void stops_itself(void) {
    int go[2];
    MUST(pipe(go) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        close(go[1]);
        raise(SIGSTOP);
        char c;
        _exit(read(go[0], &c, 1) == 0 ? 5 : 6);  /* continued: ends when told */
    }
    close(go[0]);
    int status;
    MUST(waitpid(pid, &status, WUNTRACED) == pid);
    report("waitpid WUNTRACED", status);
    next_sigchld("stop", pid, 10000);
    printf("/proc state while stopped: %c\n", proc_state(pid));
    printf("/proc shows its own process group: %d\n", proc_pgrp(pid) == pid);
    SHOW("waitpid WUNTRACED|WNOHANG again (reported once)", waitpid(pid, &status, WUNTRACED | WNOHANG));
    SHOW("kill SIGCONT", kill(pid, SIGCONT));
    MUST(waitpid(pid, &status, WCONTINUED) == pid);
    report("waitpid WCONTINUED", status);
    next_sigchld("continue", pid, 10000);
    close(go[1]);
    MUST(waitpid(pid, &status, 0) == pid);
    report("waitpid", status);
    next_sigchld("exit", pid, 10000);
}

static void stopped_by_others(void) {
    int ready[2];
    MUST(pipe(ready) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        close(ready[0]);
        MUST(write(ready[1], "r", 1) == 1);
        for (;;) pause();
    }
    close(ready[1]);
    char c;
    MUST(read(ready[0], &c, 1) == 1);
    int sigs[] = {SIGTSTP, SIGTTIN, SIGSTOP};
    for (unsigned i = 0; i < 3; i++) {
        SHOW("kill stop signal", kill(pid, sigs[i]));
        siginfo_t info;
        memset(&info, 0, sizeof info);
        MUST(waitid(P_PID, pid, &info, WSTOPPED | WNOWAIT) == 0);
        printf("waitid WSTOPPED|WNOWAIT: code stopped %d status %d\n",
               info.si_code == CLD_STOPPED, info.si_status);
        memset(&info, 0, sizeof info);
        MUST(waitid(P_PID, pid, &info, WSTOPPED) == 0);
        printf("waitid WSTOPPED: code stopped %d status %d\n", info.si_code == CLD_STOPPED,
               info.si_status);
        memset(&info, 0, sizeof info);
        SHOW("waitid WSTOPPED|WNOHANG after", waitid(P_PID, pid, &info, WSTOPPED | WNOHANG));
        printf("  si_pid set: %d\n", info.si_pid != 0);
        next_sigchld("stop", pid, 10000);
        printf("/proc state: %c\n", proc_state(pid));
        SHOW("kill SIGCONT", kill(pid, SIGCONT));
        memset(&info, 0, sizeof info);
        MUST(waitid(P_PID, pid, &info, WCONTINUED) == 0);
        printf("waitid WCONTINUED: code continued %d status %d\n",
               info.si_code == CLD_CONTINUED, info.si_status);
        next_sigchld("continue", pid, 10000);
    }
    /* a stopped child ends by SIGKILL; a SIGTERM sent while stopped waits for SIGCONT */
    int status;
    SHOW("kill SIGSTOP", kill(pid, SIGSTOP));
    MUST(waitpid(pid, &status, WUNTRACED) == pid);
    report("waitpid WUNTRACED", status);
    next_sigchld("stop", pid, 10000);
    SHOW("kill SIGTERM while stopped", kill(pid, SIGTERM));
    SHOW("waitpid WNOHANG (still stopped)", waitpid(pid, &status, WNOHANG));
    SHOW("kill SIGKILL", kill(pid, SIGKILL));
    MUST(waitpid(pid, &status, 0) == pid);
    report("waitpid", status);
    next_sigchld("kill", pid, 10000);
    close(ready[0]);
}

static int tick_fd;

static void *ticker(void *arg) {
    (void)arg;
    struct timespec ms = {0, 1000000};
    for (;;) {
        if (write(tick_fd, "t", 1) != 1) return NULL;
        nanosleep(&ms, NULL);
    }
}

/* Bytes that arrive on fd within ms milliseconds (stopping at the first if `first`). */
static int arrivals(int fd, int ms, int first) {
    int n = 0;
    char buf[4096];
    struct pollfd p = {fd, POLLIN, 0};
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = ms - ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000);
        if (left <= 0 || poll(&p, 1, (int)left) <= 0) return n;
        ssize_t got = read(fd, buf, sizeof buf);
        if (got <= 0) return n;
        n += (int)got;
        if (first) return n;
    }
}

static void threads_stop_too(void) {
    int ticks[2];
    MUST(pipe(ticks) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        close(ticks[0]);
        tick_fd = ticks[1];
        pthread_t t;
        MUST(pthread_create(&t, NULL, ticker, NULL) == 0);
        for (;;) pause();
    }
    close(ticks[1]);
    char c;
    MUST(read(ticks[0], &c, 1) == 1);  /* the thread runs */
    int status;
    SHOW("kill SIGSTOP", kill(pid, SIGSTOP));
    MUST(waitpid(pid, &status, WUNTRACED) == pid);
    report("threaded child", status);
    next_sigchld("stop", pid, 10000);
    arrivals(ticks[0], 100, 0);  /* what was written before the thread stopped */
    YESNO("the other thread is stopped too", arrivals(ticks[0], 300, 0) == 0);
    SHOW("kill SIGCONT", kill(pid, SIGCONT));
    YESNO("it runs again after SIGCONT", arrivals(ticks[0], 10000, 1) > 0);
    MUST(waitpid(pid, &status, WCONTINUED) == pid);
    report("threaded child", status);
    next_sigchld("continue", pid, 10000);
    kill(pid, SIGKILL);
    MUST(waitpid(pid, &status, 0) == pid);
    report("threaded child", status);
    next_sigchld("kill", pid, 10000);
    close(ticks[0]);
}

/* setsid: the child's group is orphaned (its parent is in another session), so SIGTSTP
   is discarded there; SIGSTOP still stops it. */
static void orphaned_group(void) {
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        raise(SIGTSTP);
        raise(SIGSTOP);
        _exit(3);
    }
    int status;
    MUST(waitpid(pid, &status, WUNTRACED) == pid);
    report("orphaned group: SIGTSTP discarded, then SIGSTOP", status);
    next_sigchld("orphaned stop", pid, 10000);
    kill(pid, SIGCONT);
    MUST(waitpid(pid, &status, 0) == pid);
    report("orphaned group", status);
    next_sigchld("orphaned continue", pid, 10000);  /* the exit's SIGCHLD merges with it */
}

static int hup_pipe;
static void note_hup(int sig) { (void)sig; if (write(hup_pipe, "H", 1)) {} }
static void note_cont(int sig) { (void)sig; if (write(hup_pipe, "C", 1)) {} }

/* A stopped process whose group is orphaned by its parent's end (its new parent, this
   subreaper, is in another session) gets SIGHUP then SIGCONT. */
static void orphaned_by_exit(void) {
    int notes[2];
    MUST(pipe(notes) == 0);
    pid_t middle = fork();
    if (middle == 0) {
        setsid();
        pid_t grandchild = fork();
        if (grandchild == 0) {
            setpgid(0, 0);
            hup_pipe = notes[1];
            signal(SIGHUP, note_hup);
            signal(SIGCONT, note_cont);
            raise(SIGSTOP);
            _exit(0);
        }
        int status;
        MUST(waitpid(grandchild, &status, WUNTRACED) == grandchild);
        _exit(WIFSTOPPED(status) ? 0 : 1);  /* its end orphans the stopped group */
    }
    close(notes[1]);
    int status;
    MUST(waitpid(middle, &status, 0) == middle);
    report("orphaning parent", status);
    next_sigchld("orphaning parent", middle, 10000);
    char got[8] = "";
    ssize_t n = 0, r;
    while ((r = read(notes[0], got + n, sizeof got - 1 - (size_t)n)) > 0) n += r;
    printf("the stopped grandchild got (H: SIGHUP, C: SIGCONT): %s\n", got);
    pid_t reaped = wait(&status);
    report("the grandchild, reaped here", status);
    printf("reaped one: %d\n", reaped > 0);
    /* its SIGCHLDs (continued, exited) merge or not as the timing falls: drop them */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    struct timespec none = {0, 0};
    while (sigtimedwait(&set, NULL, &none) > 0) {}
    close(notes[0]);
}

static void no_cldstop(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_NOCLDSTOP;
    MUST(sigaction(SIGCHLD, &sa, NULL) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        raise(SIGSTOP);
        _exit(0);
    }
    int status;
    MUST(waitpid(pid, &status, WUNTRACED) == pid);
    report("SA_NOCLDSTOP: waitpid WUNTRACED", status);
    next_sigchld("SA_NOCLDSTOP stop", pid, 200);
    kill(pid, SIGCONT);
    MUST(waitpid(pid, &status, 0) == pid);
    report("SA_NOCLDSTOP: waitpid", status);
    next_sigchld("SA_NOCLDSTOP exit", pid, 10000);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    /* A session of its own, each child in a group of its own: the children's groups are
       not orphaned, so SIGTSTP and SIGTTIN stop them (natively, whoever started this). */
    setsid();
    prctl(PR_SET_CHILD_SUBREAPER, 1);  /* orphans come here natively, as to pid 1 */
    stops_itself();
    stopped_by_others();
    threads_stop_too();
    orphaned_group();
    orphaned_by_exit();
    no_cldstop();
    return 0;
}
