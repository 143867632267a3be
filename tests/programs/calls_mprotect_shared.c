/* mprotect(PROT_WRITE) of a MAP_SHARED mapping of a file not open for writing is EACCES,
 * as mmap with PROT_WRITE is (Linux clears VM_MAYWRITE); a private mapping of it, or a
 * shared one of a file open for writing, may become writable; the refusal survives a
 * split of the mapping and an mremap. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void show(const char *what, int r)
{
    printf("%s: %s\n", what, r == 0 ? "ok" : strerror(errno));
}

int main(int argc, char **argv)
{
    (void)argc;
    int ro = open(argv[0], O_RDONLY);
    char *s = mmap(NULL, 8192, PROT_READ, MAP_SHARED, ro, 0);
    char *p = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE, ro, 0);
    if (s == MAP_FAILED || p == MAP_FAILED)
        return 1;
    show("mmap shared read-only fd PROT_WRITE",
         mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0) == MAP_FAILED ? -1 : 0);
    show("mprotect shared read-only fd PROT_WRITE", mprotect(s, 8192, PROT_READ | PROT_WRITE));
    show("mprotect its second page PROT_WRITE", mprotect(s + 4096, 4096, PROT_WRITE));
    show("mprotect shared read-only fd PROT_NONE", mprotect(s, 4096, PROT_NONE));
    show("mprotect back to PROT_READ", mprotect(s, 4096, PROT_READ));
    char *m = mremap(s, 8192, 16384, MREMAP_MAYMOVE);
    show("mremap it", m == MAP_FAILED ? -1 : 0);
    show("mprotect the moved one PROT_WRITE", mprotect(m, 4096, PROT_READ | PROT_WRITE));
    show("mprotect private PROT_WRITE", mprotect(p, 8192, PROT_READ | PROT_WRITE));
    char path[] = "/tmp/calls-mprotect-XXXXXX";
    int rw = mkstemp(path);
    unlink(path);
    ftruncate(rw, 4096);
    char *w = mmap(NULL, 4096, PROT_READ, MAP_SHARED, rw, 0);
    show("mprotect shared read-write fd PROT_WRITE", mprotect(w, 4096, PROT_READ | PROT_WRITE));
    w[0] = 'x';
    return 0;
}
