/* bench/fork.py's guest: fork+exit+wait N times (prints µs of the first, then µs per
   operation of the N-1 after it: a run's first fork also sets up what every later one
   shares, under karn the process table and /tmp on the host); `exec N`:
   fork+execve(this program, "exit")+wait N times, printed alike; `spawn N`: posix_spawn (glibc: clone
   with CLONE_VM|CLONE_VFORK) of this program with "exit", then wait, N times (prints µs
   per posix_spawn call, the parent's suspension, then µs per spawn+wait); `cow MIB`:
   touch MIB MiB, fork a child that waits on stdin, print "ready". */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "exit") == 0)
        return 0;
    if (argc > 2 && strcmp(argv[1], "cow") == 0) {
        size_t size = (size_t)atoi(argv[2]) << 20;
        char *heap = malloc(size);
        memset(heap, 1, size);
        int go[2];
        pipe(go);
        pid_t pid = fork();
        if (pid == 0) {
            char c;
            close(go[1]);
            read(go[0], &c, 1);  /* the parent's stdin decides when we end */
            _exit(heap[size - 1] == 1 ? 0 : 1);
        }
        close(go[0]);
        printf("ready\n");
        fflush(stdout);
        char line[8];
        fgets(line, sizeof line, stdin);
        write(go[1], "x", 1);
        int status;
        waitpid(pid, &status, 0);
        return WEXITSTATUS(status);
    }
    int n = atoi(argv[argc - 1]);
    if (argc > 2 && strcmp(argv[1], "spawn") == 0) {
        char *args[] = {argv[0], "exit", NULL};
        char *env[] = {NULL};
        double in_spawn = 0, start = now();
        for (int i = 0; i < n; i++) {
            pid_t pid;
            double before = now();
            if (posix_spawn(&pid, "/proc/self/exe", NULL, NULL, args, env) != 0)
                return 1;
            in_spawn += now() - before;
            int status;
            waitpid(pid, &status, 0);
        }
        printf("%.1f %.1f\n", in_spawn / n * 1e6, (now() - start) / n * 1e6);
        return 0;
    }
    int exec = argc > 2 && strcmp(argv[1], "exec") == 0;
    double start = now(), first = 0;
    for (int i = 0; i < n; i++) {
        if (i == 1) {
            first = now() - start;
            start = now();
        }
        pid_t pid = fork();
        if (pid == 0) {
            if (exec) {
                char *args[] = {argv[0], "exit", NULL};
                execv("/proc/self/exe", args);
            }
            _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
    }
    printf("%.1f %.1f\n", first * 1e6, n > 1 ? (now() - start) / (n - 1) * 1e6 : 0.0);
    return 0;
}
