/* MAP_SHARED file mappings that move, grow, shrink or are replaced (mremap, MAP_FIXED):
 * the file must end up with what was written through the mapping, and never with what is
 * later mapped at the old addresses. Usage: mmap_shared_moves DIR */
#include "karntest.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#define PG 4096

static int file_of(const char *dir, const char *name, int pages)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    MUST(fd >= 0);
    MUST(ftruncate(fd, (off_t)pages * PG) == 0);
    return fd;
}

static void show_file(const char *label, int fd, int pages)
{
    for (int i = 0; i < pages; i++) {
        char buf[12] = {0};
        MUST(pread(fd, buf, 11, (off_t)i * PG) == 11);
        for (int j = 0; j < 11; j++)
            if (!buf[j])
                buf[j] = '.';
        printf("%s page %d: %s\n", label, i, buf);
    }
}

int main(int argc, char **argv)
{
    MUST(argc == 2);
    const char *dir = argv[1];

    /* Grow with a move; the old address is then reused by anonymous memory. */
    int fd = file_of(dir, "moved", 3);
    MUST(pwrite(fd, "from-file", 9, PG) == 9);
    /* Two pages reserved: the file in the first, the second blocks growing in place. */
    char *p = mmap(NULL, 2 * PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(p != MAP_FAILED);
    char *block = p + PG;
    MUST(mmap(p, PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == p);
    memcpy(p, "before-move", 11);
    char *q = mremap(p, PG, 3 * PG, MREMAP_MAYMOVE);
    MUST(q != MAP_FAILED);
    YESNO("moved", q != p);
    printf("grown page shows the file: %.9s\n", q + PG);
    memcpy(q + 2 * PG, "after-grow!", 11);
    char *anon = mmap(p, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                      -1, 0);
    MUST(anon == p);
    memcpy(anon, "ANONYMOUS!!", 11);
    MUST(munmap(anon, PG) == 0);
    MUST(munmap(q, 3 * PG) == 0);
    MUST(munmap(block, PG) == 0);
    show_file("moved", fd, 3);
    close(fd);

    /* Shrink: what was written before stays; the file is not written past the mapping. */
    fd = file_of(dir, "shrunk", 2);
    p = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    MUST(p != MAP_FAILED);
    memcpy(p, "first-page!", 11);
    memcpy(p + PG, "second-page", 11);
    MUST(mremap(p, 2 * PG, PG, 0) == p);
    MUST(munmap(p, PG) == 0);
    show_file("shrunk", fd, 2);
    close(fd);

    /* MAP_FIXED anonymous memory over a shared file mapping unmaps it first. */
    fd = file_of(dir, "replaced", 1);
    p = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    MUST(p != MAP_FAILED);
    memcpy(p, "shared-data", 11);
    anon = mmap(p, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    MUST(anon == p);
    memcpy(anon, "ANONYMOUS!!", 11);
    MUST(msync(anon, PG, MS_SYNC) == 0);
    MUST(munmap(anon, PG) == 0);
    show_file("replaced", fd, 1);
    close(fd);
    return 0;
}
