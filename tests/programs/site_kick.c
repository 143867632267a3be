/* A syscall window written as Go writes every one, `mov $nr,%rax; syscall` (48 c7 c0
   imm32 0f 05: a 7-byte mov), called in a tight loop while a 2 kHz interval timer sends
   SIGALRM: under karn's fast transport the site is patched to jump to a per-site stub,
   and each signal kicks the vCPU out of guest mode wherever it is, now and then inside
   that stub. A kick after the stub's replayed mov must resume at the window's `syscall`
   (the call not made yet), not inside the old 7-byte mov, whose leftover bytes `00 00`
   are `add %al,(%rax)`: a fault at the call's number (Go: SIGSEGV at 0x1c, madvise; at
   0xe4, clock_gettime). Also the 5-byte form (b8 imm32 0f 05, glibc's), and a windowless
   site (the number in rax from a register, as in glibc's syscall(), musl's __syscall_cp
   and Go's Syscall6), whose `syscall` itself jumps to the stub through the padding after
   its `ret`: a kick anywhere in that stub must resume at the `syscall` (rax still the
   number). And lseek through a window with register moves after its number, and through
   a register window (the number moved to rax last), under a 10 kHz timer: a kick between
   the moves the stub replays resumes at the next one in place. And getpid through musl's
   own bytes at two sites patched at a head of several instructions (the patcher's
   KNOWN_HEADS): __wait's loop head (`xor %r10d,%r10d; mov %rbp,%rax; mov %rbx,%rsi`) and
   __clone's tail (`sub $8,%rsi; mov %rcx,(%rsi)`), where a kick after the first replayed
   instruction must not resume in place, inside the jmp rel32 (SIGILL; or the store and the
   call skipped). Arguments: form ("long", "short", "windowless", "moves", "register",
   "wait" or "clone") and seconds. Prints the calls made and "ok". */
#include "karntest.h"
#include "musl_clone.h"

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile long alarms;

static void on_alarm(int sig) {
    (void)sig;
    alarms++;
}

/* A getpid window whose mov is `mov_bytes` (then `syscall`), aligned as its own site. */
#define GETPID_WINDOW(name, mov_bytes)                                          \
    __attribute__((noinline)) static long name(void) {                          \
        long ret;                                                               \
        __asm__ volatile(".p2align 4\n\t.byte " mov_bytes "\n\tsyscall"          \
                         : "=a"(ret)                                            \
                         :                                                      \
                         : "rcx", "r11", "memory");                             \
        return ret;                                                             \
    }

GETPID_WINDOW(getpid_long, "0x48, 0xc7, 0xc0, 0x27, 0x00, 0x00, 0x00") /* mov $39,%rax */
GETPID_WINDOW(getpid_short, "0xb8, 0x27, 0x00, 0x00, 0x00")           /* mov $39,%eax */

/* raw_syscall0(nr): `mov %rdi,%rax; syscall; ret`, then the assembler's nops up to a
   16-byte boundary (dead padding) */
long raw_syscall0(long nr);
__asm__(".text\n.p2align 4\nraw_syscall0:\n\tmov %rdi,%rax\n\tsyscall\n\tret\n"
        "\t.p2align 4\n");

/* lseek(fd, off, SEEK_SET), whose result is its offset argument, through a window with
   register moves after the number (musl's inline calls), or with the number in r8 moved to
   rax last (musl's futex wakes): a kick between two moves the stub replays must resume at
   the next move in place, or the call runs with an argument left zero. The arguments go
   through r9 and r10 (more moves to land a kick between). */
#define LSEEK_WINDOW(name, number, to_rax)                                       \
    __attribute__((noinline)) static long name(long fd, long off) {              \
        long ret;                                                                \
        register long r12 __asm__("r12") = fd;                                   \
        register long r13 __asm__("r13") = off;                                  \
        __asm__ volatile("xor %%edi,%%edi\n\txor %%esi,%%esi\n\t" number "\n\t"  \
                         "mov %%r12,%%r9\n\tmov %%r13,%%r10\n\tmov %%r9,%%rdi\n\t"  \
                         "mov %%r10,%%rsi\n\txor %%edx,%%edx\n\t" to_rax "syscall"  \
                         : "=a"(ret)                                             \
                         : "r"(r12), "r"(r13)                                    \
                         : "rdi", "rsi", "rdx", "r8", "r9", "r10", "rcx", "r11", "memory"); \
        return ret;                                                              \
    }

