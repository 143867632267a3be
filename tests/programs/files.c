/* File system calls on regular files in a fresh directory under /tmp (or argv[1]). */
#include "karntest.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_statx
#define SYS_statx 332
#endif
#ifndef AT_EMPTY_PATH
#define AT_EMPTY_PATH 0x1000
#endif

/* struct statx, spelled out so musl-gcc needs no kernel headers. */
struct kstatx_ts { int64_t tv_sec; uint32_t tv_nsec; int32_t reserved; };
struct kstatx {
    uint32_t stx_mask, stx_blksize;
    uint64_t stx_attributes;
    uint32_t stx_nlink, stx_uid, stx_gid;
    uint16_t stx_mode, spare0;
    uint64_t stx_ino, stx_size, stx_blocks, stx_attributes_mask;
    struct kstatx_ts stx_atime, stx_btime, stx_ctime, stx_mtime;
    uint32_t stx_rdev_major, stx_rdev_minor, stx_dev_major, stx_dev_minor;
    uint64_t spare2[14];
};
#define KSTATX_BASIC_STATS 0x7ffU

static void show_stat(const char *label, const struct stat *st)
{
    printf("%s: mode=%o size=%lld nlink=%ld uid=%d gid=%d reg=%d dir=%d\n", label,
           (unsigned)st->st_mode, (long long)st->st_size, (long)st->st_nlink,
           (int)st->st_uid, (int)st->st_gid, S_ISREG(st->st_mode) ? 1 : 0,
           S_ISDIR(st->st_mode) ? 1 : 0);
}

