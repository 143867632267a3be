/* FIFOs in the directory argv[1]: mkfifo/mknod, stat, Linux's open rules (a reader
 * waits for a writer and a writer for a reader, O_NONBLOCK, O_RDWR, ENXIO), data through
 * the FIFO between threads, EOF and EPIPE, an interrupted open. */
#include "karntest.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <unistd.h>

static char path[512];

static void *writer(void *arg)
{
    (void)arg;
    int fd = open(path, O_WRONLY); /* waits for the reader */
    if (fd < 0) {
        printf("writer open failed: %s\n", errno_name(errno));
        return NULL;
    }
    for (int i = 0; i < 100; i++)
        if (write(fd, "0123456789", 10) != 10)
            printf("short write\n");
    close(fd);
    return NULL;
}

static void *reader(void *arg)
{
    (void)arg;
    int fd = open(path, O_RDONLY); /* waits for the writer */
    char buf[64];
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf);
    printf("reader got %zd bytes: %.*s\n", n, (int)(n > 0 ? n : 0), buf);
    close(fd);
    return NULL;
}

static void on_alarm(int sig) { (void)sig; }

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    struct stat st;
    char other[512], buf[2048];
    pthread_t th;

    snprintf(path, sizeof path, "%s/calls-fifo", dir);
    snprintf(other, sizeof other, "%s/calls-fifo-2", dir);
    unlink(path);
    unlink(other);
    SHOW("mkfifo", mkfifo(path, 0640));
    SHOW("mkfifo again", mkfifo(path, 0640));
    SHOW("stat", stat(path, &st));
    printf("fifo %d mode %o size %ld\n", S_ISFIFO(st.st_mode), st.st_mode & 07777, (long)st.st_size);
    SHOW("mknod S_IFIFO", mknod(other, S_IFIFO | 0600, 0));
    SHOW("stat", stat(other, &st));
    printf("fifo %d mode %o\n", S_ISFIFO(st.st_mode), st.st_mode & 07777);
    SHOW("unlink", unlink(other));
    SHOW("mknod regular", mknod(other, S_IFREG | 0600, 0));
    SHOW("stat", stat(other, &st));
    printf("regular %d size %ld\n", S_ISREG(st.st_mode), (long)st.st_size);
    SHOW("unlink", unlink(other));
    SHOW("mknod no type", mknod(other, 0600, 0));
    SHOW("unlink", unlink(other));
    SHOW("mknod bad type", mknod(other, 0170000 | 0600, 0));
    SHOW("mknodat S_IFIFO", mknodat(AT_FDCWD, other, S_IFIFO | 0600, 0));
    SHOW("unlink", unlink(other));

    /* non-blocking rules */
    SHOW("open WRONLY|NONBLOCK without a reader", open(path, O_WRONLY | O_NONBLOCK));
    int r = open(path, O_RDONLY | O_NONBLOCK);
    SHOW("open RDONLY|NONBLOCK", r >= 0 ? 0 : -1);
    SHOW("read, no writer ever", read(r, buf, 10));
    int w = open(path, O_WRONLY | O_NONBLOCK);
    SHOW("open WRONLY|NONBLOCK with a reader", w >= 0 ? 0 : -1);
    SHOW("fstat writer", fstat(w, &st));
    printf("fifo %d\n", S_ISFIFO(st.st_mode));
    SHOW("read, writer idle", read(r, buf, 10));
    SHOW("write", write(w, "hello", 5));
    SHOW("read", read(r, buf, 10));
    SHOW("lseek", lseek(r, 0, SEEK_SET));
    SHOW("close writer", close(w));
    SHOW("read after the writer closed", read(r, buf, 10));
    SHOW("close reader", close(r));
    w = open(path, O_RDWR);
    SHOW("open RDWR never waits", w >= 0 ? 0 : -1);
    SHOW("write to itself", write(w, "abc", 3));
    SHOW("read from itself", read(w, buf, 10));
    SHOW("close", close(w));

    /* a blocking reader waits for a writer thread, and the data goes through */
    MUST(pthread_create(&th, NULL, writer, NULL) == 0);
    r = open(path, O_RDONLY);
    SHOW("blocking open RDONLY", r >= 0 ? 0 : -1);
    size_t total = 0;
    ssize_t n;
    while ((n = read(r, buf, sizeof buf)) > 0)
        total += n;
    printf("read %zu bytes then %zd\n", total, n);
    close(r);
    pthread_join(th, NULL);

    /* a blocking writer waits for a reader thread */
    MUST(pthread_create(&th, NULL, reader, NULL) == 0);
    w = open(path, O_WRONLY);
    ssize_t wrote = write(w, "to the reader", 13);
    pthread_join(th, NULL); /* the reader prints first */
    SHOW("blocking open WRONLY", w >= 0 ? 0 : -1);
    printf("wrote %zd\n", wrote);
    signal(SIGPIPE, SIG_IGN);
    SHOW("write after the reader closed", write(w, "x", 1));
    close(w);

    /* a signal interrupts a blocked open (no SA_RESTART) */
    struct sigaction sa = {0};
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 0}, {0, 200000}};
    setitimer(ITIMER_REAL, &it, NULL);
    SHOW("open RDONLY with no writer, interrupted", open(path, O_RDONLY));

    SHOW("unlink fifo", unlink(path));
    return 0;
}
