/* Identity and system information: ids, uname, getrandom, rlimits, sysinfo, arch_prctl,
 * set_tid_address, and the synthetic /proc. */
#include "karntest.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>
#include <unistd.h>

#ifndef ARCH_GET_FS
#define ARCH_GET_FS 0x1003
#endif

/* Read a whole (small, synthetic) file into buf; returns its length or -1. */
static long slurp(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    size_t n = 0;
    ssize_t r;
    while (n < size - 1 && (r = read(fd, buf + n, size - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = 0;
    close(fd);
    return (long)n;
}

static int has_line_starting(const char *text, const char *prefix)
{
    size_t len = strlen(prefix);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, prefix, len) == 0)
            return 1;
    return 0;
}

static char text[1 << 20];

int main(int argc, char **argv)
{
    (void)argc;
    /* ids: one process, one thread, no parent we can see */
    pid_t pid = getpid();
    YESNO("getpid > 0", pid > 0);
    YESNO("gettid == getpid", syscall(SYS_gettid) == pid);
    YESNO("getppid >= 0", getppid() >= 0);
    YESNO("getpid stable", getpid() == pid);
    printf("uid=%d euid=%d gid=%d egid=%d\n", (int)getuid(), (int)geteuid(), (int)getgid(),
           (int)getegid());
    uid_t r, e, s;
    SHOW("getresuid", getresuid(&r, &e, &s));
    YESNO("getresuid agrees", r == getuid() && e == geteuid() && s == geteuid());
    YESNO("set_tid_address returns tid", syscall(SYS_set_tid_address, NULL) == pid);
    long fsbase = 0;
    SHOW("arch_prctl ARCH_GET_FS", syscall(SYS_arch_prctl, ARCH_GET_FS, &fsbase));
    /* on x86-64 both libcs keep the thread pointer at %fs:0 */
    uintptr_t self;
    __asm__("mov %%fs:0, %0" : "=r"(self));
    YESNO("fs base is the thread pointer", (uintptr_t)fsbase == self && self != 0);
    SHOW("arch_prctl bad code", syscall(SYS_arch_prctl, 0x9999, 0));

    /* uname */
    struct utsname u;
    SHOW("uname", uname(&u));
    printf("sysname = %s\n", u.sysname);
    printf("machine = %s\n", u.machine);
    YESNO("release nonempty", u.release[0] != 0);
    YESNO("version nonempty", u.version[0] != 0);
    YESNO("nodename nonempty", u.nodename[0] != 0);
    char host[256];
    SHOW("gethostname", gethostname(host, sizeof host));
    YESNO("gethostname == nodename", strcmp(host, u.nodename) == 0);
    if (argv[1] && strcmp(argv[1], "hostname") == 0)
        printf("nodename = %s\n", u.nodename);

    /* getrandom */
    unsigned char a[64], b[64];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    SHOW("getrandom 64", getrandom(a, sizeof a, 0));
    SHOW("getrandom 64 NONBLOCK", getrandom(b, sizeof b, GRND_NONBLOCK));
    YESNO("two draws differ", memcmp(a, b, sizeof a) != 0);
    int zeros = 0;
    for (size_t i = 0; i < sizeof a; i++)
        zeros += a[i] == 0;
    YESNO("not mostly zeros", zeros < 16);
    SHOW("getrandom bad flags", getrandom(a, 8, 0x1000));
    SHOW("getrandom 0 bytes", getrandom(a, 0, 0));

    /* rlimits */
    struct rlimit rl;
    SHOW("getrlimit STACK", getrlimit(RLIMIT_STACK, &rl));
    YESNO("stack limit >= 1MiB", rl.rlim_cur >= 1024 * 1024);
    SHOW("getrlimit NOFILE", getrlimit(RLIMIT_NOFILE, &rl));
    YESNO("nofile soft in [64, hard]", rl.rlim_cur >= 64 && rl.rlim_cur <= rl.rlim_max);
    SHOW("prlimit64 AS", syscall(SYS_prlimit64, 0, RLIMIT_AS, NULL, &rl));
    SHOW("getrlimit bad resource", getrlimit(1000, &rl));

    /* sysinfo */
    struct sysinfo si;
    SHOW("sysinfo", sysinfo(&si));
    YESNO("totalram > 0", si.totalram > 0 && si.mem_unit >= 1);
    YESNO("freeram <= totalram", si.freeram <= si.totalram);
    YESNO("uptime >= 0", si.uptime >= 0);
    YESNO("procs >= 1", si.procs >= 1);

    /* sysconf goes through some of the above */
    YESNO("sysconf PAGESIZE 4096", sysconf(_SC_PAGESIZE) == 4096);
    YESNO("sysconf NPROCESSORS_ONLN >= 1", sysconf(_SC_NPROCESSORS_ONLN) >= 1);

    /* /proc */
    char link[4096];
    ssize_t n = readlink("/proc/self/exe", link, sizeof link - 1);
    YESNO("readlink /proc/self/exe", n > 0);
    if (n > 0) {
        link[n] = 0;
        char resolved[4096];
        YESNO("/proc/self/exe is this program", realpath(argv[0], resolved) && strcmp(resolved, link) == 0);
    }
    YESNO("/proc/self/maps lists the program",
          slurp("/proc/self/maps", text, sizeof text) > 0 && n > 0 && strstr(text, link) != NULL);
    YESNO("/proc/self/maps has [stack]", strstr(text, "[stack]") != NULL);
    YESNO("/proc/self/status has Name:", slurp("/proc/self/status", text, sizeof text) > 0 &&
                                              has_line_starting(text, "Name:"));
    YESNO("/proc/self/status has Pid:", has_line_starting(text, "Pid:"));
    YESNO("/proc/cpuinfo has processor", slurp("/proc/cpuinfo", text, sizeof text) > 0 &&
                                             has_line_starting(text, "processor"));
    YESNO("/proc/meminfo has MemTotal", slurp("/proc/meminfo", text, sizeof text) > 0 &&
                                            has_line_starting(text, "MemTotal:"));
    char tmpl[] = "/tmp/karn-proc-XXXXXX";
    int fd = mkstemp(tmpl);
    char fdpath[64];
    snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", fd);
    n = readlink(fdpath, link, sizeof link - 1);
    if (n > 0)
        link[n] = 0;
    YESNO("/proc/self/fd/N names the file", n > 0 && strcmp(link, tmpl) == 0);
    int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY);
    YESNO("/proc/self/fd opens", dfd >= 0);
    close(dfd);
    close(fd);
    unlink(tmpl);
    SHOW("open /proc/self/nonexistent", open("/proc/self/karn-nonexistent", O_RDONLY));
    return 0;
}
