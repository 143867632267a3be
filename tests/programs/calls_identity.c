/* Process attributes programs set up at start: prctl options, nice values (per thread),
 * sched_rr_get_interval, real/effective/saved ids, RLIMIT_NOFILE raised to its hard limit. */
#include "karntest.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

static void ids(const char *label)
{
    uid_t r, e, s;
    gid_t rg, eg, sg;
    MUST(getresuid(&r, &e, &s) == 0 && getresgid(&rg, &eg, &sg) == 0);
    printf("%s: uid %u %u %u gid %u %u %u\n", label, r, e, s, rg, eg, sg);
}

static void status_ids(void)
{
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    MUST(f != NULL);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Uid:", 4) == 0 || strncmp(line, "Gid:", 4) == 0)
            printf("status %s", line);
    fclose(f);
}

static void *thread_nice(void *arg)
{
    (void)arg;
    errno = 0;
    int inherited = getpriority(PRIO_PROCESS, 0);
    printf("thread inherits nice %d (errno %s)\n", inherited, errno_name(errno));
    SHOW("thread setpriority 7", setpriority(PRIO_PROCESS, 0, 7));
    printf("thread nice now %d\n", getpriority(PRIO_PROCESS, 0));
    return NULL;
}

int main(void)
{
    int v;
    char name[16];

    /* prctl */
    SHOW("PR_GET_DUMPABLE", prctl(PR_GET_DUMPABLE));
    SHOW("PR_SET_KEEPCAPS 1", prctl(PR_SET_KEEPCAPS, 1));
    SHOW("PR_GET_KEEPCAPS", prctl(PR_GET_KEEPCAPS));
    SHOW("PR_SET_KEEPCAPS 2", prctl(PR_SET_KEEPCAPS, 2));
    SHOW("PR_SET_KEEPCAPS 0", prctl(PR_SET_KEEPCAPS, 0));
    SHOW("PR_GET_KEEPCAPS", prctl(PR_GET_KEEPCAPS));
    SHOW("PR_SET_PDEATHSIG SIGTERM", prctl(PR_SET_PDEATHSIG, SIGTERM));
    SHOW("PR_GET_PDEATHSIG", prctl(PR_GET_PDEATHSIG, &v));
    printf("pdeathsig = %d\n", v);
    SHOW("PR_SET_PDEATHSIG 99", prctl(PR_SET_PDEATHSIG, 99));
    SHOW("PR_SET_CHILD_SUBREAPER", prctl(PR_SET_CHILD_SUBREAPER, 1));
    SHOW("PR_GET_CHILD_SUBREAPER", prctl(PR_GET_CHILD_SUBREAPER, &v));
    printf("subreaper = %d\n", v);
    SHOW("PR_GET_SECCOMP", prctl(PR_GET_SECCOMP));
    SHOW("PR_CAPBSET_READ CAP_CHOWN", prctl(PR_CAPBSET_READ, 0));
    SHOW("PR_CAPBSET_READ CAP_KILL", prctl(PR_CAPBSET_READ, 5));
    SHOW("PR_CAPBSET_READ 64", prctl(PR_CAPBSET_READ, 64));
    SHOW("PR_CAPBSET_DROP CAP_KILL", prctl(PR_CAPBSET_DROP, 5));
    SHOW("PR_CAPBSET_READ CAP_KILL", prctl(PR_CAPBSET_READ, 5));
    SHOW("PR_CAP_AMBIENT IS_SET", prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, 0, 0, 0));
    SHOW("PR_CAP_AMBIENT RAISE", prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, 0, 0, 0));
    SHOW("PR_CAP_AMBIENT CLEAR_ALL", prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0));
    SHOW("PR_SET_NAME", prctl(PR_SET_NAME, "calls-worker"));
    SHOW("PR_GET_NAME", prctl(PR_GET_NAME, name));
    printf("name = %s\n", name);
    SHOW("prctl unknown", prctl(9999));

    /* nice values */
    errno = 0;
    printf("nice = %d errno %s\n", getpriority(PRIO_PROCESS, 0), errno_name(errno));
    SHOW("raw getpriority", syscall(SYS_getpriority, PRIO_PROCESS, 0));
    SHOW("setpriority 5", setpriority(PRIO_PROCESS, 0, 5));
    printf("nice = %d\n", getpriority(PRIO_PROCESS, 0));
    SHOW("setpriority 100 (clamped)", setpriority(PRIO_PROCESS, 0, 100));
    printf("nice = %d\n", getpriority(PRIO_PROCESS, 0));
    SHOW("setpriority 3 (root raises)", setpriority(PRIO_PROCESS, 0, 3));
    printf("nice = %d\n", getpriority(PRIO_PROCESS, 0));
    SHOW("setpriority bad which", setpriority(7, 0, 3));
    SHOW("setpriority no such thread", setpriority(PRIO_PROCESS, 999999, 3));
    /* PRIO_PGRP and PRIO_USER see other processes natively: only errors compare */
    SHOW("getpriority PRIO_PGRP no such group", getpriority(PRIO_PGRP, 999999));
    pthread_t th;
    MUST(pthread_create(&th, NULL, thread_nice, NULL) == 0);
    pthread_join(th, NULL);
    printf("main nice after the thread's change = %d\n", getpriority(PRIO_PROCESS, 0));

    /* sched_rr_get_interval */
    struct timespec ts;
    SHOW("sched_rr_get_interval", sched_rr_get_interval(0, &ts));
    YESNO("interval under 1 s", ts.tv_sec == 0);
    SHOW("sched_rr_get_interval -1", sched_rr_get_interval(-1, &ts));

    /* RLIMIT_NOFILE: raise the soft limit to the hard one, as Go does */
    struct rlimit rl, host;
    MUST(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    printf("nofile soft = %lu\n", (unsigned long)rl.rlim_cur);
    host.rlim_max = strtoul(getenv("HOST_NOFILE_HARD"), NULL, 10);
    YESNO("nofile hard is the host's", rl.rlim_max == host.rlim_max);
    rl.rlim_cur = rl.rlim_max;
    SHOW("setrlimit soft = hard", setrlimit(RLIMIT_NOFILE, &rl));
    int last = -1;
    for (int i = 0; i < 1500; i++)
        last = open("/", O_RDONLY);
    YESNO("1500 more fds open", last >= 1500);

    /* ids: root drops to 1000 keeping a saved root id, and back */
    ids("start");
    SHOW("setresgid 100 100 -1", setresgid(100, 100, -1));
    SHOW("setresuid 1000 1000 0", setresuid(1000, 1000, 0));
    ids("after setres");
    SHOW("setuid 0 (the saved id)", setuid(0));
    ids("after setuid 0");
    status_ids();
    SHOW("setresuid -1 1000 -1", setresuid(-1, 1000, -1));
    SHOW("setresuid 2000 -1 -1", setresuid(2000, -1, -1));
    SHOW("setreuid -1 0", setreuid(-1, 0));
    ids("after setreuid");
    SHOW("setreuid 1000 1000", setreuid(1000, 1000));
    ids("after setreuid 1000 1000");
    SHOW("setuid 0 now", setuid(0));
    SHOW("setpriority 0 unprivileged", setpriority(PRIO_PROCESS, 0, 0));
    SHOW("setpriority 10 unprivileged", setpriority(PRIO_PROCESS, 0, 10));
    SHOW("PR_CAPBSET_DROP unprivileged", prctl(PR_CAPBSET_DROP, 6));
    SHOW("setgid 100", setgid(100));
    SHOW("setgid 0", setgid(0));
    SHOW("setuid -1", syscall(SYS_setuid, -1));
    return 0;
}
