/* FIFO opens that wait for their partner while the fast transport's server is awake (a
   thread calls getpid all along): each round a reader and a writer open one FIFO, the
   one that comes first waits; a byte goes through, the reader then sees end of file; with
   both ends closed again a non-blocking writer's open must fail with ENXIO (an end
   counted twice would let it open). Prints what it saw; native and karn must agree. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server_awake.h"

static const char *path;

static void *writer(void *arg) {
    (void)arg;
    int fd = open(path, O_WRONLY);
    if (fd < 0 || write(fd, "x", 1) != 1)
        perror("writer");
    close(fd);
    return NULL;
}

int main(int argc, char **argv) {
    char name[4096];
    snprintf(name, sizeof name, "%s/fifo_open_fast", argv[1]);
    path = name;
    int rounds = atoi(argv[2]);
    unlink(path);
    if (mkfifo(path, 0600) != 0) {
        perror("mkfifo");
        return 1;
    }
    pthread_t spinner;
    pthread_create(&spinner, NULL, keep_server_awake, NULL);
    int passed = 0, eof = 0, enxio = 0;
    for (int i = 0; i < rounds; i++) {
        pthread_t w;
        pthread_create(&w, NULL, writer, NULL);
        int fd = open(path, O_RDONLY);
        char c;
        if (fd >= 0 && read(fd, &c, 1) == 1 && c == 'x')
            passed++;
        pthread_join(w, NULL);
        if (fd >= 0 && read(fd, &c, 1) == 0)
            eof++;
        close(fd);
        int late = open(path, O_WRONLY | O_NONBLOCK);
        if (late < 0 && errno == ENXIO)
            enxio++;
        else if (late >= 0)
            close(late);
    }
    stop_server_awake = 1;
    pthread_join(spinner, NULL);
    unlink(path);
    printf("rounds %d: byte through %d, end of file %d, ENXIO %d\n", rounds, passed, eof,
           enxio);
    return 0;
}
