/* Blocking stream sends much larger than the socket's buffer, to a slow reader: each
 * send goes out in parts and waits between them. Every byte must arrive once, in order
 * (the reader checks a running pattern), whichever way karn serves the sends. Between
 * sends, a burst of cheap calls (the fast transport's server serves a send only when it
 * is awake for a busy thread). */
#include "karntest.h"

#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#define TOTAL (4 << 20)
#define CHUNK (96 << 10)

static int fds[2];
static long received, misplaced;

static unsigned char pattern(long i) { return (unsigned char)(i * 131 + (i >> 12)); }

static void *reader(void *arg)
{
    (void)arg;
    unsigned char buf[8192];
    for (;;) {
        ssize_t n = read(fds[1], buf, sizeof buf);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++)
            misplaced += buf[i] != pattern(received + i);
        received += n;
        usleep(50); /* slower than the writer: its sends fill the buffer and wait */
    }
    return NULL;
}

int main(void)
{
    static unsigned char data[TOTAL];
    for (long i = 0; i < TOTAL; i++)
        data[i] = pattern(i);
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    int small = 16384;
    MUST(setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
    pthread_t t;
    MUST(pthread_create(&t, NULL, reader, NULL) == 0);
    long sent = 0, calls = 0, short_sends = 0;
    while (sent < TOTAL) {
        long want = TOTAL - sent < CHUNK ? TOTAL - sent : CHUNK;
        for (int i = 0; i < 300; i++)
            getppid();
        ssize_t n = send(fds[0], data + sent, want, 0);
        MUST(n > 0);
        short_sends += n < want;
        sent += n;
        calls++;
    }
    close(fds[0]);
    MUST(pthread_join(t, NULL) == 0);
    printf("sent %ld bytes, received %ld, misplaced %ld, short sends %ld\n", sent, received,
           misplaced, short_sends);
    return 0;
}
