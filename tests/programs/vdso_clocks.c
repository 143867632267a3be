/* vdso_clocks: the clocks a program reads through libc (the vDSO, when there is one),
 * checked against the kernel's own answers. Prints "key value" lines.
 *
 *   vdso_clocks loop N      N rounds of every clock libc may serve from the vDSO
 *                           (clock_gettime, gettimeofday, time) and nothing else per
 *                           round: the --trace-summary test counts its system calls
 *   vdso_clocks compare     each clock read by libc just before and after a real system
 *                           call (syscall(2)): how far the kernel's value lies outside
 *                           the two libc reads, in ns (a coarse clock's, less how far
 *                           the kernel's own lagged its precise clock at that moment);
 *                           resolutions from both; CPU clocks
 *   vdso_clocks compare-forked   the same in a grandchild (a fork of a fork): a forked
 *                           process's time page
 *   vdso_clocks compare-exec     the same after an execve of this program: the new
 *                           program's time page
 *   vdso_clocks watch SECS  MONOTONIC and REALTIME read in a loop for SECS seconds,
 *                           compared with the kernel's every 1000 reads
 *   vdso_clocks maps        AT_SYSINFO_EHDR and the [vvar]/[vdso] lines of /proc/self/maps
 *   vdso_clocks cpuloop N   N reads of CLOCK_PROCESS_CPUTIME_ID through libc: the vDSO's
 *                           fallback to the real call (the time page has no CPU time)
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLOCK_TAI
#define CLOCK_TAI 11
#endif

struct clock_info {
    const char *name;
    clockid_t id;
    int monotonic;
    clockid_t precise; /* a coarse clock's precise counterpart, else -1 */
};

static const struct clock_info CLOCKS[] = {
    {"REALTIME", CLOCK_REALTIME, 0, -1},
    {"MONOTONIC", CLOCK_MONOTONIC, 1, -1},
    {"MONOTONIC_RAW", CLOCK_MONOTONIC_RAW, 1, -1},
    {"REALTIME_COARSE", CLOCK_REALTIME_COARSE, 0, CLOCK_REALTIME},
    {"MONOTONIC_COARSE", CLOCK_MONOTONIC_COARSE, 1, CLOCK_MONOTONIC},
    {"BOOTTIME", CLOCK_BOOTTIME, 1, -1},
    {"TAI", CLOCK_TAI, 0, -1},
};
#define NCLOCKS (sizeof CLOCKS / sizeof CLOCKS[0])

static long long ns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }

static long long libc_now(clockid_t id)
{
    struct timespec t;
    if (clock_gettime(id, &t) != 0) {
        perror("clock_gettime");
        exit(2);
    }
    return ns(t);
}

static long long kernel_now(clockid_t id)
{
    struct timespec t;
    if (syscall(SYS_clock_gettime, id, &t) != 0) {
        perror("syscall clock_gettime");
        exit(2);
    }
    return ns(t);
}

/* How far the kernel's reading lies outside [before, after] of libc's; 0 inside. */
static long long outside(long long before, long long kernel, long long after)
{
    if (kernel < before)
        return before - kernel;
    if (kernel > after)
        return kernel - after;
    return 0;
}

static int loop(long rounds)
{
    long long last[NCLOCKS] = {0};
    long backwards = 0;
    long long first = libc_now(CLOCK_REALTIME);
    for (long r = 0; r < rounds; r++) {
        for (size_t c = 0; c < NCLOCKS; c++) {
            long long v = libc_now(CLOCKS[c].id);
            if (CLOCKS[c].monotonic && v < last[c])
                backwards++;
            last[c] = v;
        }
        struct timeval tv;
        gettimeofday(&tv, NULL);
        time(NULL);
    }
    printf("vdso %s\n", getauxval(AT_SYSINFO_EHDR) ? "yes" : "no");
    printf("first_realtime %lld\n", first);
    printf("last_realtime %lld\n", libc_now(CLOCK_REALTIME));
    printf("backwards %ld\n", backwards);
    return 0;
}

static int cpuloop(long reads)
{
    long long last = 0, backwards = 0;
    for (long r = 0; r < reads; r++) {
        long long v = libc_now(CLOCK_PROCESS_CPUTIME_ID);
        backwards += v < last;
        last = v;
    }
    printf("cpu_backwards %lld\ncpu_time %s\n", backwards, last > 0 ? "some" : "none");
    return 0;
}

