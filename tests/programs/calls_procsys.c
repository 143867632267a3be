/* /proc/sys files programs read at start: present, readable, well-formed, and agreeing
 * with uname where they should. Prints shapes, never the host's values. */
#include "karntest.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

static int slurp(const char *path, char *buf, size_t size)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    buf[n > 0 ? n : 0] = 0;
    return (int)n;
}

static void number(const char *path)
{
    char buf[128], *end;
    int n = slurp(path, buf, sizeof buf);
    unsigned long long v = strtoull(buf, &end, 10);
    printf("%s: %s, a number: %s\n", path, n > 0 ? "read" : errno_name(-n),
           n > 0 && end != buf && *end == '\n' && v > 0 ? "yes" : "no");
}

int main(void)
{
    char buf[256];
    struct utsname u;
    MUST(uname(&u) == 0);
    number("/proc/sys/fs/pipe-max-size");
    number("/proc/sys/fs/nr_open");
    number("/proc/sys/fs/file-max");
    number("/proc/sys/kernel/pid_max");
    number("/proc/sys/kernel/threads-max");
    number("/proc/sys/kernel/ngroups_max");
    number("/proc/sys/kernel/cap_last_cap");
    number("/proc/sys/net/core/somaxconn");
    number("/proc/sys/vm/max_map_count");
    number("/proc/sys/kernel/random/entropy_avail");
    int n = slurp("/proc/sys/vm/overcommit_memory", buf, sizeof buf);
    printf("overcommit_memory: %d bytes, 0-2: %s\n", n, buf[0] >= '0' && buf[0] <= '2' ? "yes" : "no");
    unsigned lo, hi;
    slurp("/proc/sys/net/ipv4/ip_local_port_range", buf, sizeof buf);
    YESNO("ip_local_port_range lo < hi", sscanf(buf, "%u %u", &lo, &hi) == 2 && lo < hi);
    slurp("/proc/sys/kernel/hostname", buf, sizeof buf);
    buf[strcspn(buf, "\n")] = 0;
    YESNO("hostname is uname's", strcmp(buf, u.nodename) == 0);
    slurp("/proc/sys/kernel/osrelease", buf, sizeof buf);
    buf[strcspn(buf, "\n")] = 0;
    YESNO("osrelease is uname's", strcmp(buf, u.release) == 0);
    slurp("/proc/sys/kernel/ostype", buf, sizeof buf);
    printf("ostype %s", buf);
    char a[64], b[64];
    slurp("/proc/sys/kernel/random/uuid", a, sizeof a);
    slurp("/proc/sys/kernel/random/uuid", b, sizeof b);
    YESNO("uuid: 36 characters, new each read", strlen(a) == 37 && a[8] == '-' && strcmp(a, b) != 0);
    slurp("/proc/sys/kernel/random/boot_id", a, sizeof a);
    slurp("/proc/sys/kernel/random/boot_id", b, sizeof b);
    YESNO("boot_id: the same each read", strlen(a) == 37 && strcmp(a, b) == 0);
    SHOW("a missing file", open("/proc/sys/fs/no-such-setting", O_RDONLY));
    SHOW("a file as a directory", open("/proc/sys/fs/nr_open/x", O_RDONLY));
    DIR *d = opendir("/proc/sys/net/core");
    int found = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        found |= strcmp(e->d_name, "somaxconn") == 0;
    YESNO("somaxconn listed in /proc/sys/net/core", found);
    /* karn's /proc/sys is read-only (as a container's): compared as a user */
    MUST(setuid(65534) == 0);
    SHOW("open for writing", open("/proc/sys/fs/pipe-max-size", O_WRONLY) >= 0 ? 0 : -1);
    return 0;
}
