/* execve from a program: what it passes on, what the new program finds.
 *
 *   exec_probe show [ARGS...]         print argv, environ and what an exec'd program sees
 *   exec_probe run PATH [ARGS...]     execv(PATH, [PATH, ARGS...]); print errno on failure
 *   exec_probe env PATH ARGV0 [ARGS]  execve with argv [ARGV0, ARGS...] and a fixed envp
 *   exec_probe fds                    cloexec fd 5, plain fd 6, then exec "show"
 *   exec_probe signals                a handler, an ignored, a blocked+pending signal, an
 *                                     alternate stack, a POSIX timer, an alarm; then
 *                                     exec "show"
 *   exec_probe threads                three threads; the third execs "show"
 *   exec_probe fexec                  fexecve (execveat AT_EMPTY_PATH) of itself
 *   exec_probe txtbsy                 exec of a file open for writing (ETXTBSY), then of
 *                                     the same file closed and unlinked, by its fd
 *   exec_probe big                    one argument past MAX_ARG_STRLEN (E2BIG)
 *   exec_probe badptr                 argv pointing nowhere (EFAULT)
 *
 * Prints nothing that differs between runs (no addresses, no pid values). */
#include "karntest.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char *self_path;

static void handler(int sig) { (void)sig; }

static const char *disposition(int sig)
{
    struct sigaction sa;
    if (sigaction(sig, NULL, &sa) != 0)
        return "?";
    if (sa.sa_handler == SIG_DFL)
        return "default";
    if (sa.sa_handler == SIG_IGN)
        return "ignored";
    return "handled";
}

static int show(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (strlen(argv[i]) > 64)
            printf("argv[%d] = <%zu bytes>\n", i, strlen(argv[i]));
        else
            printf("argv[%d] = %s\n", i, argv[i]);
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "EXEC_", 5) == 0)
            printf("env %s\n", *e);
    printf("AT_EXECFN = %s\n", (const char *)getauxval(AT_EXECFN));
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n < 0 ? 0 : n] = 0;
    printf("/proc/self/exe = %s\n", exe);
    char comm[32] = "";
    int fd = open("/proc/self/comm", O_RDONLY);
    if (fd >= 0) {
        n = read(fd, comm, sizeof comm - 1);
        comm[n < 0 ? 0 : n] = 0;
        close(fd);
    }
    printf("comm = %s", comm);
    printf("fd 5 open: %s\n", fcntl(5, F_GETFD) >= 0 ? "yes" : "no");
    printf("fd 6 open: %s\n", fcntl(6, F_GETFD) >= 0 ? "yes" : "no");
    printf("SIGUSR1: %s, SIGUSR2: %s\n", disposition(SIGUSR1), disposition(SIGUSR2));
    sigset_t mask, pending;
    sigprocmask(SIG_BLOCK, NULL, &mask);
    sigpending(&pending);
    YESNO("SIGINT blocked", sigismember(&mask, SIGINT));
    YESNO("SIGINT pending", sigismember(&pending, SIGINT));
    stack_t ss;
    sigaltstack(NULL, &ss);
    YESNO("alt stack disabled", ss.ss_flags & SS_DISABLE);
    struct itimerspec its;
    SHOW("POSIX timer 0 after exec", syscall(SYS_timer_gettime, 0, &its));
    YESNO("alarm kept", alarm(0) > 0);
    YESNO("tid is pid", syscall(SYS_gettid) == getpid());
    YESNO("vdso mapped", getauxval(AT_SYSINFO_EHDR) != 0);
    struct timespec fast, slow;
    clock_gettime(CLOCK_REALTIME, &fast); /* the vDSO's, from its time page */
    syscall(SYS_clock_gettime, CLOCK_REALTIME, &slow);
    YESNO("vdso clock agrees", llabs((long long)slow.tv_sec - fast.tv_sec) <= 1);
    const char *old = getenv("KARN_OLDPID");
    if (old)
        YESNO("pid kept", atol(old) == getpid());
    char line[256];
    FILE *status = fopen("/proc/self/status", "r");
    while (status && fgets(line, sizeof line, status))
        if (strncmp(line, "Threads:", 8) == 0)
            printf("%s", line);
    if (status)
        fclose(status);
    return 0;
}

static void exec_show(char *tag)
{
    char *args[] = {(char *)self_path, "show", tag, NULL};
    execv(self_path, args);
    printf("execv: %s\n", errno_name(errno));
    exit(1);
}

