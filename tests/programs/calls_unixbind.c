/* AF_UNIX bind on a path makes a socket file in the directory argv[1]: stat sees it,
 * connect finds the socket through it, it outlives the socket, unlink takes the name. */
#include "karntest.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static struct sockaddr_un addr_of(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    return a;
}

static int dial(const char *path, int type)
{
    struct sockaddr_un a = addr_of(path);
    int s = socket(AF_UNIX, type, 0);
    MUST(s >= 0);
    int r = connect(s, (struct sockaddr *)&a, sizeof a);
    int e = errno;
    close(s);
    errno = e;
    return r;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    char path[200], file[200], dpath[200];
    struct stat st;
    snprintf(path, sizeof path, "%s/calls-sock", dir);
    snprintf(file, sizeof file, "%s/calls-plain", dir);
    snprintf(dpath, sizeof dpath, "%s/calls-dgram", dir);
    unlink(path);
    umask(022);

    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = addr_of(path);
    SHOW("bind", bind(l, (struct sockaddr *)&a, sizeof a));
    SHOW("stat", stat(path, &st));
    printf("socket %d mode %o size %ld\n", S_ISSOCK(st.st_mode), st.st_mode & 07777, (long)st.st_size);
    SHOW("connect before listen", dial(path, SOCK_STREAM));
    SHOW("listen", listen(l, 8));
    SHOW("connect", dial(path, SOCK_STREAM));
    int other = socket(AF_UNIX, SOCK_STREAM, 0);
    SHOW("bind the same path again", bind(other, (struct sockaddr *)&a, sizeof a));
    SHOW("open the socket file", open(path, O_RDONLY));
    SHOW("connect with the wrong type", dial(path, SOCK_DGRAM));
    SHOW("close the listener", close(l));
    SHOW("stat after close", stat(path, &st));
    printf("socket %d\n", S_ISSOCK(st.st_mode));
    SHOW("connect after close", dial(path, SOCK_STREAM));
    SHOW("bind over the leftover file", bind(other, (struct sockaddr *)&a, sizeof a));
    SHOW("unlink", unlink(path));
    SHOW("connect after unlink", dial(path, SOCK_STREAM));
    SHOW("bind after unlink", bind(other, (struct sockaddr *)&a, sizeof a));
    SHOW("listen", listen(other, 8));
    SHOW("connect", dial(path, SOCK_STREAM));
    /* the name goes with the file: a socket bound there still listens, unreachable */
    SHOW("unlink while listening", unlink(path));
    SHOW("connect", dial(path, SOCK_STREAM));
    close(other);

    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    close(fd);
    SHOW("connect to a regular file", dial(file, SOCK_STREAM));
    SHOW("unlink", unlink(file));

    /* datagrams to a path */
    unlink(dpath);
    int d = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un da = addr_of(dpath);
    SHOW("bind dgram", bind(d, (struct sockaddr *)&da, sizeof da));
    int c = socket(AF_UNIX, SOCK_DGRAM, 0);
    SHOW("sendto the path", sendto(c, "hi", 2, 0, (struct sockaddr *)&da, sizeof da));
    char buf[8] = {0};
    SHOW("recv", recv(d, buf, sizeof buf, 0));
    printf("got %s\n", buf);
    struct sockaddr_un got;
    socklen_t len = sizeof got;
    SHOW("getsockname", getsockname(d, (struct sockaddr *)&got, &len));
    YESNO("getsockname is the path", strcmp(got.sun_path, dpath) == 0);
    SHOW("unlink", unlink(dpath));
    SHOW("sendto after unlink", sendto(c, "hi", 2, 0, (struct sockaddr *)&da, sizeof da));

    /* a path in a missing directory */
    char missing[220];
    snprintf(missing, sizeof missing, "%s/no-such-dir/s", dir);
    struct sockaddr_un ma = addr_of(missing);
    int m = socket(AF_UNIX, SOCK_STREAM, 0);
    SHOW("bind in a missing directory", bind(m, (struct sockaddr *)&ma, sizeof ma));
    return 0;
}
