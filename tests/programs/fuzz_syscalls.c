/* A hostile guest: issues random system calls with random arguments, as fast as it can.
 *
 *   fuzz_syscalls SEED CALLS [WARMUP [sync]]
 *
 * The call sequence is a function of SEED alone (splitmix64); results that depend on
 * timing (a watchdog signal landing mid-call) may differ between runs. Arguments come from
 * classes: pointers into a scratch buffer it owns, prepared structures and path strings in
 * it, bad pointers (NULL page, kernel half, non-canonical, past the address space), fds,
 * small numbers, flag masks, huge lengths, random 64-bit values.
 *
 * What it leaves out or constrains, so that it is never ended by a call that would
 * legitimately end or break it on Linux (anything else is fair game):
 *   - excluded: exit, exit_group, rt_sigreturn, execve, execveat, clone, clone3, fork,
 *     vfork (new threads/processes would start on garbage), alarm (would replace the
 *     watchdog), seccomp (strict mode kills), process_vm_writev (writes its own memory).
 *   - kill, tkill, tgkill, rt_(tg)sigqueueinfo, pidfd_send_signal, fcntl(F_SETSIG),
 *     timer_create, mq_notify: never SIGKILL or SIGSTOP (every other signal has a
 *     counting handler).
 *   - rt_sigaction only queries (act = NULL): random handlers would jump to garbage.
 *   - rt_sigprocmask, rt_sigsuspend, ppoll, pselect6, epoll_pwait(2): the masks they
 *     install never block SIGALRM, the watchdog (a 10 ms interval timer) that ends any
 *     call that would block forever with EINTR. setitimer never touches ITIMER_REAL.
 *   - arch_prctl never sets FS/GS (the TLS); prctl never PR_SET_SECCOMP or PR_SET_MM.
 *   - setrlimit/prlimit64 only read limits (the new-limit pointer is NULL or bad).
 *   - mmap(MAP_FIXED*), munmap, mprotect, madvise, mremap, msync, mlock*, shmat/shmdt,
 *     remap_file_pages, pkey_mprotect, mseal: addresses lie in a zone it owns (or are
 *     bad), never on its code, stack or scratch; brk never shrinks the heap.
 *   - close_range and anything naming fds 900/901 (its control channel) spare them.
 *   - getrandom lengths are mostly cut to 16 bits, only for speed. Calls that always
 *     wait for the watchdog (pause, rt_sigsuspend) and blocking fds are kept to one
 *     epoch in eight, also for speed.
 * Integers never fall in [0x10000, 2^32) (above the NULL guard, below 4 GiB): under karn
 * every address in the guest's span is writable by a syscall, mapped or not, whatever
 * its protection (karn does not yet check VMAs), so such a value used as a pointer, or a
 * small pointer with a long length, could overwrite the fuzzer's own code or stack
 * where Linux would return EFAULT. Scratch pointers with huge lengths are fine: the
 * range runs past the address space (EFAULT), or a capped write (getrandom's 32 MiB)
 * stays inside the untouched padding after the scratch.
 *
 * With "sync" it talks to the test over fds 0/1 (moved to 900/901; 0-2 become
 * /dev/null): "READY" after the warm-up (then waits for a byte), "DONE ..." at the end
 * (then waits again), so the test can sample the monitor's RSS and fds at the same
 * guest state: nothing open but the control channel, no files in /tmp.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CTL_IN 900
#define CTL_OUT 901
#define MAX_NR 463           /* one past the highest x86-64 number we draw (mseal) */
#define EPOCH 4096           /* calls between re-seeding fds and scratch */
#define SCRATCH_SIZE (4u << 20)
#define ZONE_SIZE (8u << 20) /* for memory-map calls, right after the scratch */
#define PAD_SIZE (40u << 20) /* never touched: room for capped huge writes (getrandom) */
#define SAFE_INT_LIMIT 0x10000ul /* below: the NULL guard */
#ifndef SYS_mseal
#define SYS_mseal 462
#endif

static uint64_t rng_state;
static unsigned char *scratch, *zone;
static uint64_t cur_brk;
static volatile uint64_t signals_seen;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t below(uint64_t n) { return n ? rnd() % n : 0; }

