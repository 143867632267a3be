/* Capability sets as programs read and change them at start (node, systemd-style daemons,
 * libcap): capget's version handshake, capset's rules, the ambient set, how setuid,
 * seteuid and execve change the sets; protection keys on a CPU without them (`pkeys`).
 * Prints relations between sets, never the sets themselves: a root run natively may hold
 * fewer capabilities than karn's root (a container's). Run as root. */
#include "karntest.h"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* <linux/capability.h>'s, spelt out: musl's headers do not include the kernel's */
#define _LINUX_CAPABILITY_VERSION_1 0x19980330
#define _LINUX_CAPABILITY_VERSION_3 0x20080522
#define CAP_CHOWN 0
#define CAP_KILL 5
#define CAP_LAST_CAP 40
struct __user_cap_header_struct {
    unsigned version;
    int pid;
};
struct __user_cap_data_struct {
    unsigned effective, permitted, inheritable;
};

struct sets {
    unsigned long long eff, prm, inh;
};

static int capget_v3(pid_t pid, struct sets *s)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, pid};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &hdr, d) != 0)
        return -1;
    s->eff = d[0].effective | (unsigned long long)d[1].effective << 32;
    s->prm = d[0].permitted | (unsigned long long)d[1].permitted << 32;
    s->inh = d[0].inheritable | (unsigned long long)d[1].inheritable << 32;
    return 0;
}

static long capset_v3(pid_t pid, const struct sets *s)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, pid};
    struct __user_cap_data_struct d[2] = {
        {(unsigned)s->eff, (unsigned)s->prm, (unsigned)s->inh},
        {(unsigned)(s->eff >> 32), (unsigned)(s->prm >> 32), (unsigned)(s->inh >> 32)},
    };
    return syscall(SYS_capset, &hdr, d);
}

static struct sets now(void)
{
    struct sets s;
    MUST(capget_v3(0, &s) == 0);
    return s;
}

#define HAS(set, cap) ((int)((set) >> (cap) & 1))

/* /proc/self/status's CapEff line agrees with capget */
static int status_agrees(void)
{
    char line[256];
    unsigned long long eff = ~0ULL;
    FILE *f = fopen("/proc/self/status", "r");
    MUST(f != NULL);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "CapEff:", 7) == 0)
            eff = strtoull(line + 7, NULL, 16);
    fclose(f);
    return eff == now().eff;
}

static void describe(const char *label)
{
    struct sets s = now();
    printf("%s: effective==permitted %d, effective empty %d, permitted empty %d, "
           "inheritable empty %d\n", label, s.eff == s.prm, s.eff == 0, s.prm == 0, s.inh == 0);
}