static int compare(void)
{
    for (size_t c = 0; c < NCLOCKS; c++) {
        long long worst = 0;
        for (int i = 0; i < 50; i++) {
            long long before = libc_now(CLOCKS[c].id);
            long long kernel = kernel_now(CLOCKS[c].id);
            /* how far the host's own coarse clock lags its precise one now: its last tick
               may come late on a loaded host (10 ms seen), and that is not the vDSO's */
            long long lag = CLOCKS[c].precise >= 0 ? kernel_now(CLOCKS[c].precise) - kernel : 0;
            long long after = libc_now(CLOCKS[c].id);
            long long off = outside(before, kernel, after);
            if (lag > 0 && kernel < before)
                off = off > lag ? off - lag : 0;
            if (off > worst)
                worst = off;
        }
        struct timespec lib_res, sys_res;
        clock_getres(CLOCKS[c].id, &lib_res);
        syscall(SYS_clock_getres, CLOCKS[c].id, &sys_res);
        printf("clock %s outside_ns %lld res %lld kernel_res %lld\n", CLOCKS[c].name, worst,
               ns(lib_res), ns(sys_res));
    }
    long long worst = 0;
    for (int i = 0; i < 50; i++) {
        struct timeval a, k, b;
        gettimeofday(&a, NULL);
        syscall(SYS_gettimeofday, &k, NULL);
        gettimeofday(&b, NULL);
        long long off = outside(a.tv_sec * 1000000LL + a.tv_usec, k.tv_sec * 1000000LL + k.tv_usec,
                                b.tv_sec * 1000000LL + b.tv_usec);
        if (off > worst)
            worst = off;
    }
    printf("gettimeofday outside_us %lld\n", worst);
    worst = 0;
    for (int i = 0; i < 50; i++) {
        long long a = time(NULL), k = syscall(SYS_time, NULL), b = time(NULL);
        long long off = outside(a, k, b);
        if (off > worst)
            worst = off;
    }
    printf("time outside_s %lld\n", worst);
    /* Clocks the vDSO does not serve: libc must still answer (through the system call). */
    struct timespec t;
    /* the call first: C leaves the order of a call's arguments open, and ns(t) evaluated
       before clock_gettime read whatever the stack held (0 in a forked grandchild) */
    int r = clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    printf("process_cputime %d %d\n", r, ns(t) > 0);
    r = clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    printf("thread_cputime %d %d\n", r, ns(t) > 0);
    printf("bad_clock %d\n", clock_gettime((clockid_t)12345, &t) == -1);
    printf("sched_getcpu %d\n", sched_getcpu());
    printf("vdso %s\n", getauxval(AT_SYSINFO_EHDR) ? "yes" : "no");
    return 0;
}

static int watch(int seconds)
{
    long long end = libc_now(CLOCK_MONOTONIC) + seconds * 1000000000LL;
    long long last_mono = 0, worst = 0;
    long backwards = 0, reads = 0;
    for (;;) {
        long long mono = libc_now(CLOCK_MONOTONIC);
        if (mono < last_mono)
            backwards++;
        last_mono = mono;
        if (++reads % 1000 == 0) {
            for (clockid_t id = CLOCK_REALTIME; id <= CLOCK_MONOTONIC; id++) {
                long long before = libc_now(id), kernel = kernel_now(id), after = libc_now(id);
                long long off = outside(before, kernel, after);
                if (off > worst)
                    worst = off;
            }
            if (mono > end)
                break;
        }
    }
    printf("reads %ld\nbackwards %ld\nworst_outside_ns %lld\n", reads, backwards, worst);
    return 0;
}

static int maps(void)
{
    printf("sysinfo_ehdr %lx\n", getauxval(AT_SYSINFO_EHDR));
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) {
        perror("/proc/self/maps");
        return 2;
    }
    char line[512];
    while (fgets(line, sizeof line, f))
        if (strstr(line, "[vvar]") || strstr(line, "[vdso]"))
            fputs(line, stdout);
    fclose(f);
    return 0;
}

/* compare() in a child of a child; the exit status is the grandchild's */
static int compare_forked(int depth)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        int rc = depth > 1 ? compare_forked(depth - 1) : compare();
        fflush(stdout); /* _exit does not */
        _exit(rc);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
        return 2;
    return WEXITSTATUS(status);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "loop") == 0)
        return loop(atol(argv[2]));
    if (argc == 2 && strcmp(argv[1], "compare") == 0)
        return compare();
    if (argc == 2 && strcmp(argv[1], "compare-forked") == 0)
        return compare_forked(2);
    if (argc == 2 && strcmp(argv[1], "compare-exec") == 0) {
        execl("/proc/self/exe", argv[0], "compare", (char *)NULL);
        perror("execl");
        return 2;
    }
    if (argc == 3 && strcmp(argv[1], "watch") == 0)
        return watch(atoi(argv[2]));
    if (argc == 3 && strcmp(argv[1], "cpuloop") == 0)
        return cpuloop(atol(argv[2]));
    if (argc == 2 && strcmp(argv[1], "maps") == 0)
        return maps();
    fprintf(stderr, "usage: vdso_clocks loop N | compare | compare-forked | compare-exec "
                    "| watch SECONDS | maps\n");
    return 2;
}
