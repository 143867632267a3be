/* futex(2) through one call site of the form the fast transport patches (a `mov
 * $202,%eax; syscall` window), shared by the test programs that use it (fastcall.c,
 * futex_spin.c): repeated operations come through the site's stub. */
#ifndef KARN_FUTEX_SITE_H
#define KARN_FUTEX_SITE_H

static __attribute__((noinline)) long futex_site(void *addr, long op, long val, void *timeout,
                                                 void *addr2, long val3)
{
    long r;
    register long r10 __asm__("r10") = (long)timeout;
    register long r8 __asm__("r8") = (long)addr2;
    register long r9 __asm__("r9") = val3;
    __asm__ volatile("mov $202, %%eax\n\tsyscall"
                     : "=a"(r)
                     : "D"(addr), "S"(op), "d"(val), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return r;
}

#endif
