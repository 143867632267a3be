/* Opens the FIFO argv[1] for writing while the fast transport's server is awake (a thread
   calls getpid all along) and the open's site is patched (argv[2], a plain file, opened
   first): the host process at the FIFO's other end must see one open and the bytes
   written, not an end of file first. Prints "wrote N". */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "server_awake.h"

int main(int argc, char **argv) {
    if (argc < 3)
        return 2;
    pthread_t spinner;
    pthread_create(&spinner, NULL, keep_server_awake, NULL);
    for (int i = 0; i < 200; i++) {
        int fd = open(argv[2], O_RDONLY);
        if (fd >= 0)
            close(fd);
    }
    int fd = open(argv[1], O_WRONLY);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    const char *msg = "hello from the guest\n";
    ssize_t n = write(fd, msg, strlen(msg));
    close(fd);
    stop_server_awake = 1;
    pthread_join(spinner, NULL);
    printf("wrote %zd\n", n);
    return 0;
}
