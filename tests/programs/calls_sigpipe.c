/* Writing to a pipe or FIFO nobody reads: EPIPE and SIGPIPE, as Linux sends it (write,
 * writev, splice): the default action ends the writer, an ignored SIGPIPE leaves EPIPE, a
 * handler runs first and sees SI_USER from its own process. */
#define _GNU_SOURCE
#include "karntest.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t handled, code_user, from_self;

static void on_pipe(int sig, siginfo_t *info, void *ctx)
{
    (void)ctx;
    handled = sig == SIGPIPE;
    code_user = info->si_code == SI_USER;
    from_self = info->si_pid == getpid();
}

static int broken_pipe(void)
{
    int p[2];
    MUST(pipe(p) == 0);
    close(p[0]);
    return p[1];
}

/* a child writes to a broken pipe with SIGPIPE's default action */
static void killed_by_default(const char *how)
{
    fflush(stdout);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        int w = broken_pipe();
        struct iovec iov = {"x", 1};
        if (strcmp(how, "writev") == 0)
            writev(w, &iov, 1);
        else
            write(w, "x", 1);
        _exit(3); /* not reached on Linux */
    }
    int status;
    MUST(waitpid(pid, &status, 0) == pid);
    printf("%s, default action: %s %d\n", how, WIFSIGNALED(status) ? "killed by" : "exited",
           WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
}

/* bit `sig` of the /proc/self/status line `name` */
static int status_bit(const char *name, int sig)
{
    char line[256];
    unsigned long long set = 0;
    FILE *f = fopen("/proc/self/status", "r");
    MUST(f != NULL);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, strlen(name)) == 0 && line[strlen(name)] == ':')
            set = strtoull(line + strlen(name) + 1, NULL, 16);
    fclose(f);
    return (int)(set >> (sig - 1) & 1);
}

int main(void)
{
    killed_by_default("write");
    killed_by_default("writev");

    signal(SIGPIPE, SIG_IGN);
    int w = broken_pipe();
    SHOW("write, SIGPIPE ignored", write(w, "x", 1));
    close(w);

    struct sigaction sa = {0};
    sa.sa_sigaction = on_pipe;
    sa.sa_flags = SA_SIGINFO;
    MUST(sigaction(SIGPIPE, &sa, NULL) == 0);
    w = broken_pipe();
    SHOW("write, SIGPIPE handled", write(w, "x", 1));
    printf("handler ran %d, SI_USER %d, from this process %d\n", handled, code_user, from_self);
    handled = 0;
    int p[2];
    MUST(pipe(p) == 0);
    MUST(write(p[1], "abc", 3) == 3);
    SHOW("splice into it, handled", splice(p[0], NULL, w, NULL, 3, 0));
    printf("handler ran %d\n", handled);
    close(w);

    handled = 0;
    char fifo[64];
    snprintf(fifo, sizeof fifo, "/tmp/sigpipe-fifo.%d", (int)getpid());
    MUST(mkfifo(fifo, 0600) == 0);
    int r = open(fifo, O_RDONLY | O_NONBLOCK);
    w = open(fifo, O_WRONLY);
    MUST(r >= 0 && w >= 0);
    close(r);
    SHOW("write to a FIFO nobody reads, handled", write(w, "x", 1));
    printf("handler ran %d\n", handled);
    unlink(fifo);

    /* what /proc/self/status says of the dispositions and the mask */
    signal(SIGUSR2, SIG_IGN);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    MUST(sigprocmask(SIG_BLOCK, &block, NULL) == 0);
    raise(SIGUSR1);
    printf("status: SIGPIPE caught %d ignored %d, SIGUSR2 ignored %d caught %d, "
           "SIGUSR1 blocked %d pending %d, SIGTERM caught %d\n",
           status_bit("SigCgt", SIGPIPE), status_bit("SigIgn", SIGPIPE),
           status_bit("SigIgn", SIGUSR2), status_bit("SigCgt", SIGUSR2),
           status_bit("SigBlk", SIGUSR1), status_bit("SigPnd", SIGUSR1) | status_bit("ShdPnd", SIGUSR1),
           status_bit("SigCgt", SIGTERM));
    return 0;
}