static long raw6(long n, long a, long b, long c, long d, long e, long f)
{
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

/* ---- prepared things in the scratch buffer ---------------------------------------- */

static const char *const PATHS[] = {
    "/tmp/fz/a", "/tmp/fz/b", "/tmp/fz/d", "/tmp/fz/d/e", "/tmp/fz", "/tmp/fz/link", ".",
    "..", "/", "", "a", "d", "/dev/null", "/dev/zero", "/proc/self/mem", "/proc/self/maps",
    "/proc/self/fd/3", "/proc/self/exe", "/etc/passwd", "../../../../../etc/shadow",
    "/nonexistent/x", "/tmp", "lo", "/proc/self/status", "/proc/1/root/etc",
};
#define NPATHS (sizeof PATHS / sizeof PATHS[0])
#define PATH_AREA 8192        /* strings live in [0, PATH_AREA) */
#define STRUCT_AREA 16384     /* prepared structures in [PATH_AREA, STRUCT_AREA) */
static uint64_t path_ptr[NPATHS + 1];
static uint64_t struct_ptr[16];
static unsigned nstructs;

static void *put(size_t *off, const void *data, size_t len)
{
    void *at = scratch + *off;
    memcpy(at, data, len);
    *off = (*off + len + 15) & ~(size_t)15;
    return at;
}

static void add_struct(void *p) { struct_ptr[nstructs++] = (uint64_t)p; }

static void fill_scratch(void)
{
    uint64_t *w = (uint64_t *)scratch;
    for (size_t i = 0; i < SCRATCH_SIZE / 8; i++)
        w[i] = (i & 7) == 0 ? rnd() & 0xff : rnd();  /* NULs now and then end strings */
    size_t off = 0;
    for (unsigned i = 0; i < NPATHS; i++)
        path_ptr[i] = (uint64_t)put(&off, PATHS[i], strlen(PATHS[i]) + 1);
    char longpath[5000];
    memset(longpath, 'x', sizeof longpath - 1);
    longpath[sizeof longpath - 1] = 0;
    off = PATH_AREA - 16 - sizeof longpath;
    path_ptr[NPATHS] = (uint64_t)put(&off, longpath, sizeof longpath);

    off = PATH_AREA;
    nstructs = 0;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(1 + below(65535)),
                              .sin_addr.s_addr = htonl(below(2) ? INADDR_LOOPBACK : rnd())};
    add_struct(put(&off, &sin, sizeof sin));
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(below(65536)),
                                .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    add_struct(put(&off, &sin6, sizeof sin6));
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, below(2) ? "/tmp/fz/s%d" : "@%d",
             (int)below(4));
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = 0;
    add_struct(put(&off, &sun, sizeof sun));
    struct timespec ts = {.tv_sec = 0, .tv_nsec = below(2000000)};
    add_struct(put(&off, &ts, sizeof ts));
    struct itimerspec its = {.it_interval = {0, below(3) * 1000000}, .it_value = {0, 1000}};
    add_struct(put(&off, &its, sizeof its));
    struct iovec iov[4];
    for (int i = 0; i < 4; i++) {
        iov[i].iov_base = scratch + STRUCT_AREA + below(SCRATCH_SIZE / 2);
        iov[i].iov_len = below(i == 3 ? 1u << 20 : 4096);
    }
    struct iovec *iovp = put(&off, iov, sizeof iov);
    add_struct(iovp);
    struct msghdr mh = {.msg_name = below(2) ? (void *)struct_ptr[below(3)] : NULL,
                        .msg_namelen = below(2) ? 16 : below(200), .msg_iov = iovp,
                        .msg_iovlen = below(6), .msg_control = NULL};
    if (below(2)) {  /* an SCM_RIGHTS message with a few fds, some of them bad */
        unsigned char cbuf[CMSG_SPACE(4 * sizeof(int))];
        struct msghdr tmp = {.msg_control = cbuf, .msg_controllen = sizeof cbuf};
        struct cmsghdr *c = CMSG_FIRSTHDR(&tmp);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(4 * sizeof(int));
        int fds[4] = {(int)below(40), (int)below(40), -1, (int)rnd()};
        memcpy(CMSG_DATA(c), fds, sizeof fds);
        mh.msg_control = put(&off, cbuf, sizeof cbuf);
        mh.msg_controllen = below(2) ? sizeof cbuf : below(64);
    }
    add_struct(put(&off, &mh, sizeof mh));
    struct pollfd pfd[4];
    for (int i = 0; i < 4; i++)
        pfd[i] = (struct pollfd){.fd = (int)below(40) - 1, .events = (short)rnd()};
    add_struct(put(&off, pfd, sizeof pfd));
    struct epoll_event ev = {.events = (uint32_t)rnd(), .data.u64 = rnd()};
    add_struct(put(&off, &ev, sizeof ev));
    int ints[4] = {(int)below(40), 1, 0, -1};
    add_struct(put(&off, ints, sizeof ints));
}

