/* Buffers the program does not have mapped (or mapped PROT_NONE) get EFAULT, and the
 * kernel writes nothing there: a page mapped again afterwards reads as zeros. So do
 * buffers a call just used, unmapped or made PROT_NONE since (a check that remembered
 * them would let the kernel write there). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

static void show(const char *what, long r)
{
    printf("%s: %ld %s\n", what, r, r < 0 ? strerror(errno) : "");
}

int main(void)
{
    long page = sysconf(_SC_PAGESIZE);
    char *p = mmap(NULL, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *gone = p + 2 * page;
    munmap(gone, page);
    mprotect(p + 3 * page, page, PROT_NONE);
    int zero = open("/dev/zero", O_RDONLY);
    int pipefd[2];
    pipe(pipefd);
    show("read into unmapped", read(zero, gone, 16));
    show("getrandom into unmapped", getrandom(gone, 16, 0));
    show("read across the hole", read(zero, p + 2 * page - 8, 16));
    show("write from PROT_NONE", write(pipefd[1], p + 3 * page, 16));
    show("read into mapped", read(zero, p, 16));
    char *used = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    show("read into a page", read(zero, used, 16));
    munmap(used, page);
    show("read into that page, unmapped since", read(zero, used, 16));
    char *shut = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    show("read into another page", read(zero, shut, 16));
    mprotect(shut, page, PROT_NONE);
    show("read into that page, PROT_NONE since", read(zero, shut, 16));
    char *again = mmap(gone, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                       -1, 0);
    int dirty = 0;
    for (long i = 0; i < page; i++)
        dirty |= again[i];
    printf("remapped page is %s\n", dirty ? "DIRTY" : "zero");
    return 0;
}