static void child(const char *label, void (*body)(void))
{
    fflush(stdout);
    pid_t pid = fork();
    MUST(pid >= 0);
    if (pid == 0) {
        body();
        fflush(stdout);
        _exit(0);
    }
    int status;
    MUST(waitpid(pid, &status, 0) == pid);
    printf("%s exited %d\n", label, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

static void drop_all_uids(void)
{
    SHOW("setuid 1000", setuid(1000));
    describe("after setuid 1000");
    printf("/proc/self/status CapEff agrees %d\n", status_agrees());
    struct sets s = now();
    s.prm = s.eff = 0x1;
    SHOW("capset raising after setuid", capset_v3(0, &s));
}

static void keep_caps_across_setresuid(void)
{
    struct sets before = now();
    SHOW("PR_SET_KEEPCAPS 1", prctl(PR_SET_KEEPCAPS, 1));
    SHOW("setresuid 1000", setresuid(1000, 1000, 1000));
    struct sets s = now();
    printf("keepcaps: permitted kept %d, effective empty %d\n", s.prm == before.prm, s.eff == 0);
}

static void effective_uid_switch(void)
{
    struct sets before = now();
    SHOW("seteuid 1000", seteuid(1000));
    struct sets s = now();
    printf("seteuid 1000: permitted kept %d, effective empty %d\n", s.prm == before.prm,
           s.eff == 0);
    SHOW("seteuid 0", seteuid(0));
    s = now();
    printf("seteuid 0: effective==permitted %d\n", s.eff == s.prm);
}

static const char *self;

static void exec_after_drop(void)
{
    struct sets s = now();
    s.eff &= ~(1ULL << CAP_CHOWN);
    MUST(capset_v3(0, &s) == 0);
    char *argv[] = {(char *)self, "after-exec", NULL};
    execv(self, argv);
    printf("execv: %s\n", errno_name(errno));
}

static void protection_keys(void)
{
    void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(page != MAP_FAILED);
    SHOW("pkey_alloc", syscall(SYS_pkey_alloc, 0, 0));
    SHOW("pkey_alloc bad flags", syscall(SYS_pkey_alloc, 1, 0));
    SHOW("pkey_alloc bad rights", syscall(SYS_pkey_alloc, 0, 4));
    SHOW("pkey_free 3", syscall(SYS_pkey_free, 3));
    SHOW("pkey_mprotect key -1", syscall(SYS_pkey_mprotect, page, 4096, PROT_READ, -1));
    SHOW("pkey_mprotect key 5", syscall(SYS_pkey_mprotect, page, 4096, PROT_READ, 5));
    SHOW("pkey_mprotect unaligned", syscall(SYS_pkey_mprotect, (char *)page + 1, 4096,
                                            PROT_READ, -1));
    printf("page readable after pkey_mprotect: %d\n", *(volatile char *)page == 0);
}

int main(int argc, char **argv)
{
    self = argv[0];
    if (argc > 1 && strcmp(argv[1], "after-exec") == 0) {
        describe("after execve");
        printf("after execve: chown effective again %d\n", HAS(now().eff, CAP_CHOWN));
        return 0;
    }

    /* the version handshake libcap makes */
    struct __user_cap_header_struct hdr = {0, 0};
    SHOW("capget version 0, no data", syscall(SYS_capget, &hdr, NULL));
    printf("version offered %#x\n", hdr.version);
    struct __user_cap_data_struct d[2];
    hdr.version = 0x12345678;
    SHOW("capget unknown version", syscall(SYS_capget, &hdr, d));
    printf("version offered %#x\n", hdr.version);
    hdr = (struct __user_cap_header_struct){_LINUX_CAPABILITY_VERSION_3, 0};
    SHOW("capget v3, no data", syscall(SYS_capget, &hdr, NULL));
    hdr.pid = -1;
    SHOW("capget pid -1", syscall(SYS_capget, &hdr, d));

    struct sets s = now(), other;
    describe("root at start");
    printf("chown effective %d\n", HAS(s.eff, CAP_CHOWN));
    int disagree = 0;
    for (int cap = 0; cap <= CAP_LAST_CAP; cap++)
        disagree += HAS(s.prm, cap) != (prctl(PR_CAPBSET_READ, cap) == 1);
    printf("permitted and bounding set disagree on %d\n", disagree);
    MUST(capget_v3(getpid(), &other) == 0);
    printf("capget by own pid same %d\n", memcmp(&s, &other, sizeof s) == 0);

    struct __user_cap_header_struct v1 = {_LINUX_CAPABILITY_VERSION_1, 0};
    struct __user_cap_data_struct one[2] = {{0, 0, 0}, {0xdead, 0xdead, 0xdead}};
    SHOW("capget v1", syscall(SYS_capget, &v1, one));
    printf("v1 low word same %d, second word untouched %d\n", one[0].effective == (unsigned)s.eff,
           one[1].effective == 0xdead);

    /* capset: effective within permitted, permitted only shrinks */
    struct sets t = s;
    t.eff &= ~(1ULL << CAP_CHOWN);
    SHOW("capset drop chown from effective", capset_v3(0, &t));
    printf("chown effective %d permitted %d\n", HAS(now().eff, CAP_CHOWN), HAS(now().prm, CAP_CHOWN));
    printf("/proc/self/status CapEff agrees %d\n", status_agrees());
    SHOW("capset raise it again", capset_v3(0, &s));
    printf("chown effective %d\n", HAS(now().eff, CAP_CHOWN));
    SHOW("capset other pid", capset_v3(getpid() + 4242, &s));
    t = s;
    t.eff &= ~(1ULL << CAP_KILL);
    t.prm &= ~(1ULL << CAP_KILL);
    SHOW("capset drop kill from permitted", capset_v3(0, &t));
    t.eff |= 1ULL << CAP_KILL;
    SHOW("capset effective beyond permitted", capset_v3(0, &t));
    t.prm |= 1ULL << CAP_KILL;
    SHOW("capset permitted raised again", capset_v3(0, &t));

    /* the ambient set: only what is permitted and inheritable */
    SHOW("ambient raise chown", prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_CHOWN, 0, 0));
    t = now();
    t.inh |= 1ULL << CAP_CHOWN;
    SHOW("capset inheritable chown", capset_v3(0, &t));
    SHOW("ambient raise chown", prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_CHOWN, 0, 0));
    SHOW("ambient is set", prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_CHOWN, 0, 0));
    t.inh = 0;
    SHOW("capset inheritable empty", capset_v3(0, &t));
    SHOW("ambient is set", prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_CHOWN, 0, 0));
    SHOW("capset inheritable kill (not permitted)", (t.inh = 1ULL << CAP_KILL, capset_v3(0, &t)));

    child("setuid child", drop_all_uids);
    child("keepcaps child", keep_caps_across_setresuid);
    child("seteuid child", effective_uid_switch);
    child("exec child", exec_after_drop);
    if (argc > 1 && strcmp(argv[1], "pkeys") == 0)
        protection_keys();
    return 0;
}
