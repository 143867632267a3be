/* Hostile sender and plain receiver for the guard tests (tests/test_system_hostile.py).
 *   send PORT HEX...        each HEX (the message's bytes in hex) is one write() to PORT
 *   flood PORT N MSG        write MSG to PORT N times, then print how many writes succeeded
 *   recv PORT               print each message read from PORT as one line of hex, forever
 *   spew MIB                write MIB mebibytes of text lines to stdout, then "spewed MIB"
 *   idle                    sleep until killed
 * Hex keeps every byte (invalid UTF-8, NUL) intact through argv and the log. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int open_port(const char *name, int flags)
{
    char path[256];
    snprintf(path, sizeof path, "/dev/ports/%s", name);
    int fd = open(path, flags);
    if (fd < 0) {
        printf("open %s: %s\n", path, strerror(errno));
        exit(2);
    }
    return fd;
}

static size_t unhex(const char *hex, unsigned char *out, size_t cap)
{
    size_t n = 0;
    for (; hex[0] && hex[1] && n < cap; hex += 2) {
        unsigned int byte;
        sscanf(hex, "%2x", &byte);
        out[n++] = (unsigned char)byte;
    }
    return n;
}

int main(int argc, char **argv)
{
    static unsigned char buf[65536];
    if (argc >= 3 && !strcmp(argv[1], "send")) {
        int fd = open_port(argv[2], O_WRONLY);
        for (int i = 3; i < argc; i++) {
            size_t n = unhex(argv[i], buf, sizeof buf);
            if (write(fd, buf, n) != (ssize_t)n)
                printf("write %d: %s\n", i - 3, strerror(errno));
        }
        printf("sent %d\n", argc - 3);
        return 0;
    }
    if (argc >= 5 && !strcmp(argv[1], "flood")) {
        int fd = open_port(argv[2], O_WRONLY), ok = 0, count = atoi(argv[3]);
        for (int i = 0; i < count; i++)
            ok += write(fd, argv[4], strlen(argv[4])) == (ssize_t)strlen(argv[4]);
        printf("flooded %d\n", ok);
        return 0;
    }
    if (argc >= 3 && !strcmp(argv[1], "recv")) {
        int fd = open_port(argv[2], O_RDONLY);
        for (;;) {
            ssize_t n = read(fd, buf, sizeof buf);
            if (n < 0) {
                printf("read: %s\n", strerror(errno));
                return 1;
            }
            for (ssize_t i = 0; i < n; i++)
                printf("%02x", buf[i]);
            printf("\n");
            fflush(stdout);
        }
    }
    if (argc >= 3 && !strcmp(argv[1], "spew")) {
        memset(buf, 'x', sizeof buf);
        for (size_t i = 63; i < sizeof buf; i += 64)
            buf[i] = '\n';
        for (int i = 0; i < atoi(argv[2]) * 16; i++)
            if (write(1, buf, sizeof buf) != (ssize_t)sizeof buf)
                return 1;
        printf("spewed %s\n", argv[2]);
        return 0;
    }
    if (argc >= 2 && !strcmp(argv[1], "idle"))
        for (;;)
            pause();
    printf("usage: guard_hostile send|flood|recv|spew|idle ...\n");
    return 2;
}
