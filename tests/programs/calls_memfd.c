/* memfd_create: an anonymous file, its /proc/self/fd link, shared mappings of it, and
 * sealing (F_ADD_SEALS/F_GET_SEALS): what each seal forbids, and tmpfs files' seals. */
#include "karntest.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif

int main(void)
{
    char buf[64], link[128];
    struct stat st;

    int fd = memfd_create("calls-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    MUST(fd >= 0);
    SHOW("write", write(fd, "hello memfd", 11));
    SHOW("fstat", fstat(fd, &st));
    printf("size %ld nlink %ld regular %d mode %o\n", (long)st.st_size, (long)st.st_nlink,
           S_ISREG(st.st_mode), st.st_mode & 07777);
    snprintf(buf, sizeof buf, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(buf, link, sizeof link - 1);
    link[n > 0 ? n : 0] = 0;
    printf("link %s\n", link);
    SHOW("F_GETFD", fcntl(fd, F_GETFD));
    SHOW("F_GET_SEALS", fcntl(fd, F_GET_SEALS));

    /* a shared mapping writes through to the file */
    SHOW("ftruncate 4096", ftruncate(fd, 4096));
    char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    MUST(p != MAP_FAILED);
    printf("mapped reads: %.11s\n", p);
    memcpy(p, "HELLO", 5);
    SHOW("F_ADD_SEALS WRITE while mapped writable", fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE));
    SHOW("munmap", munmap(p, 4096));
    SHOW("pread", pread(fd, buf, 11, 0));
    printf("file reads: %.11s\n", buf);

    /* seals */
    SHOW("F_ADD_SEALS bad bits", fcntl(fd, F_ADD_SEALS, 0x1000));
    SHOW("F_ADD_SEALS SHRINK|GROW", fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW));
    SHOW("F_GET_SEALS", fcntl(fd, F_GET_SEALS));
    SHOW("ftruncate smaller", ftruncate(fd, 100));
    SHOW("ftruncate larger", ftruncate(fd, 8192));
    SHOW("pwrite past the end", pwrite(fd, "x", 1, 4096));
    SHOW("pwrite inside", pwrite(fd, "y", 1, 10));
    SHOW("F_ADD_SEALS WRITE", fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE));
    SHOW("write after F_SEAL_WRITE", pwrite(fd, "z", 1, 0));
    p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    printf("mmap shared writable after F_SEAL_WRITE: %s\n", p == MAP_FAILED ? errno_name(errno) : "ok");
    p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    printf("mmap shared read-only: %s\n", p == MAP_FAILED ? errno_name(errno) : "ok");
    if (p != MAP_FAILED)
        printf("reads %.11s\n", p);
    p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    printf("mmap private writable: %s\n", p == MAP_FAILED ? errno_name(errno) : "ok");
    SHOW("F_ADD_SEALS SEAL", fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL));
    SHOW("F_ADD_SEALS after SEAL", fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE));
    SHOW("F_GET_SEALS", fcntl(fd, F_GET_SEALS));

    /* reopened through /proc/self/fd: the same file, read-only cannot add seals */
    snprintf(buf, sizeof buf, "/proc/self/fd/%d", fd);
    int ro = open(buf, O_RDONLY);
    SHOW("reopen read-only", ro >= 0 ? 0 : -1);
    SHOW("F_GET_SEALS via the reopened fd", fcntl(ro, F_GET_SEALS));
    SHOW("pread via the reopened fd", pread(ro, buf, 5, 0));
    printf("reads %.5s\n", buf);

    int plain = memfd_create("no-sealing", 0);
    SHOW("F_GET_SEALS without MFD_ALLOW_SEALING", fcntl(plain, F_GET_SEALS));
    SHOW("F_ADD_SEALS without MFD_ALLOW_SEALING", fcntl(plain, F_ADD_SEALS, F_SEAL_WRITE));
    int rdonly_seal = memfd_create("ro", MFD_ALLOW_SEALING);
    int ro2;
    snprintf(buf, sizeof buf, "/proc/self/fd/%d", rdonly_seal);
    ro2 = open(buf, O_RDONLY);
    SHOW("F_ADD_SEALS on a read-only description", fcntl(ro2, F_ADD_SEALS, F_SEAL_WRITE));
    SHOW("F_SEAL_FUTURE_WRITE", fcntl(rdonly_seal, F_ADD_SEALS, F_SEAL_FUTURE_WRITE));
    SHOW("write after F_SEAL_FUTURE_WRITE", write(rdonly_seal, "a", 1));

    SHOW("memfd_create bad flags", memfd_create("x", 0x100));
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    SHOW("memfd_create long name", memfd_create(longname, 0));

    /* a tmpfs file is sealable, born with F_SEAL_SEAL; other files are not */
    int t = open("/dev/shm/calls-memfd-test", O_RDWR | O_CREAT | O_TRUNC, 0600);
    MUST(t >= 0);
    SHOW("F_GET_SEALS on a tmpfs file", fcntl(t, F_GET_SEALS));
    SHOW("F_ADD_SEALS on a tmpfs file", fcntl(t, F_ADD_SEALS, F_SEAL_WRITE));
    close(t);
    unlink("/dev/shm/calls-memfd-test");
    int pipefd[2];
    MUST(pipe(pipefd) == 0);
    SHOW("F_GET_SEALS on a pipe", fcntl(pipefd[0], F_GET_SEALS));
    return 0;
}
