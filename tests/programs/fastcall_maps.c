/* Map, write and unmap one page n times (default 300), checking that each fresh page reads
 * zeros: musl's mmap and munmap set their arguments up with register moves between the
 * `mov $nr,%eax` and the `syscall` (tests/test_fast_syscalls.py). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 300, wrong = 0;
    for (long i = 0; i < n; i++) {
        unsigned char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return 1;
        wrong += p[100] != 0;
        p[100] = (unsigned char)(i | 1);
        wrong += p[100] != (unsigned char)(i | 1);
        if (munmap(p, 4096))
            return 1;
    }
    printf("maps: %ld, wrong %ld\n", n, wrong);
    return 0;
}
