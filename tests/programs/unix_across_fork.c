/* Named AF_UNIX sockets in /tmp between processes (tests/test_fork.py): bound before the
 * first fork (the guest's /tmp then moves to a host directory), bound after it, and bound
 * by one child for a sibling forked before the bind, which connects to it by name. Then
 * abstract names: bound by a child for its parent, free again once the child has ended,
 * kept by a child after its binder closed its copy (free once the child ended too), and
 * autobound in a parent and its child at once. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

static int run_id; /* the first process's pid: names of its own in the host's /tmp natively */

static struct sockaddr_un address(const char *name) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "/tmp/karn-ux-%d-%s", run_id, name);
    return a;
}

static int listener(const char *path) {
    struct sockaddr_un a = address(path);
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(s, (void *)&a, sizeof a) || listen(s, 4))
        perror("bind/listen");
    return s;
}

static void client(const char *path, const char *word) {
    struct sockaddr_un a = address(path);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(c, (void *)&a, sizeof a)) {
        perror("connect");
        _exit(1);
    }
    write(c, word, strlen(word));
    _exit(0);
}

static void serve(int s, const char *what) {
    char buf[16] = {0};
    int c = accept(s, 0, 0);
    read(c, buf, sizeof buf - 1);
    printf("%s: got %s\n", what, buf);
}

static socklen_t abstract(struct sockaddr_un *a, const char *name) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    int n = snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "karn-ux-%d-%s", run_id, name);
    return offsetof(struct sockaddr_un, sun_path) + 1 + n;
}

static int reaped(pid_t pid) {
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    run_id = getpid();
    int s = listener("before");
    pid_t c1 = fork();
    if (c1 == 0)
        client("before", "one");
    serve(s, "bound before the first fork");
    printf("client exit %d\n", reaped(c1));

    int t = listener("after");
    pid_t c2 = fork();
    if (c2 == 0)
        client("after", "two");
    serve(t, "bound after it");
    printf("client exit %d\n", reaped(c2));

    int ready[2], go[2];
    pipe(ready);
    pipe(go);
    pid_t connector = fork(); /* forked before the sibling binds */
    if (connector == 0) {
        char b;
        read(go[0], &b, 1);
        client("sibling", "three");
    }
    pid_t server = fork();
    if (server == 0) {
        int u = listener("sibling");
        write(ready[1], "r", 1);
        serve(u, "bound by a sibling");
        _exit(0);
    }
    char b;
    read(ready[0], &b, 1);
    write(go[1], "g", 1);
    printf("server exit %d\n", reaped(server)); /* after its line: one order */
    printf("connector exit %d\n", reaped(connector));

    struct sockaddr_un a;
    socklen_t len = abstract(&a, "child");
    pid_t binder = fork();
    if (binder == 0) {
        int u = socket(AF_UNIX, SOCK_STREAM, 0);
        if (bind(u, (void *)&a, len) || listen(u, 4))
            perror("abstract bind/listen");
        write(ready[1], "r", 1);
        serve(u, "abstract name bound by the child");
        _exit(0);
    }
    read(ready[0], &b, 1);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(c, (void *)&a, len))
        perror("abstract connect");
    write(c, "four", 4);
    printf("binder exit %d\n", reaped(binder));
    int again = socket(AF_UNIX, SOCK_STREAM, 0);
    printf("abstract name free after its binder ended: %s\n",
           bind(again, (void *)&a, len) ? strerror(errno) : "yes");

    len = abstract(&a, "held");
    int held = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(held, (void *)&a, len) || listen(held, 4))
        perror("abstract bind/listen");
    pid_t holder = fork();
    if (holder == 0) {
        read(go[0], &b, 1);
        serve(held, "abstract name kept by a child after its binder closed it");
        _exit(0);
    }
    close(held); /* the child's copy keeps the name, as on Linux */
    c = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(c, (void *)&a, len))
        perror("connect to a name its binder closed");
    write(c, "five", 4);
    write(go[1], "g", 1);
    printf("holder exit %d\n", reaped(holder));
    again = socket(AF_UNIX, SOCK_STREAM, 0);
    printf("abstract name free after its last holder ended: %s\n",
           bind(again, (void *)&a, len) ? strerror(errno) : "yes");

    len = abstract(&a, "nobody");
    c = socket(AF_UNIX, SOCK_STREAM, 0);
    printf("connect to an abstract name nobody bound: %s\n",
           connect(c, (void *)&a, len) ? strerror(errno) : "connected");

    pid_t twin = fork(); /* both autobind after the fork: two distinct names */
    int d = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un unnamed = {.sun_family = AF_UNIX};
    int bound = bind(d, (void *)&unnamed, sizeof(sa_family_t));
    if (twin == 0)
        _exit(bound ? 1 : 0);
    printf("autobind after a fork, parent: %s\n", bound ? strerror(errno) : "ok");
    printf("autobind after a fork, child exit %d\n", reaped(twin));
    const char *names[] = {"before", "after", "sibling"};
    for (int i = 0; i < 3; i++) {
        struct sockaddr_un a = address(names[i]);
        unlink(a.sun_path);
    }
    return 0;
}