/* ---- argument classes -------------------------------------------------------------- */

static uint64_t safe_int(uint64_t v)
{
    /* Values in [SAFE_INT_LIMIT, 2^32) would be valid guest addresses (see the top). */
    return (v >= SAFE_INT_LIMIT && v < (1ull << 32)) ? v | (1ull << 32) << below(31) : v;
}

static uint64_t bad_pointer(void)
{
    static const uint64_t fixed[] = {
        0, 1, 0xfff, 0x8000, 0xffff, 0xffff800000000000ull, 0xffffffffff600000ull,
        0x0000800000000000ull, 0x00007ffffffff000ull, 0xffffffffffffffffull,
        0xdead000000000000ull, 1ull << 40, 0xfffffffffffff000ull,
    };
    uint64_t p = fixed[below(sizeof fixed / sizeof fixed[0])];
    return below(4) || p + 4096 <= SAFE_INT_LIMIT ? p : safe_int(p + below(4096));
}

static uint64_t length_value(void)
{
    static const uint64_t fixed[] = {
        0, 1, 2, 7, 8, 15, 16, 64, 100, 128, 255, 256, 1024, 4095, 4096, 4097, 65535, 65536,
        0xfffff000ull, 0xffffffffull, 1ull << 32, 0x7ffff000ull << 32,
        0x7fffffffffffffffull, 0x8000000000000000ull, 0xffffffffffffffffull,
        0xfffffffffffff000ull,
    };
    switch (below(3)) {
    case 0: return below(4097);
    case 1: return fixed[below(sizeof fixed / sizeof fixed[0])];
    default: return below(SAFE_INT_LIMIT / 4096) * 4096;
    }
}

static uint64_t scratch_pointer(void)
{
    uint64_t off = STRUCT_AREA + below(SCRATCH_SIZE / 2);
    return (uint64_t)scratch + (below(4) ? off & ~7ull : off);
}

static uint64_t zone_pointer(void)
{
    uint64_t p = (uint64_t)zone + below(ZONE_SIZE / 4096) * 4096;
    return below(8) ? p : p + below(4096);
}

static uint64_t random_arg(void)
{
    switch (below(20)) {
    case 0: case 1: case 2: case 3: return scratch_pointer();
    case 4: return below(2) ? scratch_pointer() : (uint64_t)scratch + below(64);
    case 5: case 6: return path_ptr[below(NPATHS + 1)];
    case 7: return struct_ptr[below(nstructs)];
    case 8: case 9: return bad_pointer();
    case 10: case 11: case 12: return below(3) ? below(40) : (uint64_t)-1;  /* fds */
    case 13: case 14: return below(17);
    case 15: return safe_int(1ull << below(64) | (below(2) ? 1ull << below(21) : 0));
    case 16: return length_value();
    case 17: return zone_pointer();
    default: return safe_int(rnd() >> (below(2) ? 0 : below(64)));
    }
}

/* ---- constraints (see the top of the file) ----------------------------------------- */

/* One epoch in eight has blocking fds and calls that always wait (pause, sigsuspend):
 * each such wait lasts until the watchdog, so they are rationed, for speed. */
static int blocking_epoch;
static uint64_t local_mask;        /* a random mask without SIGALRM */
static uint64_t local_sigevent[8]; /* sigevent with a signal other than SIGKILL/SIGSTOP */
static uint64_t pselect_mask[2];   /* { sigset*, size } */

static uint64_t safe_mask(void) { return rnd() & ~(1ull << (SIGALRM - 1)); }

static uint64_t mask_pointer(void)
{
    local_mask = safe_mask();
    return below(3) ? (uint64_t)&local_mask : 0;
}

