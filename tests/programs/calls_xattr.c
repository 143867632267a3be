/* Extended attributes and ownership on files in the directory argv[1] (a tmpfs, or a
 * host directory): set/get/list/remove with their flags and size rules, on files,
 * directories, symlinks and through fds; chown/fchown/lchown recorded in stat.
 * argv[2] "forked": after a fork first (karn's tmpfs is then a host directory), with a
 * file given user.* and trusted.* attributes before it. On tmpfs, as root: trusted.*. */
#include "karntest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

static void list(const char *label, const char *path)
{
    char buf[256];
    ssize_t n = listxattr(path, buf, sizeof buf);
    printf("%s: listxattr = %zd:", label, n);
    /* names in sorted order: the order a filesystem lists them in is its own */
    const char *names[16];
    int count = 0;
    for (ssize_t i = 0; i < n && count < 16; i += strlen(buf + i) + 1)
        names[count++] = buf + i;
    for (int i = 0; i < count; i++)
        for (int j = i + 1; j < count; j++)
            if (strcmp(names[j], names[i]) < 0) {
                const char *t = names[i];
                names[i] = names[j];
                names[j] = t;
            }
    for (int i = 0; i < count; i++)
        printf(" %s", names[i]);
    printf("\n");
}

static void owner(const char *label, const char *path)
{
    struct stat st;
    MUST(lstat(path, &st) == 0);
    printf("%s: uid %u gid %u mode %o\n", label, st.st_uid, st.st_gid, st.st_mode & 07777);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    char pre[512];
    snprintf(pre, sizeof pre, "%s/calls-xattr-pre", dir);
    if (argc > 2 && strcmp(argv[2], "forked") == 0) {
        close(open(pre, O_CREAT | O_WRONLY | O_TRUNC, 0644));
        MUST(setxattr(pre, "user.pre", "u", 1, 0) == 0);
        MUST(setxattr(pre, "trusted.pre", "t", 1, 0) == 0);
        fflush(stdout);
        pid_t child = fork();
        if (child == 0)
            _exit(0);
        MUST(waitpid(child, NULL, 0) == child);
    }
    char file[512], sub[512], link[512], buf[128];
    snprintf(file, sizeof file, "%s/calls-xattr-file", dir);
    snprintf(sub, sizeof sub, "%s/calls-xattr-dir", dir);
    snprintf(link, sizeof link, "%s/calls-xattr-link", dir);
    int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0644);
    MUST(fd >= 0);
    MUST(mkdir(sub, 0755) == 0);
    MUST(symlink(file, link) == 0);

    SHOW("getxattr missing", getxattr(file, "user.a", buf, sizeof buf));
    list("empty", file);
    SHOW("setxattr user.a", setxattr(file, "user.a", "one", 3, 0));
    SHOW("setxattr user.b empty", setxattr(file, "user.b", "", 0, 0));
    SHOW("getxattr size query", getxattr(file, "user.a", NULL, 0));
    SHOW("getxattr", getxattr(file, "user.a", buf, sizeof buf));
    printf("value %.3s\n", buf);
    SHOW("getxattr small buffer", getxattr(file, "user.a", buf, 2));
    SHOW("getxattr empty value", getxattr(file, "user.b", buf, sizeof buf));
    SHOW("setxattr CREATE existing", setxattr(file, "user.a", "two", 3, XATTR_CREATE));
    SHOW("setxattr REPLACE missing", setxattr(file, "user.c", "two", 3, XATTR_REPLACE));
    SHOW("setxattr REPLACE", setxattr(file, "user.a", "three", 5, XATTR_REPLACE));
    SHOW("getxattr", getxattr(file, "user.a", buf, sizeof buf));
    printf("value %.5s\n", buf);
    SHOW("setxattr bad flags", setxattr(file, "user.a", "x", 1, 4));
    SHOW("setxattr unknown namespace", setxattr(file, "bogus.a", "x", 1, 0));
    SHOW("setxattr empty name", setxattr(file, "", "x", 1, 0));
    char longname[300] = "user.";
    memset(longname + 5, 'n', 260);
    longname[265] = 0;
    SHOW("setxattr long name", setxattr(file, longname, "x", 1, 0));
    static char big[70000];
    SHOW("setxattr too big", setxattr(file, "user.big", big, sizeof big, 0));
    SHOW("listxattr size query", listxattr(file, NULL, 0));
    SHOW("listxattr small buffer", listxattr(file, buf, 3));
    list("file", file);
    list("through the symlink", link);
    SHOW("llistxattr on the symlink", llistxattr(link, buf, sizeof buf));
    SHOW("lsetxattr user.* on a symlink", lsetxattr(link, "user.x", "x", 1, 0));
    SHOW("fgetxattr", fgetxattr(fd, "user.a", buf, sizeof buf));
    SHOW("fsetxattr", fsetxattr(fd, "user.f", "fd", 2, 0));
    SHOW("flistxattr size", flistxattr(fd, NULL, 0));
    SHOW("setxattr on a directory", setxattr(sub, "user.d", "dir", 3, 0));
    list("dir", sub);
    SHOW("removexattr", removexattr(file, "user.a"));
    SHOW("removexattr again", removexattr(file, "user.a"));
    SHOW("fremovexattr", fremovexattr(fd, "user.f"));
    list("after removes", file);
    SHOW("getxattr missing file", getxattr("/nonexistent-calls", "user.a", buf, sizeof buf));

    if (argc > 2 && strcmp(argv[2], "no-owners") == 0)
        return 0; /* a volume: karn keeps the host's owners */
    /* trusted.* (root's, on tmpfs) */
    SHOW("setxattr trusted.t", setxattr(file, "trusted.t", "tt", 2, 0));
    SHOW("getxattr trusted.t", getxattr(file, "trusted.t", buf, sizeof buf));
    SHOW("setxattr trusted.t CREATE", setxattr(file, "trusted.t", "x", 1, XATTR_CREATE));
    list("with trusted.t", file);
    SHOW("removexattr trusted.t", removexattr(file, "trusted.t"));
    SHOW("getxattr trusted.t removed", getxattr(file, "trusted.t", buf, sizeof buf));
    if (argc > 2 && strcmp(argv[2], "forked") == 0) {
        list("set before the fork", pre);
        SHOW("getxattr trusted.pre", getxattr(pre, "trusted.pre", buf, sizeof buf));
        MUST(unlink(pre) == 0);
    }
    /* ownership */
    owner("new file", file);
    SHOW("chown 1000:1000", chown(file, 1000, 1000));
    owner("after chown", file);
    SHOW("fchown -1:2000", fchown(fd, -1, 2000));
    owner("after fchown", file);
    SHOW("chmod 6755", chmod(file, 06755));
    SHOW("chown -1:-1", chown(file, -1, -1));
    owner("after chown -1:-1", file);
    SHOW("chown 0:0", chown(file, 0, 0));
    owner("set-ids cleared by chown", file);
    SHOW("lchown the symlink", lchown(link, 3000, 3000));
    owner("symlink", link);
    owner("its target", file);
    SHOW("chown through the symlink", chown(link, 4000, -1));
    owner("its target now", file);
    SHOW("fchownat AT_EMPTY_PATH", fchownat(fd, "", 5000, 5000, AT_EMPTY_PATH));
    owner("after fchownat", file);
    SHOW("chown dir", chown(sub, 1, 2));
    owner("dir", sub);
    /* a symlink made where a chowned file was (CPython's test_posix.test_lchown) */
    char again[512];
    snprintf(again, sizeof again, "%s/calls-xattr-again", dir);
    close(open(again, O_CREAT | O_WRONLY, 0644));
    MUST(chown(again, 6000, 6000) == 0);
    MUST(unlink(again) == 0);
    MUST(symlink("calls-xattr-nowhere", again) == 0);
    SHOW("lchown a dangling symlink", lchown(again, 2147483648u, 2147483648u));
    owner("dangling symlink", again);
    SHOW("lchown -1:-1", lchown(again, -1, -1));
    owner("dangling symlink still", again);
    MUST(unlink(again) == 0);
    /* as a user: only the group of an own file, to an own group */
    MUST(chown(file, 1000, 1000) == 0);
    MUST(setgid(1000) == 0 && setuid(1000) == 0);
    SHOW("user chown to another user", chown(file, 1001, -1));
    SHOW("user chown group to own", chown(file, -1, 1000));
    SHOW("user chown group to another", chown(file, -1, 1001));
    SHOW("user chown a file of root's", chown(sub, -1, 1000));
    return 0;
}
