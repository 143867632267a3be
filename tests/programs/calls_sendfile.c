/* sendfile(2): what it reads from (a regular file, with and without an offset, a character
   device) and what it refuses with EINVAL (a pipe, a socket, an eventfd: Go falls back
   to read and write on that EINVAL). Prints results and errno names. argv[1]: a
   writable directory. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *err(ssize_t n) {
    if (n >= 0)
        return "";
    switch (errno) {
    case EINVAL: return " EINVAL";
    case EBADF: return " EBADF";
    case EAGAIN: return " EAGAIN";
    default: return " other";
    }
}

static void report(const char *what, ssize_t n) {
    printf("%-28s %zd%s\n", what, n, err(n));
}

int main(int argc, char **argv) {
    char src_path[4096], dst_path[4096];
    snprintf(src_path, sizeof src_path, "%s/sendfile.in", argv[1]);
    snprintf(dst_path, sizeof dst_path, "%s/sendfile.out", argv[1]);
    int src = open(src_path, O_CREAT | O_TRUNC | O_RDWR, 0600);
    int dst = open(dst_path, O_CREAT | O_TRUNC | O_RDWR, 0600);
    write(src, "0123456789abcdef", 16);

    lseek(src, 4, SEEK_SET);
    report("file, its own offset", sendfile(dst, src, NULL, 6));
    printf("%-28s %ld\n", "  the offset after", (long)lseek(src, 0, SEEK_CUR));
    off_t at = 12;
    report("file, offset given", sendfile(dst, src, &at, 100));
    printf("%-28s %ld, own %ld\n", "  offset after", (long)at, (long)lseek(src, 0, SEEK_CUR));
    int zero = open("/dev/zero", O_RDONLY);
    report("/dev/zero", sendfile(dst, zero, NULL, 3));
    char out[64] = {0};
    ssize_t got = pread(dst, out, sizeof out - 1, 0);
    for (ssize_t i = 0; i < got; i++)
        if (out[i] == 0)
            out[i] = '.';
    printf("%-28s %s\n", "written", out);

    int p[2];
    pipe(p);
    write(p[1], "ab", 2);
    report("from a pipe", sendfile(dst, p[0], NULL, 2));
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    write(sv[1], "ab", 2);
    report("from a socket", sendfile(dst, sv[0], NULL, 2));
    int ev = eventfd(1, 0);
    report("from an eventfd", sendfile(dst, ev, NULL, 8));
    at = 0;
    report("into a pipe", sendfile(p[1], src, &at, 4));
    char back[8] = {0};
    read(p[0], back, 6);  /* "ab" written before, then the file's bytes */
    printf("%-28s %s\n", "  the pipe holds", back);
    report("bad in_fd", sendfile(dst, 999, NULL, 1));
    int wronly = open(dst_path, O_WRONLY);
    report("write-only in_fd", sendfile(dst, wronly, NULL, 1));
    unlink(src_path);
    unlink(dst_path);
    return 0;
}
