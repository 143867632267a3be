/* File locks between processes, as Linux keeps them: POSIX record locks (a conflict
 * across processes, F_GETLK naming the holder, F_SETLKW waiting for a release and
 * interrupted by a signal, release when the holder ends), OFD locks and flock (shared by
 * a forked child through the inherited open file, conflicting with another open).
 * argv[1]: the directory for the file (karn: /tmp, which the first fork puts on the host). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

static char path[256];

static int lock(int fd, int cmd, short type) {
    struct flock f = {.l_type = type, .l_whence = SEEK_SET, .l_start = 10, .l_len = 5};
    return fcntl(fd, cmd, &f);
}

static const char *res(int r) { return r ? strerror(errno) : "ok"; }

static void on_alarm(int sig) { (void)sig; }

static char wait_byte(int fd) {
    char b = 0;
    read(fd, &b, 1);
    return b;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    snprintf(path, sizeof path, "%s/karn-locks-%d", argc > 1 ? argv[1] : "/tmp", getpid());
    close(open(path, O_RDWR | O_CREAT, 0644));
    int to_child[2], to_parent[2];
    pipe(to_child);
    pipe(to_parent);

    /* POSIX locks: the child holds a read lock */
    pid_t child = fork();
    if (child == 0) {
        int fd = open(path, O_RDWR);
        printf("child F_SETLK read: %s\n", res(lock(fd, F_SETLK, F_RDLCK)));
        write(to_parent[1], "r", 1);
        wait_byte(to_child[0]); /* then ends, holding it */
        _exit(0);
    }
    wait_byte(to_parent[0]);
    int fd = open(path, O_RDWR);
    printf("parent F_SETLK write: %s\n", res(lock(fd, F_SETLK, F_WRLCK)));
    printf("parent F_SETLK read: %s\n", res(lock(fd, F_SETLK, F_RDLCK)));
    lock(fd, F_SETLK, F_UNLCK);
    struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    fcntl(fd, F_GETLK, &q);
    printf("F_GETLK: %s held by the child %d, start %ld len %ld\n",
           q.l_type == F_RDLCK ? "read lock" : "other", q.l_pid == child, (long)q.l_start,
           (long)q.l_len);
    write(to_child[1], "e", 1);
    waitpid(child, NULL, 0);
    printf("after the holder ended, F_SETLK write: %s\n", res(lock(fd, F_SETLK, F_WRLCK)));

    /* F_SETLKW: waits while the parent holds the lock, gets it once released */
    child = fork();
    if (child == 0) {
        int mine = open(path, O_RDWR);
        int r = lock(mine, F_SETLKW, F_WRLCK);
        write(to_parent[1], r ? "f" : "g", 1);
        wait_byte(to_child[0]);
        _exit(0);
    }
    fcntl(to_parent[0], F_SETFL, O_NONBLOCK);
    char b = 0;
    printf("while the parent holds it, the child has it: %s\n",
           read(to_parent[0], &b, 1) == 1 ? "yes" : "no");
    fcntl(to_parent[0], F_SETFL, 0);
    lock(fd, F_SETLK, F_UNLCK);
    printf("after the release the child got it: %s\n", wait_byte(to_parent[0]) == 'g' ? "yes" : "no");
    printf("now the parent's F_SETLK: %s\n", res(lock(fd, F_SETLK, F_WRLCK)));
    write(to_child[1], "e", 1);
    waitpid(child, NULL, 0);

    /* F_SETLKW interrupted by a signal (no SA_RESTART): EINTR */
    lock(fd, F_SETLK, F_WRLCK);
    child = fork();
    if (child == 0) {
        struct sigaction sa = {.sa_handler = on_alarm};
        sigaction(SIGALRM, &sa, NULL);
        int mine = open(path, O_RDWR);
        alarm(1);
        int r = lock(mine, F_SETLKW, F_WRLCK);
        printf("child F_SETLKW on a held lock, then SIGALRM: %s\n", res(r));
        _exit(0);
    }
    waitpid(child, NULL, 0);
    lock(fd, F_SETLK, F_UNLCK);

    /* OFD locks and flock: one open file shared with a forked child */
    struct flock o = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
    printf("parent F_OFD_SETLK: %s\n", res(fcntl(fd, F_OFD_SETLK, &o)));
    printf("parent flock LOCK_EX: %s\n", res(flock(fd, LOCK_EX | LOCK_NB)));
    child = fork();
    if (child == 0) {
        struct flock c = o;
        printf("child, same open file: F_OFD_SETLK %s, flock %s\n",
               res(fcntl(fd, F_OFD_SETLK, &c)), res(flock(fd, LOCK_EX | LOCK_NB)));
        int other = open(path, O_RDWR);
        c = o;
        printf("child, another open: F_OFD_SETLK %s, flock %s\n",
               res(fcntl(other, F_OFD_SETLK, &c)), res(flock(other, LOCK_EX | LOCK_NB)));
        _exit(0);
    }
    waitpid(child, NULL, 0);
    flock(fd, LOCK_UN);
    int other = open(path, O_RDWR);
    printf("after LOCK_UN, another open's flock: %s\n", res(flock(other, LOCK_EX | LOCK_NB)));
    flock(other, LOCK_UN);

    /* a child's own open file: its flock goes when the child ends */
    child = fork();
    if (child == 0) {
        int mine = open(path, O_RDWR);
        flock(mine, LOCK_EX);
        _exit(0);
    }
    waitpid(child, NULL, 0);
    printf("after a child holding flock ended: %s\n", res(flock(other, LOCK_EX | LOCK_NB)));
    unlink(path);
    return 0;
}
