/* splice, tee, vmsplice, copy_file_range and fallocate on files in the directory argv[1]
 * (a tmpfs or a host directory), pipes and a socket pair. */
#include "karntest.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

static char pattern[100000];

static long size_of(int fd)
{
    struct stat st;
    MUST(fstat(fd, &st) == 0);
    return (long)st.st_size;
}

static int same_as_pattern(int fd, long off, long len)
{
    static char buf[100000];
    if (pread(fd, buf, len, 0) != len)
        return 0;
    return memcmp(buf, pattern + off, len) == 0;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    char a[512], b[512], buf[256];
    int p[2], q[2], sv[2];
    loff_t off, off2;

    for (size_t i = 0; i < sizeof pattern; i++)
        pattern[i] = 'a' + i % 26;
    snprintf(a, sizeof a, "%s/calls-splice-a", dir);
    snprintf(b, sizeof b, "%s/calls-splice-b", dir);
    int fa = open(a, O_RDWR | O_CREAT | O_TRUNC, 0644);
    int fb = open(b, O_RDWR | O_CREAT | O_TRUNC, 0644);
    MUST(fa >= 0 && fb >= 0);
    MUST(write(fa, pattern, sizeof pattern) == sizeof pattern);
    MUST(pipe(p) == 0 && pipe(q) == 0);

    /* splice: file -> pipe -> file */
    off = 1000;
    SHOW("splice file->pipe at offset", splice(fa, &off, p[1], NULL, 5000, 0));
    printf("offset now %ld, file position %ld\n", (long)off, (long)lseek(fa, 0, SEEK_CUR));
    SHOW("splice pipe->file", splice(p[0], NULL, fb, NULL, 8000, 0));
    YESNO("copied the right bytes", same_as_pattern(fb, 1000, 5000) && size_of(fb) == 5000);
    MUST(lseek(fa, 0, SEEK_SET) == 0);
    SHOW("splice file->pipe at the file position", splice(fa, NULL, p[1], NULL, 100, 0));
    printf("file position %ld\n", (long)lseek(fa, 0, SEEK_CUR));
    SHOW("read", read(p[0], buf, sizeof buf));
    YESNO("from the start", memcmp(buf, pattern, 100) == 0);
    off = 0;
    SHOW("splice offset on a pipe", splice(p[0], &off, fb, NULL, 10, 0));
    SHOW("splice file->file", splice(fa, NULL, fb, NULL, 10, 0));
    SHOW("splice bad flags", splice(fa, NULL, p[1], NULL, 10, 0x100));
    SHOW("splice from an empty pipe, non-blocking", splice(p[0], NULL, fb, NULL, 10, SPLICE_F_NONBLOCK));
    SHOW("splice 0 bytes", splice(fa, NULL, p[1], NULL, 0, 0));
    off = sizeof pattern;
    SHOW("splice at end of file", splice(fa, &off, p[1], NULL, 10, 0));

    /* pipe <-> socket */
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    MUST(write(p[1], "through a socket", 16) == 16);
    SHOW("splice pipe->socket", splice(p[0], NULL, sv[0], NULL, 100, 0));
    SHOW("splice socket->pipe", splice(sv[1], NULL, q[1], NULL, 100, 0));
    memset(buf, 0, sizeof buf);
    SHOW("read", read(q[0], buf, sizeof buf));
    printf("got %s\n", buf);

    /* tee */
    MUST(write(p[1], "abcdef", 6) == 6);
    SHOW("tee", tee(p[0], q[1], 100, 0));
    memset(buf, 0, sizeof buf);
    SHOW("read the copy", read(q[0], buf, sizeof buf));
    printf("copy %s\n", buf);
    memset(buf, 0, sizeof buf);
    SHOW("read the original", read(p[0], buf, sizeof buf));
    printf("original %s\n", buf);
    SHOW("tee a pipe to itself", tee(p[0], p[1], 10, 0));
    SHOW("tee a file", tee(fa, q[1], 10, 0));
    SHOW("tee from an empty pipe, non-blocking", tee(p[0], q[1], 10, SPLICE_F_NONBLOCK));

    /* vmsplice */
    struct iovec iov[2] = {{"vm", 2}, {"splice", 6}};
    SHOW("vmsplice into a pipe", vmsplice(p[1], iov, 2, 0));
    memset(buf, 0, sizeof buf);
    SHOW("read", read(p[0], buf, sizeof buf));
    printf("got %s\n", buf);
    MUST(write(p[1], "back", 4) == 4);
    char out[8] = {0};
    struct iovec rd = {out, sizeof out - 1};
    SHOW("vmsplice out of a pipe", vmsplice(p[0], &rd, 1, 0));
    printf("got %s\n", out);
    SHOW("vmsplice a file", vmsplice(fa, iov, 1, 0));

    /* copy_file_range */
    MUST(ftruncate(fb, 0) == 0 && lseek(fb, 0, SEEK_SET) == 0 && lseek(fa, 0, SEEK_SET) == 0);
    SHOW("copy_file_range at positions", copy_file_range(fa, NULL, fb, NULL, 3000, 0));
    printf("positions %ld %ld\n", (long)lseek(fa, 0, SEEK_CUR), (long)lseek(fb, 0, SEEK_CUR));
    off = 99000;
    off2 = 3000;
    SHOW("copy_file_range past the end", copy_file_range(fa, &off, fb, &off2, 5000, 0));
    printf("offsets %ld %ld size %ld\n", (long)off, (long)off2, size_of(fb));
    SHOW("copy_file_range at the end", copy_file_range(fa, &off, fb, &off2, 10, 0));
    off = 0;
    off2 = 10;
    SHOW("copy_file_range overlapping", copy_file_range(fa, &off, fa, &off2, 100, 0));
    SHOW("copy_file_range flags", copy_file_range(fa, NULL, fb, NULL, 10, 1));
    SHOW("copy_file_range from a pipe", copy_file_range(p[0], NULL, fb, NULL, 10, 0));

    /* fallocate */
    MUST(ftruncate(fb, 0) == 0);
    SHOW("fallocate", fallocate(fb, 0, 0, 8192));
    printf("size %ld\n", size_of(fb));
    SHOW("fallocate KEEP_SIZE", fallocate(fb, FALLOC_FL_KEEP_SIZE, 8192, 8192));
    printf("size %ld\n", size_of(fb));
    MUST(pwrite(fb, pattern, 8192, 0) == 8192);
    SHOW("fallocate PUNCH_HOLE", fallocate(fb, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096));
    MUST(pread(fb, buf, 16, 4096) == 16);
    YESNO("the hole reads zeros", memcmp(buf, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16) == 0);
    MUST(pread(fb, buf, 16, 0) == 16);
    YESNO("the rest is kept", memcmp(buf, pattern, 16) == 0);
    printf("size %ld\n", size_of(fb));
    SHOW("fallocate PUNCH_HOLE without KEEP_SIZE", fallocate(fb, FALLOC_FL_PUNCH_HOLE, 0, 10));
    SHOW("fallocate length 0", fallocate(fb, 0, 0, 0));
    SHOW("fallocate on a pipe", fallocate(p[1], 0, 0, 10));
    int ro = open(a, O_RDONLY);
    SHOW("fallocate read-only", fallocate(ro, 0, 0, 10));
    SHOW("unlink", unlink(a) + unlink(b));
    return 0;
}
