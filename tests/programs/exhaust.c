/* Resource exhaustion, one mode per run; prints how far it got and the error that
 * stopped it:  mem | stackmem | threads | fds | tmpfs PATH | cpu
 * (stackmem: MAP_STACK memory, which the limit does not charge up front) */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

static void *block(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    long n = 0;
    if (!strcmp(mode, "mem") || !strcmp(mode, "stackmem")) { /* touch every page */
        int extra = !strcmp(mode, "stackmem") ? MAP_STACK : 0;
        for (;;) {
            char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | extra, -1, 0);
            if (p == MAP_FAILED)
                break;
            memset(p, 0xa5, 1 << 20);
            n++;
        }
        printf("mem %ld MiB: %s\n", n, strerror(errno));
    } else if (!strcmp(mode, "threads")) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        int err = 0;
        for (;;) {
            pthread_t t;
            err = pthread_create(&t, &attr, block, NULL);
            if (err)
                break;
            n++;
        }
        printf("threads %ld: %s\n", n, strerror(err));
    } else if (!strcmp(mode, "fds")) {
        while (open("/dev/null", O_RDONLY) >= 0)
            n++;
        printf("fds %ld: %s\n", n, strerror(errno));
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_max *= 2;
        rl.rlim_cur = rl.rlim_max;
        printf("raise: %s\n", setrlimit(RLIMIT_NOFILE, &rl) ? strerror(errno) : "ok");
    } else if (!strcmp(mode, "tmpfs")) {
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0600);
        static char chunk[65536];
        memset(chunk, 'x', sizeof chunk);
        ssize_t got;
        while ((got = write(fd, chunk, sizeof chunk)) > 0)
            n += got;
        printf("tmpfs %ld bytes: %s\n", n, strerror(errno));
    } else if (!strcmp(mode, "cpu")) {
        volatile unsigned long x = 0;
        for (;;)
            x++;
    } else {
        fprintf(stderr, "usage: exhaust mem|stackmem|threads|fds|tmpfs PATH|cpu\n");
        return 2;
    }
    fflush(stdout);
    return 0;
}