LSEEK_WINDOW(lseek_moves, "mov $8,%%eax", "")
LSEEK_WINDOW(lseek_register, "mov $8,%%r8d", "mov %%r8,%%rax\n\t")

/* musl_wait(&word, 39): __wait's loop, from its head to its end, the number in rbp; the
   loop goes round while word == r9d (never: r9d = 1, word 0). Returns rsi, which the
   head set from rbx (0x5a5a). */
long musl_wait(int *word, long nr);
__asm__(".text\n.p2align 6\nmusl_wait:\n"
        "\tpush %rbp\n\tpush %rbx\n\tmov %rsi,%rbp\n\tmov $0x5a5a,%ebx\n\tmov $1,%r9d\n"
        "\t.p2align 4\n1:\n"
        "\t.byte 0x45,0x31,0xd2, 0x48,0x89,0xe8, 0x48,0x89,0xde\n"
        "\tsyscall\n"
        "\t.byte 0x48,0x83,0xf8,0xda, 0x74,0x1f\n"      /* cmp $-38,%rax; je 2f */
        "\t.byte 0x8b,0x07, 0x44,0x39,0xc8, 0x74,0xe8\n" /* mov (%rdi),%eax; cmp; je 1b */
        "\tmov %rsi,%rax\n\tpop %rbx\n\tpop %rbp\n\tret\n"
        "\t.fill 0x1f-9,1,0x90\n"
        "2:\tmov $-1,%rax\n\tpop %rbx\n\tpop %rbp\n\tret\n");

static int fd;
static char clone_stack[64] __attribute__((aligned(16)));

/* One call of the form; its right answer is `want`. */
static long call(const char *form, long i, long *want) {
    if (!strcmp(form, "moves") || !strcmp(form, "register")) {
        *want = i;
        return form[0] == 'm' ? lseek_moves(fd, i) : lseek_register(fd, i);
    }
    if (!strcmp(form, "wait")) {
        static int word;
        *want = 0x5a5a;
        return musl_wait(&word, SYS_getpid);
    }
    if (!strcmp(form, "clone")) {
        long *stored = (long *)(clone_stack + sizeof clone_stack - 8);
        *stored = 0;
        *want = getpid();
        long got = musl_clone(clone_stack + sizeof clone_stack, SYS_getpid);
        return *stored == 0x1234 ? got : -2;
    }
    *want = getpid();
    if (!strcmp(form, "long"))
        return getpid_long();
    if (!strcmp(form, "short"))
        return getpid_short();
    return raw_syscall0(SYS_getpid);
}

int main(int argc, char **argv) {
    const char *form = argc > 1 ? argv[1] : "long";
    double seconds = argc > 2 ? atof(argv[2]) : 2.0;
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    MUST(sigaction(SIGALRM, &sa, NULL) == 0);
    /* the stubs of these forms are short: kicks land in them less often, so more kicks */
    long tick = !strcmp(form, "long") || !strcmp(form, "short") || !strcmp(form, "windowless")
                    ? 500 : 100;
    struct itimerval every = {{0, tick}, {0, tick}};
    MUST(setitimer(ITIMER_REAL, &every, NULL) == 0);
    fd = open(argv[0], O_RDONLY);
    MUST(fd >= 0);
    long calls = 0, want;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        for (int i = 0; i < 1000; i++, calls++) {
            long got = call(form, calls, &want);
            if (got != want) {
                printf("%s gave %ld, not %ld\n", form, got, want);
                return 1;
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
    struct itimerval off = {{0, 0}, {0, 0}};
    MUST(setitimer(ITIMER_REAL, &off, NULL) == 0);
    printf("%s form: calls %s, alarms %s\nok\n", form, calls > 1000 ? "many" : "few",
           alarms > 0 ? "some" : "none");
    return 0;
}
