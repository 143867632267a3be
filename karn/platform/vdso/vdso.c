/*
 * karn's vDSO: the clock calls a Linux x86-64 program makes through its vDSO, answered
 * in the guest from the time page ([vvar]) the monitor keeps, so that reading the time
 * costs an rdtsc instead of a VM exit. Built by `make vdso` into vdso.so (package data);
 * see docs/design/fast-syscalls.md section 6.
 *
 * Freestanding: no libc, no relocations, no writable data. Anything the page cannot
 * answer (another clock, or mode 0 when the TSC is unusable) makes the real system call,
 * so the answer is always the kernel's.
 */

typedef unsigned int u32;
typedef unsigned long u64;
typedef long s64;

/* The time page; karn/platform/timepage.py writes it (the layouts must agree). */
struct time_page {
	u32 seq;      /* odd while the monitor writes: readers retry */
	u32 mode;     /* MODE_TSC, or 0: make the system call */
	u64 tsc_base; /* guest TSC the bases below were computed for */
	u64 mult;     /* ns per TSC tick, 32.32 fixed point (slewed to track the host) */
	u64 raw_mult; /* the same, never slewed: CLOCK_MONOTONIC_RAW */
	s64 base[5];  /* ns at tsc_base, indexed by SLOT_* */
	s64 coarse_ns; /* resolution of the *_COARSE clocks */
};

enum { MODE_TSC = 1 };
enum { SLOT_REALTIME, SLOT_MONOTONIC, SLOT_BOOTTIME, SLOT_TAI, SLOT_RAW };

/* One page below the vDSO's first byte (vdso.lds): reached RIP-relative, no relocation. */
extern const volatile struct time_page karn_vvar __attribute__((visibility("hidden")));

#define CLOCK_REALTIME 0
#define CLOCK_MONOTONIC 1
#define CLOCK_MONOTONIC_RAW 4
#define CLOCK_REALTIME_COARSE 5
#define CLOCK_MONOTONIC_COARSE 6
#define CLOCK_BOOTTIME 7
#define CLOCK_TAI 11

#define NR_gettimeofday 96
#define NR_time 201
#define NR_clock_gettime 228
#define NR_clock_getres 229

#define NSEC_PER_SEC 1000000000L

struct timespec { s64 tv_sec; s64 tv_nsec; };
struct timeval { s64 tv_sec; s64 tv_usec; };
struct timezone { int tz_minuteswest; int tz_dsttime; };

/* The real call for what the time page cannot answer: one out-of-line site, `mov
 * %rdx,%rax; syscall; ret` and the assembler's nops up to a 16-byte boundary, which karn's
 * fast transport patches as a windowless site (the syscall jumps through that padding to a
 * stub; docs/design/fast-syscalls.md, section 3.4): an inlined `syscall` with no padding
 * after its function had every fallback call (CPU-time clocks, clock_getres) exit. */
long karn_vdso_syscall2(long a0, long a1, long nr);
__asm__(".text\n"
	".p2align 4\n"
	".type karn_vdso_syscall2, @function\n"
	"karn_vdso_syscall2:\n"
	"\t.cfi_startproc\n" /* unwind tables as for the C functions: a leaf, no frame */
	"\tmov %rdx, %rax\n"
	"\tsyscall\n"
	"\tret\n"
	"\t.cfi_endproc\n"
	".size karn_vdso_syscall2, . - karn_vdso_syscall2\n"
	".p2align 4\n");

static long syscall2(long nr, long a0, long a1)
{
	return karn_vdso_syscall2(a0, a1, nr);
}

/* lfence keeps rdtsc from running ahead of the loads before it (the sequence count). */
static inline u64 rdtsc_ordered(void)
{
	u32 lo, hi;
	__asm__ volatile("lfence; rdtsc" : "=a"(lo), "=d"(hi) :: "memory");
	return ((u64)hi << 32) | lo;
}

