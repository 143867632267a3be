/* Directories (in a fresh directory under /tmp, or argv[1]): mkdir(at), getdents64, readdir, chdir/fchdir/getcwd, rmdir, unlinkat. */
#include "karntest.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

struct kdirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* List a directory with raw getdents64 (small buffer: several calls), sorted. */
static void list_getdents(const char *label, int dfd)
{
    char buf[64];
    char *names[64];
    int n = 0, calls = 0;
    for (;;) {
        long r = syscall(SYS_getdents64, dfd, buf, sizeof buf);
        if (r < 0) {
            printf("%s: getdents64 -1 %s\n", label, errno_name(errno));
            return;
        }
        if (r == 0)
            break;
        calls++;
        for (long off = 0; off < r;) {
            struct kdirent64 *d = (struct kdirent64 *)(buf + off);
            char *e = malloc(300);
            snprintf(e, 300, "%s(%c)", d->d_name,
                     d->d_type == DT_DIR ? 'd' : d->d_type == DT_REG ? 'f' : '?');
            if (n < 64)
                names[n++] = e;
            off += d->d_reclen;
        }
    }
    qsort(names, n, sizeof *names, cmp);
    printf("%s:", label);
    for (int i = 0; i < n; i++) {
        printf(" %s", names[i]);
        free(names[i]);
    }
    printf(" (multiple calls: %s)\n", calls > 1 ? "yes" : "no");
}

static void list_readdir(const char *label, const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        printf("%s: opendir -1 %s\n", label, errno_name(errno));
        return;
    }
    char *names[64];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < 64)
        names[n++] = strdup(e->d_name);
    closedir(d);
    qsort(names, n, sizeof *names, cmp);
    printf("%s:", label);
    for (int i = 0; i < n; i++) {
        printf(" %s", names[i]);
        free(names[i]);
    }
    printf("\n");
}

int main(int argc, char **argv)
{
    char dir[256];
    char cwd[512], small[4];
    struct stat st;

    snprintf(dir, sizeof dir, "%s/karn-dirs-XXXXXX", argc > 1 ? argv[1] : "/tmp");
    umask(022);
    MUST(mkdtemp(dir) != NULL);
    SHOW("chdir", chdir(dir));
    MUST(getcwd(cwd, sizeof cwd) != NULL);
    YESNO("getcwd is dir", strcmp(cwd, dir) == 0);
    errno = 0;
    YESNO("getcwd small buffer fails", getcwd(small, sizeof small) == NULL);
    printf("getcwd small errno: %s\n", errno_name(errno));

    SHOW("mkdir sub", mkdir("sub", 0755));
    SHOW("mkdir sub again", mkdir("sub", 0755));
    SHOW("mkdir nested missing", mkdir("nope/deeper", 0755));
    SHOW("mkdir under file", (close(open("file1", O_CREAT | O_WRONLY, 0644)), mkdir("file1/x", 0755)));
    int dfd = open(".", O_RDONLY | O_DIRECTORY);
    SHOW("mkdirat", mkdirat(dfd, "sub2", 0700));
    SHOW("stat sub2", stat("sub2", &st));
    printf("sub2 mode: %o isdir=%d\n", (unsigned)(st.st_mode & 07777), S_ISDIR(st.st_mode) ? 1 : 0);
    for (int i = 0; i < 12; i++) {
        char name[64];
        snprintf(name, sizeof name, "sub/entry-with-a-long-name-%02d", i);
        close(open(name, O_CREAT | O_WRONLY, 0644));
    }
    SHOW("mkdir sub/inner", mkdir("sub/inner", 0755));

    list_getdents("getdents .", dfd);
    int sfd = open("sub", O_RDONLY | O_DIRECTORY);
    list_getdents("getdents sub", sfd);
    list_getdents("getdents sub at end", sfd);
    SHOW("lseek dir to 0", lseek(sfd, 0, SEEK_SET));
    list_getdents("getdents sub rewound", sfd);
    list_readdir("readdir sub", "sub");
    list_readdir("readdir missing", "missing");
    list_readdir("readdir file", "file1");
    int ffd = open("file1", O_RDONLY);
    char gbuf[256];
    SHOW("getdents64 on file", syscall(SYS_getdents64, ffd, gbuf, sizeof gbuf));
    close(ffd);

    /* relative paths, .. and fchdir */
    SHOW("chdir sub", chdir("sub"));
    MUST(getcwd(cwd, sizeof cwd) != NULL);
    printf("cwd tail: %s\n", strrchr(cwd, '/'));
    SHOW("chdir inner", chdir("inner"));
    SHOW("chdir ../..", chdir("../.."));
    MUST(getcwd(cwd, sizeof cwd) != NULL);
    YESNO("back at dir", strcmp(cwd, dir) == 0);
    SHOW("chdir file", chdir("file1"));
    SHOW("chdir missing", chdir("missing"));
    SHOW("fchdir sub", fchdir(sfd));
    MUST(getcwd(cwd, sizeof cwd) != NULL);
    printf("cwd tail after fchdir: %s\n", strrchr(cwd, '/'));
    SHOW("stat relative", stat("entry-with-a-long-name-03", &st));
    SHOW("stat ../file1", stat("../file1", &st));
    SHOW("fchdir dfd", fchdir(dfd));
    SHOW("fchdir bad fd", fchdir(1234));

    /* rmdir errors, unlinkat AT_REMOVEDIR */
    SHOW("rmdir non-empty", rmdir("sub"));
    SHOW("rmdir file", rmdir("file1"));
    SHOW("rmdir missing", rmdir("missing"));
    SHOW("rmdir .", rmdir("."));
    SHOW("unlinkat AT_REMOVEDIR", unlinkat(dfd, "sub2", AT_REMOVEDIR));
    SHOW("unlinkat dir without flag", unlinkat(dfd, "sub", 0));
    for (int i = 0; i < 12; i++) {
        char name[64];
        snprintf(name, sizeof name, "sub/entry-with-a-long-name-%02d", i);
        if (unlink(name) != 0)
            printf("unlink %s failed\n", name);
    }
    SHOW("rmdir inner", rmdir("sub/inner"));
    SHOW("rmdir sub", rmdir("sub"));
    SHOW("unlink file1", unlink("file1"));
    SHOW("lseek dfd to 0", lseek(dfd, 0, SEEK_SET));
    list_getdents("getdents emptied", dfd);
    SHOW("chdir /", chdir("/"));
    SHOW("rmdir dir", rmdir(dir));
    close(dfd);
    close(sfd);
    return 0;
}