int main(int argc, char **argv)
{
    char dir[256];
    char path[512], path2[512];
    char buf[256];
    struct stat st, st2;
    time_t now = time(NULL);

    snprintf(dir, sizeof dir, "%s/karn-files-XXXXXX", argc > 1 ? argv[1] : "/tmp");
    umask(022);
    MUST(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/a.txt", dir);
    snprintf(path2, sizeof path2, "%s/b.txt", dir);

    /* open, write, close, lowest free fd numbers */
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0666);
    printf("open fd = %d\n", fd);
    SHOW("write", write(fd, "hello, world\n", 13));
    SHOW("write2", write(fd, "second line\n", 12));
    SHOW("fsync", fsync(fd));
    SHOW("fdatasync", fdatasync(fd));
    SHOW("read on O_WRONLY", read(fd, buf, 4));
    SHOW("close", close(fd));
    SHOW("close again", close(fd));

    /* read back, lseek, pread/pwrite keep the offset */
    fd = open(path, O_RDWR);
    printf("reopen fd = %d\n", fd);
    memset(buf, 0, sizeof buf);
    SHOW("read 5", read(fd, buf, 5));
    printf("data: [%s]\n", buf);
    SHOW("lseek cur", lseek(fd, 0, SEEK_CUR));
    SHOW("lseek end", lseek(fd, 0, SEEK_END));
    SHOW("lseek set 7", lseek(fd, 7, SEEK_SET));
    memset(buf, 0, sizeof buf);
    SHOW("read 5 at 7", read(fd, buf, 5));
    printf("data: [%s]\n", buf);
    SHOW("lseek negative", lseek(fd, -100, SEEK_SET));
    SHOW("lseek bad whence", lseek(fd, 0, 42));
    memset(buf, 0, sizeof buf);
    SHOW("pread 4 at 0", pread(fd, buf, 4, 0));
    printf("data: [%s]\n", buf);
    SHOW("lseek cur after pread", lseek(fd, 0, SEEK_CUR));
    SHOW("pwrite", pwrite(fd, "HELLO", 5, 0));
    SHOW("lseek cur after pwrite", lseek(fd, 0, SEEK_CUR));
    SHOW("read at eof", (lseek(fd, 0, SEEK_END), read(fd, buf, 10)));

    /* readv / writev */
    struct iovec wv[3] = {{"abc", 3}, {"", 0}, {"defgh\n", 6}};
    SHOW("writev", writev(fd, wv, 3));
    char r1[4] = {0}, r2[8] = {0};
    struct iovec rv[2] = {{r1, 3}, {r2, 7}};
    SHOW("lseek 0", lseek(fd, 0, SEEK_SET));
    SHOW("readv", readv(fd, rv, 2));
    printf("readv: [%s] [%s]\n", r1, r2);

    /* a hole past the end reads back as zeros */
    SHOW("lseek past end", lseek(fd, 100, SEEK_END));
    SHOW("write after hole", write(fd, "X", 1));
    SHOW("pread in hole", pread(fd, buf, 8, 40));
    int zeros = 1;
    for (int i = 0; i < 8; i++)
        zeros &= buf[i] == 0;
    YESNO("hole is zeros", zeros);

    /* fstat / stat / lstat / statx agree */
    SHOW("fstat", fstat(fd, &st));
    show_stat("fstat", &st);
    YESNO("mtime recent", st.st_mtime >= now - 5 && st.st_mtime <= now + 5);
    SHOW("stat", stat(path, &st2));
    show_stat("stat", &st2);
    YESNO("same ino", st.st_ino == st2.st_ino && st.st_dev == st2.st_dev);
    SHOW("lstat", lstat(path, &st2));
    show_stat("lstat", &st2);
    SHOW("fstatat", fstatat(AT_FDCWD, path, &st2, 0));
    show_stat("fstatat", &st2);
    struct kstatx sx;
    memset(&sx, 0, sizeof sx);
    SHOW("statx", syscall(SYS_statx, AT_FDCWD, path, 0, KSTATX_BASIC_STATS, &sx));
    printf("statx: mode=%o size=%llu nlink=%u basic=%d ino_same=%d\n", sx.stx_mode,
           (unsigned long long)sx.stx_size, sx.stx_nlink,
           (sx.stx_mask & KSTATX_BASIC_STATS) == KSTATX_BASIC_STATS,
           sx.stx_ino == (uint64_t)st.st_ino);
    memset(&sx, 0, sizeof sx);
    SHOW("statx empty path", syscall(SYS_statx, fd, "", AT_EMPTY_PATH, KSTATX_BASIC_STATS, &sx));
    printf("statx fd: size=%llu\n", (unsigned long long)sx.stx_size);
    SHOW("stat missing", stat("/tmp/karn-no-such-file/x", &st2));
    SHOW("stat through file", stat("/dev/null/x", &st2));

    /* ftruncate shrinks and grows */
    SHOW("ftruncate 4", ftruncate(fd, 4));
    fstat(fd, &st);
    printf("size after truncate: %lld\n", (long long)st.st_size);
    SHOW("ftruncate 4096", ftruncate(fd, 4096));
    fstat(fd, &st);
    printf("size after grow: %lld\n", (long long)st.st_size);
    memset(buf, 1, sizeof buf);
    SHOW("pread grown", pread(fd, buf, 8, 0));
    printf("grown: [%.4s] %d %d\n", buf, buf[4], buf[7]);
    SHOW("ftruncate negative", ftruncate(fd, -1));
    SHOW("close", close(fd));

    /* O_APPEND, O_EXCL, O_TRUNC, O_DIRECTORY, ENOENT */
    fd = open(path, O_WRONLY | O_APPEND);
    SHOW("append write", write(fd, "END", 3));
    SHOW("append pos", lseek(fd, 0, SEEK_CUR));
    close(fd);
    SHOW("O_EXCL existing", open(path, O_CREAT | O_EXCL | O_WRONLY, 0600));
    SHOW("O_DIRECTORY on file", open(path, O_RDONLY | O_DIRECTORY));
    SHOW("open missing", open("/tmp/karn-no-such-file", O_RDONLY));
    SHOW("open missing dir", open("/tmp/karn-no-such-dir/x", O_CREAT | O_WRONLY, 0600));
    fd = open(path, O_RDWR | O_TRUNC);
    fstat(fd, &st);
    printf("size after O_TRUNC: %lld\n", (long long)st.st_size);
    SHOW("write on dir fd", write(open(dir, O_RDONLY | O_DIRECTORY), "x", 1));
    SHOW("read dir fd", read(open(dir, O_RDONLY | O_DIRECTORY), buf, 1));
    SHOW("close", close(fd));

    /* file mode from open honours umask */
    umask(027);
    fd = open(path2, O_CREAT | O_WRONLY, 0777);
    fstat(fd, &st);
    printf("umask 027 mode: %o\n", (unsigned)(st.st_mode & 07777));
    close(fd);
    printf("umask old: %o\n", (unsigned)umask(022));

    /* access / faccessat */
    SHOW("access F_OK", access(path, F_OK));
    SHOW("access R_OK", access(path, R_OK));
    SHOW("access missing", access("/tmp/karn-no-such-file", F_OK));
    SHOW("faccessat", faccessat(AT_FDCWD, path, R_OK, 0));
    SHOW("faccessat AT_EACCESS", faccessat(AT_FDCWD, path, R_OK, AT_EACCESS));
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    SHOW("faccessat dirfd", faccessat(dfd, "a.txt", F_OK, 0));
    SHOW("faccessat dirfd missing", faccessat(dfd, "zzz", F_OK, 0));
    SHOW("openat dirfd", (fd = openat(dfd, "a.txt", O_RDONLY)));
    close(fd);

    /* rename, renameat2 NOREPLACE, unlink */
    SHOW("rename", rename(path2, path));
    SHOW("stat old name", stat(path2, &st));
    SHOW("renameat", renameat(dfd, "a.txt", dfd, "c.txt"));
    fd = openat(dfd, "d.txt", O_CREAT | O_WRONLY, 0644);
    close(fd);
    SHOW("renameat2 NOREPLACE", syscall(SYS_renameat2, dfd, "c.txt", dfd, "d.txt", 1));
    SHOW("rename missing", rename("/tmp/karn-no-such-file", path));
    SHOW("unlink", unlinkat(dfd, "c.txt", 0));
    SHOW("unlink d", unlinkat(dfd, "d.txt", 0));
    SHOW("unlink missing", unlink(path));
    SHOW("unlink dir", unlink(dir));
    close(dfd);

    /* readlink on a regular file is EINVAL */
    fd = open(path, O_CREAT | O_WRONLY, 0644);
    close(fd);
    SHOW("readlink regular", readlink(path, buf, sizeof buf));
    SHOW("readlinkat regular", readlinkat(AT_FDCWD, path, buf, sizeof buf));
    unlink(path);

    SHOW("rmdir", rmdir(dir));
    SHOW("stat removed dir", stat(dir, &st));
    return 0;
}