/* Nanoseconds of a clock slot from the page; 0 when the page says to ask the kernel. */
static int read_slot(int slot, int coarse, s64 *ns)
{
	const volatile struct time_page *page = &karn_vvar;
	for (;;) {
		u32 seq = page->seq;
		__asm__ volatile("" ::: "memory");
		if (seq & 1) {
			__asm__ volatile("pause");
			continue;
		}
		if (page->mode != MODE_TSC)
			return 0;
		s64 delta = (s64)(rdtsc_ordered() - page->tsc_base);
		u64 mult = slot == SLOT_RAW ? page->raw_mult : page->mult;
		s64 value = page->base[slot] + (s64)(((__int128)delta * mult) >> 32);
		s64 res = page->coarse_ns;
		__asm__ volatile("" ::: "memory");
		if (page->seq != seq)
			continue;
		if (coarse && res > 0)
			value -= value % res;
		*ns = value;
		return 1;
	}
}

/* The page's slot for a clock id, -1 for clocks only the kernel answers. */
static int slot_of(int clock, int *coarse)
{
	*coarse = 0;
	switch (clock) {
	case CLOCK_REALTIME_COARSE:
		*coarse = 1;
		/* fall through */
	case CLOCK_REALTIME:
		return SLOT_REALTIME;
	case CLOCK_MONOTONIC_COARSE:
		*coarse = 1;
		/* fall through */
	case CLOCK_MONOTONIC:
		return SLOT_MONOTONIC;
	case CLOCK_BOOTTIME:
		return SLOT_BOOTTIME;
	case CLOCK_TAI:
		return SLOT_TAI;
	case CLOCK_MONOTONIC_RAW:
		return SLOT_RAW;
	default:
		return -1;
	}
}

int __vdso_clock_gettime(int clock, struct timespec *ts)
{
	int coarse;
	int slot = slot_of(clock, &coarse);
	s64 ns;
	if (slot < 0 || !read_slot(slot, coarse, &ns))
		return syscall2(NR_clock_gettime, clock, (long)ts);
	ts->tv_sec = ns / NSEC_PER_SEC;
	ts->tv_nsec = ns % NSEC_PER_SEC;
	return 0;
}

int __vdso_gettimeofday(struct timeval *tv, struct timezone *tz)
{
	s64 ns;
	if (tv) {
		if (!read_slot(SLOT_REALTIME, 0, &ns))
			return syscall2(NR_gettimeofday, (long)tv, (long)tz);
		tv->tv_sec = ns / NSEC_PER_SEC;
		tv->tv_usec = ns % NSEC_PER_SEC / 1000;
	}
	if (tz) {
		tz->tz_minuteswest = 0;
		tz->tz_dsttime = 0;
	}
	return 0;
}

s64 __vdso_time(s64 *t)
{
	s64 ns;
	if (!read_slot(SLOT_REALTIME, 0, &ns))
		return syscall2(NR_time, (long)t, 0);
	if (t)
		*t = ns / NSEC_PER_SEC;
	return ns / NSEC_PER_SEC;
}

/* karn's CPUs are virtual and a thread may run on any: the kernel's getcpu says 0 too. */
int __vdso_getcpu(u32 *cpu, u32 *node, void *cache)
{
	(void)cache;
	if (cpu)
		*cpu = 0;
	if (node)
		*node = 0;
	return 0;
}

int __vdso_clock_getres(int clock, struct timespec *res)
{
	int coarse;
	int slot = slot_of(clock, &coarse);
	if (slot < 0 || karn_vvar.mode != MODE_TSC)
		return syscall2(NR_clock_getres, clock, (long)res);
	if (res) {
		res->tv_sec = 0;
		res->tv_nsec = coarse ? karn_vvar.coarse_ns : 1;
	}
	return 0;
}

int clock_gettime(int, struct timespec *) __attribute__((weak, alias("__vdso_clock_gettime")));
int gettimeofday(struct timeval *, struct timezone *)
	__attribute__((weak, alias("__vdso_gettimeofday")));
s64 time(s64 *) __attribute__((weak, alias("__vdso_time")));
int getcpu(u32 *, u32 *, void *) __attribute__((weak, alias("__vdso_getcpu")));
int clock_getres(int, struct timespec *) __attribute__((weak, alias("__vdso_clock_getres")));
