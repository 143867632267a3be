/* Where things are: the program, the heap, an mmap, the stack and a libc function. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

int main(void)
{
    int local = 0;
    void *heap = malloc(16);
    void *map = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("main=%p heap=%p mmap=%p stack=%p printf=%p\n", (void *)main, heap, map,
           (void *)&local, (void *)printf);
    return 0;
}