static uint64_t safe_signal(uint64_t sig)
{
    return (sig == SIGKILL || sig == SIGSTOP) ? 0 : sig;
}

static uint64_t zone_length(uint64_t addr, uint64_t len)
{
    uint64_t z = (uint64_t)zone;
    if (addr < z || addr >= z + ZONE_SIZE)
        return len;
    return below(z + ZONE_SIZE - addr + 1);
}

static uint64_t zone_or_bad(void) { return below(5) ? zone_pointer() : bad_pointer(); }

/* Returns 0 to skip the call. */
static int constrain(long nr, uint64_t a[6])
{
    for (int i = 0; i < 6; i++)
        if ((uint32_t)a[i] == CTL_IN || (uint32_t)a[i] == CTL_OUT)  /* fds are ints */
            a[i] = 3;
    switch (nr) {
    case SYS_exit: case SYS_exit_group: case SYS_rt_sigreturn: case SYS_execve:
    case SYS_execveat: case SYS_clone: case SYS_clone3: case SYS_fork: case SYS_vfork:
    case SYS_alarm: case SYS_seccomp: case SYS_process_vm_writev:
        return 0;
    case SYS_kill: case SYS_tkill: case SYS_rt_sigqueueinfo: case SYS_pidfd_send_signal:
        a[1] = safe_signal(a[1]);
        break;
    case SYS_tgkill: case SYS_rt_tgsigqueueinfo:
        a[2] = safe_signal(a[2]);
        break;
    case SYS_fcntl:
        if (a[1] == F_SETSIG)
            a[2] = safe_signal(a[2]);
        break;
    case SYS_timer_create: case SYS_mq_notify: {
        int sig = (int)below(65);
        local_sigevent[1] = (uint64_t)(uint32_t)safe_signal(sig) | (below(3) << 32);
        a[1] = below(2) ? (uint64_t)local_sigevent : below(2) ? 0 : bad_pointer();
        break;
    }
    case SYS_rt_sigaction:
        a[1] = 0;
        break;
    case SYS_rt_sigprocmask:
        a[1] = mask_pointer();
        break;
    case SYS_pause:
        return blocking_epoch;
    case SYS_rt_sigsuspend:
        if (!blocking_epoch)
            return 0;
        a[0] = below(8) ? (local_mask = safe_mask(), (uint64_t)&local_mask) : bad_pointer();
        break;
    case SYS_ppoll:
        a[3] = mask_pointer();
        break;
    case SYS_epoll_pwait: case SYS_epoll_pwait2:
        a[4] = mask_pointer();
        break;
    case SYS_pselect6:
        pselect_mask[0] = mask_pointer();
        pselect_mask[1] = below(4) ? 8 : rnd();
        a[5] = below(2) ? (uint64_t)pselect_mask : 0;
        break;
    case SYS_setitimer:
        if ((int)a[0] == ITIMER_REAL)
            a[0] = 1 + below(2);
        break;
    case SYS_arch_prctl:
        if ((a[0] & 0xfffffff0) == 0x1000 || (a[0] & 0xfffffff0) == 0x2000)
            a[0] = below(2) ? 0x1003 : 0x1004;  /* ARCH_GET_FS / ARCH_GET_GS */
        break;
    case SYS_prctl:
        if ((int)a[0] == 22 || (int)a[0] == 35)  /* PR_SET_SECCOMP, PR_SET_MM */
            a[0] = 16;                           /* PR_GET_NAME */
        break;
    case SYS_setrlimit:
        a[1] = below(2) ? 0 : bad_pointer();
        break;
    case SYS_prlimit64:
        a[2] = below(2) ? 0 : bad_pointer();
        break;
    case SYS_close_range:
        if ((uint32_t)a[0] <= CTL_OUT && (uint32_t)a[1] >= CTL_IN)
            a[1] = CTL_IN - 1;
        break;
    case SYS_brk:
        a[0] = below(3) ? 0 : below(2) ? cur_brk + below(64 << 20) : bad_pointer();
        break;
    case SYS_mmap:
        if (a[3] & (MAP_FIXED | MAP_FIXED_NOREPLACE)) {
            a[0] = zone_or_bad();
            a[1] = zone_length(a[0], a[1]);
        }
        break;
    case SYS_mremap:
        a[0] = zone_or_bad();
        a[1] = zone_length(a[0], a[1]);
        a[2] = below(2) ? zone_length(a[0], a[2]) : a[2];
        a[4] = zone_or_bad();
        if (a[3] & MREMAP_FIXED)
            a[2] = zone_length(a[4], a[2]);
        break;
    case SYS_munmap: case SYS_mprotect: case SYS_madvise: case SYS_msync: case SYS_mlock:
    case SYS_munlock: case SYS_mlock2: case SYS_remap_file_pages: case SYS_pkey_mprotect:
    case SYS_mseal:
        a[0] = zone_or_bad();
        a[1] = zone_length(a[0], a[1]);
        break;
    case SYS_shmat:
        a[1] = below(2) ? 0 : zone_or_bad();
        break;
    case SYS_shmdt:
        a[0] = zone_or_bad();
        break;
    case SYS_getrandom:  /* 32 MiB of random bytes take ~0.1 s: mostly shorter, for speed */
        if (below(16))
            a[1] &= 0xffff;
        break;
    }
    return 1;
}

