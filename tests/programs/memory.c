/* Memory: brk, mmap (anonymous, file-backed private, fixed), munmap, mremap, mprotect,
 * madvise, and malloc on top of them. The mapped file is made in /tmp, or in argv[1]. */
#include "karntest.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE 4096UL

static int all_bytes(const unsigned char *p, size_t n, unsigned char v)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != v)
            return 0;
    return 1;
}

static char stdout_buf[1 << 16];

int main(int argc, char **argv)
{
    /* malloc may itself use brk: give stdio a static buffer so nothing allocates while
     * the break is moved below. */
    setvbuf(stdout, stdout_buf, _IOFBF, sizeof stdout_buf);

    /* brk, through the raw syscall (musl's sbrk refuses to move the break) */
    uintptr_t cur = (uintptr_t)syscall(SYS_brk, 0);
    YESNO("brk(0) nonzero", cur != 0);
    YESNO("brk(0) stable", (uintptr_t)syscall(SYS_brk, 0) == cur);
    uintptr_t grown = (uintptr_t)syscall(SYS_brk, cur + 1024 * 1024);
    printf("brk grow delta: %ld\n", (long)(grown - cur));
    memset((void *)cur, 0x5a, 1024 * 1024);
    YESNO("brk memory usable", all_bytes((unsigned char *)cur + 1000, 1000, 0x5a));
    uintptr_t shrunk = (uintptr_t)syscall(SYS_brk, cur + PAGE);
    printf("brk shrink delta: %ld\n", (long)(shrunk - cur));
    uintptr_t regrown = (uintptr_t)syscall(SYS_brk, cur + 4 * PAGE);
    printf("brk regrow delta: %ld\n", (long)(regrown - cur));
    YESNO("regrown brk reads zero", all_bytes((unsigned char *)cur + 2 * PAGE, PAGE, 0));
    uintptr_t below = (uintptr_t)syscall(SYS_brk, 4096);
    YESNO("brk below start refused (unchanged)", below == regrown);
    syscall(SYS_brk, cur);

    /* anonymous mappings are zeroed and writable */
    size_t len = 16 * PAGE;
    unsigned char *a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(a != MAP_FAILED);
    YESNO("anon page aligned", ((uintptr_t)a & (PAGE - 1)) == 0);
    YESNO("anon zeroed", all_bytes(a, len, 0));
    memset(a, 0xab, len);
    YESNO("anon written", all_bytes(a, len, 0xab));

    /* MAP_FIXED over the middle replaces it with fresh zero pages */
    unsigned char *f = mmap(a + 4 * PAGE, 2 * PAGE, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    YESNO("MAP_FIXED at requested address", f == a + 4 * PAGE);
    YESNO("MAP_FIXED range zeroed", all_bytes(a + 4 * PAGE, 2 * PAGE, 0));
    YESNO("neighbours kept", all_bytes(a + 3 * PAGE, PAGE, 0xab) && all_bytes(a + 6 * PAGE, PAGE, 0xab));

    /* madvise(MADV_DONTNEED) on private anonymous memory reads back zeros */
    SHOW("madvise DONTNEED", madvise(a + 8 * PAGE, 2 * PAGE, MADV_DONTNEED));
    YESNO("DONTNEED range zeroed", all_bytes(a + 8 * PAGE, 2 * PAGE, 0));
    YESNO("after DONTNEED kept", all_bytes(a + 10 * PAGE, PAGE, 0xab));
    SHOW("madvise WILLNEED", madvise(a, PAGE, MADV_WILLNEED));
    SHOW("madvise unaligned", madvise(a + 1, PAGE, MADV_DONTNEED));

    /* mprotect */
    SHOW("mprotect read-only", mprotect(a, PAGE, PROT_READ));
    YESNO("read-only still readable", a[100] == 0xab);
    SHOW("mprotect back", mprotect(a, PAGE, PROT_READ | PROT_WRITE));
    a[100] = 1;
    SHOW("mprotect unaligned", mprotect(a + 1, PAGE, PROT_READ | PROT_WRITE));

    /* mremap: grow (may move) keeps contents, shrink in place */
    a[len - 1] = 0x77;
    unsigned char *g = mremap(a, len, 64 * PAGE, MREMAP_MAYMOVE);
    MUST(g != MAP_FAILED);
    YESNO("mremap keeps contents", g[100] == 1 && g[len - 1] == 0x77 && g[3 * PAGE] == 0xab);
    YESNO("mremap new part zeroed", all_bytes(g + len, 64 * PAGE - len, 0));
    memset(g + len, 0x11, 64 * PAGE - len);
    unsigned char *s = mremap(g, 64 * PAGE, 8 * PAGE, 0);
    YESNO("mremap shrink in place", s == g);
    YESNO("shrunk contents kept", s[100] == 1 && s[3 * PAGE] == 0xab);
    SHOW("mremap bad flags", (long)mremap(s, 8 * PAGE, 16 * PAGE, 0x40) == -1 ? -1 : 0);

    /* munmap */
    SHOW("munmap", munmap(s, 8 * PAGE));
    SHOW("munmap unaligned", munmap((char *)s + 1, PAGE));
    SHOW("munmap zero length", munmap(s, 0));
    SHOW("mmap zero length", (long)mmap(NULL, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == -1 ? -1 : 0);
    SHOW("mmap bad fd", (long)mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, 1234, 0) == -1 ? -1 : 0);
    SHOW("mmap no type", (long)mmap(NULL, PAGE, PROT_READ, MAP_ANONYMOUS, -1, 0) == -1 ? -1 : 0);

    /* a large sparse anonymous mapping: only touched pages matter */
    size_t big = 256UL * 1024 * 1024;
    unsigned char *b = mmap(NULL, big, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    MUST(b != MAP_FAILED);
    for (size_t off = 0; off < big; off += 16 * 1024 * 1024)
        b[off] = (unsigned char)(off >> 24);
    int ok = 1;
    for (size_t off = 0; off < big; off += 16 * 1024 * 1024)
        ok &= b[off] == (unsigned char)(off >> 24) && b[off + 1] == 0;
    YESNO("sparse 256MiB mapping", ok);
    SHOW("munmap big", munmap(b, big));

    /* file-backed MAP_PRIVATE of a file written in /tmp, with an offset */
    char path[256];
    snprintf(path, sizeof path, "%s/karn-mmap-XXXXXX", argc > 1 ? argv[1] : "/tmp");
    int fd = mkstemp(path);
    MUST(fd >= 0);
    unsigned char page[PAGE];
    for (int i = 0; i < 3; i++) {
        memset(page, 'A' + i, PAGE);
        MUST(write(fd, page, PAGE) == (ssize_t)PAGE);
    }
    MUST(write(fd, "tail", 4) == 4);
    unsigned char *m = mmap(NULL, 2 * PAGE + 4, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, PAGE);
    MUST(m != MAP_FAILED);
    YESNO("file map page 1 is B", all_bytes(m, PAGE, 'B'));
    YESNO("file map page 2 is C", all_bytes(m + PAGE, PAGE, 'C'));
    printf("file map tail: [%.4s]\n", m + 2 * PAGE);
    YESNO("past EOF in last page is zero", all_bytes(m + 2 * PAGE + 4, PAGE - 4, 0));
    m[0] = 'z';
    unsigned char c = 0;
    SHOW("pread after private write", pread(fd, &c, 1, PAGE));
    printf("file byte still: %c\n", c);
    SHOW("munmap file", munmap(m, 2 * PAGE + 4));
    unsigned char *ro = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, fd, 0);
    MUST(ro != MAP_FAILED);
    YESNO("read-only file map is A", all_bytes(ro, PAGE, 'A'));
    munmap(ro, PAGE);
    SHOW("mmap unaligned offset", (long)mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, fd, 100) == -1 ? -1 : 0);
    int wfd = open(path, O_WRONLY);
    SHOW("mmap write-only fd", (long)mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE, wfd, 0) == -1 ? -1 : 0);
    close(wfd);
    close(fd);
    unlink(path);

    /* malloc: many small blocks and a few large (mmap-backed) ones */
    unsigned long sum = 0;
    void *blocks[2000];
    for (int i = 0; i < 2000; i++) {
        blocks[i] = malloc((size_t)(i % 97) * 16 + 1);
        MUST(blocks[i] != NULL);
        memset(blocks[i], i & 0xff, (size_t)(i % 97) * 16 + 1);
    }
    for (int i = 0; i < 2000; i++) {
        sum += ((unsigned char *)blocks[i])[0];
        free(blocks[i]);
    }
    printf("malloc checksum: %lu\n", sum);
    for (int i = 1; i <= 4; i++) {
        size_t n = (size_t)i * 3 * 1024 * 1024;
        char *p = malloc(n);
        MUST(p != NULL);
        memset(p, i, n);
        char *q = realloc(p, 2 * n);
        MUST(q != NULL);
        YESNO("large realloc keeps data", q[n - 1] == i && q[0] == i);
        free(q);
    }
    return 0;
}
