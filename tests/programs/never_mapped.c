/* Touching guest memory that was never mapped (a known gap under PVM: Linux sends
 * SIGSEGV; karn reads zeros and takes writes, docs/architecture.md). Memory slots cover
 * only what is mapped, so these accesses reach no slot: the monitor must carry them out,
 * not end. Each address is 64 MiB from the others (one slot piece each). */
#include <stdio.h>
#include <sys/mman.h>

int main(void)
{
    /* a mapping, then the addresses well above and below it that nothing maps */
    char *anchor = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    unsigned long base = (unsigned long)anchor & ~((64UL << 20) - 1);
    volatile unsigned long *far = (unsigned long *)(base - (256UL << 20));
    volatile unsigned char *byte = (unsigned char *)(base - (128UL << 20) + 3);
    printf("untouched reads %lu\n", far[7]);
    far[0] = 0x1122334455667788UL;
    far[1] = far[0] >> 8;
    *byte = 0xab;
    printf("read back %lx %lx %x\n", far[0], far[1], *byte);
    return 0;
}
