/* A tree made in DIR before the first fork (nested directories, a file with a hard link,
 * a symlink, a FIFO, an owner, a read-only directory, an open file), then what a forked
 * child sees of it, and what the parent sees of the child's changes after wait. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void show(const char *who, const char *path) {
    struct stat st;
    const char *name = strrchr(path, '/') + 1;
    if (lstat(path, &st) != 0) {
        printf("%s: %s: missing\n", who, name);
        return;
    }
    printf("%s: %s mode %o links %lu owner %u:%u size %lld\n", who, name, st.st_mode,
           (unsigned long)st.st_nlink, st.st_uid, st.st_gid, (long long)st.st_size);
}

int main(int argc, char **argv) {
    int depth = atoi(argv[2]);
    char path[8192], deep[8192];
    snprintf(path, sizeof path, "%s/tree", argv[1]);
    if (mkdir(path, 0755) != 0) return 1;
    strcpy(deep, path);
    for (int i = 0; i < depth; i++) {
        strcat(deep, "/d");
        if (mkdir(deep, 0755) != 0) { perror("mkdir"); return 1; }
    }
    char file[8300], link2[8300], sym[8300], fifo[8300], ro[8300];
    snprintf(file, sizeof file, "%s/file", deep);
    snprintf(link2, sizeof link2, "%s/tree/hardlink", argv[1]);
    snprintf(sym, sizeof sym, "%s/tree/symlink", argv[1]);
    snprintf(fifo, sizeof fifo, "%s/tree/fifo", argv[1]);
    snprintf(ro, sizeof ro, "%s/tree/d", argv[1]);
    int fd = open(file, O_RDWR | O_CREAT, 0640);
    if (fd < 0 || write(fd, "0123456789", 10) != 10) return 1;
    lseek(fd, 4, SEEK_SET);
    if (link(file, link2) || symlink("d/d", sym) || mkfifo(fifo, 0600)) return 1;
    if (chown(link2, 1000, 1000) != 0) return 1;
    chmod(ro, 0555);
    pid_t pid = fork();
    if (pid == 0) {
        char buf[4] = {0};
        if (read(fd, buf, 3) != 3) return 2;  /* the shared offset moves to 7 */
        printf("child read %s\n", buf);
        show("child", file);
        show("child", link2);
        show("child", sym);
        show("child", fifo);
        show("child", ro);
        if (write(fd, "XY", 2) != 2) return 3;
        return 0;
    }
    int status;
    waitpid(pid, &status, 0);
    printf("child status %d, parent offset %ld\n", status, (long)lseek(fd, 0, SEEK_CUR));
    char all[16] = {0};
    pread(fd, all, sizeof all - 1, 0);
    printf("parent reads %s\n", all);
    show("parent", file);
    chmod(ro, 0755);
    return 0;
}
