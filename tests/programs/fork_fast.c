/* Forked processes and the fast syscall transport (tests/test_fast_syscalls.py): a child
 * making calls through sites its parent patched, a child that execs and calls on, and a
 * storm of forks while the parent's threads patch sites. Each mode prints what it saw,
 * compared with a native run. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "getpid_sites.h"

static long wrong_pids(long n)
{
    long bad = 0, pid = getpid();
    for (long i = 0; i < n; i++)
        bad += getpid() != pid;
    return bad;
}

static int wait_child(pid_t pid)
{
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The parent patches getpid's site; the child's calls go through it. */
static int child(long n)
{
    printf("parent: wrong results %ld\n", wrong_pids(100));
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        printf("child: wrong results %ld\n", wrong_pids(n));
        fflush(stdout);
        _exit(0);
    }
    printf("child exited %d\n", wait_child(pid));
    return 0;
}

/* The child replaces its image (the patched sites go with the old one) and calls on. */
static int exec_child(const char *n)
{
    printf("parent: wrong results %ld\n", wrong_pids(100));
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        execl("/proc/self/exe", "fork_fast", "plain", n, (char *)NULL);
        _exit(127);
    }
    printf("exec'd child exited %d\n", wait_child(pid));
    return 0;
}

/* Threads calling the 64 unpatched sites (each patched while others run it) and
 * getpid, until told to stop; wrong results counted. */
static atomic_int stop;
static atomic_long wrong;

static void *caller(void *arg)
{
    long pid = getpid(), bad = 0;
    (void)arg;
    for (unsigned round = 0; !atomic_load(&stop) || round < 4; round++)
        for (unsigned i = 0; i < NSITES; i++)
            bad += sites[i]() != pid || getpid() != pid;
    atomic_fetch_add(&wrong, bad);
    return NULL;
}

static void *child_caller(void *arg)
{
    long bad = 0, pid = getpid();
    for (int round = 0; round < 20; round++)
        for (unsigned i = 0; i < NSITES; i++)
            bad += sites[i]() != pid;
    *(long *)arg = bad;
    return NULL;
}

/* Forks in batches while two threads patch sites and call; each child calls through
 * the inherited sites on two threads. */
static int storm(int children, int batch)
{
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, caller, NULL);
    int failed = 0;
    for (int done = 0; done < children; done += batch) {
        pid_t pids[64];
        for (int i = 0; i < batch; i++) {
            pids[i] = fork();
            if (pids[i] == 0) {
                long theirs = 0;
                pthread_t other;
                pthread_create(&other, NULL, child_caller, &theirs);
                long ours = wrong_pids(2000);
                pthread_join(other, NULL);
                _exit(ours || theirs ? 1 : 0);
            }
        }
        for (int i = 0; i < batch; i++)
            failed += pids[i] < 0 || wait_child(pids[i]) != 0;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    printf("storm: %d children, %d failed, parent wrong results %ld\n", children, failed,
           atomic_load(&wrong));
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "child";
    if (!strcmp(mode, "child"))
        return child(argc > 2 ? atol(argv[2]) : 20000);
    if (!strcmp(mode, "exec"))
        return exec_child(argc > 2 ? argv[2] : "20000");
    if (!strcmp(mode, "plain")) {
        printf("exec'd: wrong results %ld\n", wrong_pids(argc > 2 ? atol(argv[2]) : 20000));
        return 0;
    }
    if (!strcmp(mode, "storm"))
        return storm(argc > 2 ? atoi(argv[2]) : 16, argc > 3 ? atoi(argv[3]) : 4);
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
}