/* ---- set-up, seeding, clean-up ----------------------------------------------------- */

#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000
#endif
void fz_restore(void);
__asm__(".text\n.globl fz_restore\nfz_restore:\n\tmov $15, %eax\n\tsyscall\n");

static void on_signal(int sig)
{
    (void)sig;
    signals_seen++;
}

static void watchdog(int on)
{
    struct itimerval it = {{0, on ? 10000 : 0}, {0, on ? 10000 : 0}};
    setitimer(ITIMER_REAL, &it, NULL);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void close_all(void)
{
    raw6(SYS_close_range, 3, CTL_IN - 1, 0, 0, 0, 0);
    raw6(SYS_close_range, CTL_OUT + 1, ~0u, 0, 0, 0, 0);
}

static void seed_fds(void)
{
    int nb = blocking_epoch ? 0 : O_NONBLOCK;  /* == SOCK_NONBLOCK, EFD_, TFD_NONBLOCK */
    close_all();
    chdir("/");
    nftw("/tmp/fz", rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    mkdir("/tmp/fz", 0755);
    mkdir("/tmp/fz/d", 0755);
    open("/dev/null", O_RDWR);
    open("/dev/zero", O_RDONLY);
    open("/dev/urandom", O_RDONLY);
    open("/tmp/fz/a", O_RDWR | O_CREAT, 0644);
    open("/tmp/fz", O_RDONLY | O_DIRECTORY);
    open("/", O_RDONLY | O_DIRECTORY);
    open("/proc/self/maps", O_RDONLY);
    int p[2], sv[2];
    pipe2(p, nb);
    socketpair(AF_UNIX, (below(2) ? SOCK_STREAM : SOCK_DGRAM) | nb, 0, sv);
    int l = socket(AF_INET, SOCK_STREAM | nb, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(l, (struct sockaddr *)&sin, sizeof sin);
    listen(l, 4);
    socket(AF_INET, SOCK_DGRAM | nb, 0);
    socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
    socket(AF_UNIX, SOCK_DGRAM | nb, 0);
    eventfd(below(3), nb);
    epoll_create1(0);
    timerfd_create(CLOCK_MONOTONIC, nb);
    symlink("/tmp/fz/a", "/tmp/fz/link");
    chdir("/tmp/fz");
}

static void new_epoch(void)
{
    blocking_epoch = below(8) == 0;
    seed_fds();
    fill_scratch();
    mmap(zone, ZONE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
         -1, 0);
    cur_brk = (uint64_t)raw6(SYS_brk, 0, 0, 0, 0, 0, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static void clean_up(void)
{
    watchdog(0);
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_VIRTUAL, &off, NULL);
    setitimer(ITIMER_PROF, &off, NULL);
    for (int id = 0; id < 1024; id++)  /* timer ids are small: 0, 1, ... */
        raw6(SYS_timer_delete, id, 0, 0, 0, 0, 0);
    close_all();
    chdir("/");
    nftw("/tmp/fz", rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

static void ctl_write(const char *text)
{
    size_t len = strlen(text);
    while (len) {
        long n = raw6(SYS_write, CTL_OUT, (long)text, len, 0, 0, 0);
        if (n <= 0 && n != -4)  /* -EINTR: again */
            exit(3);
        if (n > 0)
            text += n, len -= n;
    }
}

static void ctl_wait(void)
{
    char c;
    long n;
    while ((n = raw6(SYS_read, CTL_IN, (long)&c, 1, 0, 0, 0)) == -4)
        ;
}

/* ---- the loop ---------------------------------------------------------------------- */

struct tally {
    uint64_t calls, ok, skipped, weird;
    uint64_t by_errno[4096];
};
static unsigned char unimplemented[MAX_NR];  /* numbers that returned ENOSYS */

static void fuzz(uint64_t calls, struct tally *t)
{
    for (uint64_t i = 0; t->calls < calls; i++) {
        if (i % EPOCH == 0)
            new_epoch();
        long nr = below(50) ? (long)below(MAX_NR) : (long)safe_int(rnd() >> below(64));
        if (nr >= 0 && nr < MAX_NR && unimplemented[nr] && below(16))
            nr = (long)below(MAX_NR);  /* mostly spend calls where there is code to test */
        uint64_t a[6];
        for (int k = 0; k < 6; k++)
            a[k] = random_arg();
        if (!constrain(nr, a)) {
            t->skipped++;
            continue;
        }
        long r = raw6(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        t->calls++;
        int returns_address = nr == SYS_mmap || nr == SYS_mremap || nr == SYS_brk;
        if ((unsigned long)r >= -4095ul) {
            t->by_errno[-r]++;
            if (r == -38 && nr >= 0 && nr < MAX_NR)
                unimplemented[nr] = 1;
        } else if (r < 0 && !returns_address) {
            /* negative but not an errno: never valid for these calls */
            if (t->weird++ < 5) {
                char msg[160];
                snprintf(msg, sizeof msg, "WEIRD nr=%ld ret=%ld\n", nr, r);
                ctl_write(msg);
            }
        } else {
            t->ok++;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s SEED CALLS [WARMUP [sync]]\n", argv[0]);
        return 2;
    }
    uint64_t seed = strtoull(argv[1], NULL, 0), calls = strtoull(argv[2], NULL, 0);
    uint64_t warmup = argc > 3 ? strtoull(argv[3], NULL, 0) : 0;
    int sync = argc > 4 && strcmp(argv[4], "sync") == 0;
    rng_state = seed;

    if (dup2(0, CTL_IN) < 0 || dup2(1, CTL_OUT) < 0)
        return 4;
    int devnull = open("/dev/null", O_RDWR);
    dup2(devnull, 0), dup2(devnull, 1), dup2(devnull, 2);
    if (devnull > 2)
        close(devnull);

    /* Raw rt_sigaction: glibc refuses its internal signals 32 and 33, which kill too. */
    for (int sig = 1; sig < 65; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        uint64_t act[4] = {(uint64_t)on_signal, SA_RESTORER, (uint64_t)fz_restore, 0};
        raw6(SYS_rt_sigaction, sig, (long)act, 0, 8, 0, 0);  /* no SA_RESTART: EINTR */
    }
    scratch = mmap(NULL, SCRATCH_SIZE + ZONE_SIZE + PAD_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (scratch == MAP_FAILED)
        return 5;
    zone = scratch + SCRATCH_SIZE;

    static struct tally t;
    watchdog(1);
    fuzz(warmup, &t);
    clean_up();
    if (sync) {
        ctl_write("READY\n");
        ctl_wait();
    }
    memset(&t, 0, sizeof t);
    watchdog(1);
    fuzz(calls, &t);
    clean_up();

    uint64_t enosys = t.by_errno[38], efault = t.by_errno[14], einval = t.by_errno[22];
    char msg[512];
    snprintf(msg, sizeof msg,
             "DONE seed=%llu calls=%llu ok=%llu enosys=%llu efault=%llu einval=%llu "
             "skipped=%llu weird=%llu signals=%llu\n",
             (unsigned long long)seed, (unsigned long long)t.calls,
             (unsigned long long)t.ok, (unsigned long long)enosys,
             (unsigned long long)efault, (unsigned long long)einval,
             (unsigned long long)t.skipped, (unsigned long long)t.weird,
             (unsigned long long)signals_seen);
    ctl_write(msg);
    if (sync)
        ctl_wait();
    return 0;
}
