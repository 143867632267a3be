/* 64 distinct `mov $39,%eax; syscall` (getpid) windows, as glibc's wrappers look: sites
 * karn's fast transport patches at their first call (tests/test_fast_syscalls.py). */
#define SITE(name)                                                                     \
    static __attribute__((noinline)) long name(void)                                   \
    {                                                                                  \
        long r;                                                                        \
        __asm__ volatile("mov $39, %%eax\n\tsyscall" : "=a"(r) : : "rcx", "r11",      \
                         "memory");                                                   \
        return r;                                                                      \
    }
#define SITES8(p) SITE(p##0) SITE(p##1) SITE(p##2) SITE(p##3) SITE(p##4) SITE(p##5) \
    SITE(p##6) SITE(p##7)
SITES8(s0) SITES8(s1) SITES8(s2) SITES8(s3) SITES8(s4) SITES8(s5) SITES8(s6) SITES8(s7)
#define LIST8(p) p##0, p##1, p##2, p##3, p##4, p##5, p##6, p##7
static long (*const sites[])(void) = {LIST8(s0), LIST8(s1), LIST8(s2), LIST8(s3),
                                      LIST8(s4), LIST8(s5), LIST8(s6), LIST8(s7)};
#define NSITES (sizeof(sites) / sizeof(sites[0]))
