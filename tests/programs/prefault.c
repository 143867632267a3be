/* New anonymous memory and what of it is resident before the program touches it: each
   line is a mapping's size in KiB and the growth of ru_maxrss (KiB) over its mmap. The
   mappings then read zeros and take writes. */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

static long maxrss_kib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static int check(const char *what, size_t size, int flags) {
    long before = maxrss_kib();
    unsigned char *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    long grown = maxrss_kib() - before;
    for (size_t i = 0; i < size; i += 4096)
        if (p[i] || p[i + 4095]) {
            printf("%s: not zero at %zu\n", what, i);
            return 1;
        }
    memset(p, 0xA5, size);
    printf("%s %zu %ld\n", what, size / 1024, grown);
    return 0;
}

int main(void) {
    return check("small", 768 << 10, 0) || check("big", 8 << 20, 0) ||
           check("stack", 2 << 20, MAP_STACK) || check("noreserve", 768 << 10, MAP_NORESERVE);
}
