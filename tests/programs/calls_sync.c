/* sync(2) and syncfs(2): both succeed on the files a program has (a file in argv[1], a
   pipe, a directory); syncfs of a closed fd is EBADF. */
#include "karntest.h"
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    char path[4096];
    snprintf(path, sizeof path, "%s/synced", argc > 1 ? argv[1] : "/tmp");
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    MUST(fd >= 0);
    MUST(write(fd, "data\n", 5) == 5);
    sync();
    printf("sync returned\n");
    SHOW("raw sync", syscall(SYS_sync));
    SHOW("syncfs of the file", syncfs(fd));
    int dir = open(argc > 1 ? argv[1] : "/tmp", O_RDONLY | O_DIRECTORY);
    SHOW("syncfs of its directory", syncfs(dir));
    int p[2];
    MUST(pipe(p) == 0);
    SHOW("syncfs of a pipe", syncfs(p[0]));
    close(fd);
    SHOW("syncfs of a closed fd", syncfs(fd));
    SHOW("syncfs of -1", syncfs(-1));
    MUST(unlink(path) == 0);
    return 0;
}