static void *sleeper(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

static void *spinner(void *arg)
{
    volatile unsigned long *n = arg;
    for (;;)
        (*n)++;
    return NULL;
}

static void *execer(void *arg)
{
    (void)arg;
    usleep(20000);
    exec_show("from a thread");
    return NULL;
}

int main(int argc, char **argv)
{
    self_path = argv[0];
    setvbuf(stdout, NULL, _IONBF, 0); /* nothing buffered is lost to the exec */
    if (argc < 2)
        return 2;
    const char *mode = argv[1];
    if (!strncmp(mode, "show", 4)) /* also "show ..." from a `#!` line's argument */
        return show(argc, argv);
    if (!strcmp(mode, "run") && argc >= 3) {
        execv(argv[2], argv + 2);
        printf("execv %s: %s\n", strrchr(argv[2], '/') ? strrchr(argv[2], '/') + 1 : argv[2],
               errno_name(errno));
        return 1;
    }
    if (!strcmp(mode, "env") && argc >= 4) {
        char *envp[] = {"EXEC_ONE=1", "EXEC_TWO=two words", "PATH=/bin", NULL};
        execve(argv[2], argv + 3, envp);
        printf("execve: %s\n", errno_name(errno));
        return 1;
    }
    if (!strcmp(mode, "fds")) {
        MUST(dup3(open("/dev/null", O_RDONLY), 5, O_CLOEXEC) == 5);
        MUST(dup2(open("/dev/null", O_RDONLY), 6) == 6);
        exec_show("fds");
    }
    if (!strcmp(mode, "signals")) {
        struct sigaction sa = {.sa_handler = handler};
        MUST(sigaction(SIGUSR1, &sa, NULL) == 0);
        MUST(signal(SIGUSR2, SIG_IGN) != SIG_ERR);
        sigset_t block;
        sigemptyset(&block);
        sigaddset(&block, SIGINT);
        MUST(sigprocmask(SIG_BLOCK, &block, NULL) == 0);
        MUST(raise(SIGINT) == 0);
        static char altstack[65536];
        stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
        MUST(sigaltstack(&ss, NULL) == 0);
        timer_t timer;
        MUST(timer_create(CLOCK_MONOTONIC, NULL, &timer) == 0);
        MUST(alarm(1000) == 0);
        exec_show("signals");
    }
    if (!strcmp(mode, "threads")) {
        char pid[32];
        snprintf(pid, sizeof pid, "%d", getpid());
        setenv("KARN_OLDPID", pid, 1);
        static unsigned long count;
        pthread_t t;
        MUST(pthread_create(&t, NULL, sleeper, NULL) == 0);
        MUST(pthread_create(&t, NULL, spinner, &count) == 0);
        MUST(pthread_create(&t, NULL, execer, NULL) == 0);
        for (;;)
            pause();
    }
    if (!strcmp(mode, "fexec")) {
        int fd = open(self_path, O_RDONLY);
        MUST(fd >= 0);
        char *args[] = {"fexec-argv0", "show", NULL};
        fexecve(fd, args, environ);
        printf("fexecve: %s\n", errno_name(errno));
        return 1;
    }
    if (!strcmp(mode, "txtbsy")) {
        char path[64];
        snprintf(path, sizeof path, "/tmp/exec-txtbsy-%d", getpid());
        int in = open("/bin/busybox", O_RDONLY);
        int out = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
        MUST(in >= 0 && out >= 0);
        char buf[65536];
        ssize_t n;
        while ((n = read(in, buf, sizeof buf)) > 0)
            MUST(write(out, buf, n) == n);
        char *args[] = {"echo", "exec'd after close", NULL};
        execv(path, args);
        printf("execv while open for writing: %s\n", errno_name(errno));
        close(out);
        int fd = open(path, O_RDONLY);
        MUST(fd >= 0 && unlink(path) == 0);
        fexecve(fd, args, environ); /* an unlinked file, through its fd */
        printf("fexecve: %s\n", errno_name(errno));
        return 1;
    }
    if (!strcmp(mode, "big")) {
        size_t size = 32 * 4096 + 1;
        char *arg = malloc(size);
        MUST(arg != NULL);
        memset(arg, 'x', size - 1);
        arg[size - 1] = 0;
        char *args[] = {(char *)self_path, "show", arg, NULL};
        execv(self_path, args);
        printf("execv with a long argument: %s\n", errno_name(errno));
        arg[size - 2] = 0; /* exactly MAX_ARG_STRLEN with its NUL: allowed */
        execv(self_path, (char *[]){(char *)self_path, "show", "fits", arg, NULL});
        printf("execv: %s\n", errno_name(errno));
        return 1;
    }
    if (!strcmp(mode, "badptr")) {
        SHOW("execve bad argv", syscall(SYS_execve, self_path, (char **)16, environ));
        char *bad[] = {(char *)self_path, (char *)16, NULL};
        SHOW("execve bad string", syscall(SYS_execve, self_path, bad, environ));
        SHOW("execve bad path", syscall(SYS_execve, (char *)16, bad, environ));
        SHOW("execveat bad flags", syscall(SYS_execveat, AT_FDCWD, self_path, bad, environ, 1));
        SHOW("execveat empty path", syscall(SYS_execveat, AT_FDCWD, "", bad, environ, 0));
        return 0;
    }
    return 2;
}
