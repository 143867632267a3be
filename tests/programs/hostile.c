/* A hostile guest: tries to get out of its unikernel, one attempt per line.
 *
 *   hostile fs VOLUME HOST_SECRET HOST_OUTSIDE      file-system escapes
 *   hostile proc HOST_PID                            /proc/self/mem, host /proc, ptrace
 *   hostile net HOST_PORT                            raw/packet sockets, host loopback
 *   hostile listen PORT                              bind PORT and 80, wait for a byte
 *
 * Each attempt prints "name = result" (result: the return value or the errno name), so the
 * test can assert the exact refusal; the test then checks on the host side that nothing
 * got out (no file created outside the volume, no connection reached a host server).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* "label = value", or "label = -1 ENAME" when it failed. */
#define SHOW(label, expr)                                                     \
    do {                                                                      \
        errno = 0;                                                            \
        long show_r_ = (long)(expr);                                          \
        if (show_r_ == -1)                                                    \
            printf("%s = -1 %s\n", (label), strerrorname_np(errno));          \
        else                                                                  \
            printf("%s = %ld\n", (label), show_r_);                           \
    } while (0)

#define MUST(expr)                                                            \
    do {                                                                      \
        if (!(expr)) {                                                        \
            printf("MUST failed line %d: %s (%s)\n", __LINE__, #expr,         \
                   strerrorname_np(errno));                                   \
            exit(99);                                                         \
        }                                                                     \
    } while (0)

/* A formatted path; four buffers in turn, so one call can take two. */
static const char *at(const char *fmt, const char *a, const char *b)
{
    static char paths[4][4096];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, 4096, fmt, a, b);
    return p;
}

/* Read a file; its first line (or the errno) is the result. */
static void show_read(const char *label, const char *file)
{
    int fd = open(file, O_RDONLY);
    if (fd < 0) {
        printf("%s = -1 %s\n", label, strerrorname_np(errno));
        return;
    }
    char buf[128] = {0};
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[strcspn(buf, "\n")] = 0;
    printf("%s = read %zd: %s\n", label, n, n > 0 ? buf : "");
}

static void fs_escapes(const char *vol, const char *secret, const char *outside)
{
    /* ../ from the volume: resolves in the guest, never reaches the host's parent. */
    SHOW("create ../ from volume", open(at("%s/../../../../%s/dotdot", vol, outside),
                                        O_WRONLY | O_CREAT, 0644));
    show_read("read ../ secret", at("%s/../../../../../../%s", vol, secret));
    MUST(mkdir(at("%s/sub", vol, ""), 0755) == 0);
    MUST(chdir(at("%s/sub", vol, "")) == 0);
    SHOW("create ../ from cwd", open(at("../../../../../../%s/cwd%s", outside, ""),
                                     O_WRONLY | O_CREAT, 0644));
    int dir = open(vol, O_RDONLY | O_DIRECTORY);
    MUST(dir >= 0);
    SHOW("openat ../ from volume fd", openat(dir, at("../../../../%s/openat%s", outside, ""),
                                             O_WRONLY | O_CREAT, 0644));
    /* Symlinks the host put in the volume (absolute and relative host targets). */
    show_read("host absolute symlink", at("%s/abs-link%s", vol, secret));
    show_read("host relative symlink", at("%s/rel-link%s", vol, secret));
    SHOW("create via host dir symlink", open(at("%s/outside-link/%s", vol, "via-link"),
                                             O_WRONLY | O_CREAT, 0644));
    /* Symlinks the guest makes: absolute targets are guest paths. */
    MUST(symlink(secret, at("%s/guest-link", vol, "")) == 0);
    show_read("guest absolute symlink", at("%s/guest-link", vol, ""));
    MUST(symlink(at("%s/guest-made", outside, ""), at("%s/guest-out", vol, "")) == 0);
    SHOW("create via guest symlink", open(at("%s/guest-out", vol, ""), O_WRONLY | O_CREAT, 0644));
    SHOW("hard link to host secret", link(secret, at("%s/hard", vol, "")));
    SHOW("rename into host dir", rename(at("%s/guest-link", vol, ""),
                                        at("%s/renamed", outside, "")));
    /* The read-only root. */
    SHOW("create in root", open("/pwned", O_WRONLY | O_CREAT, 0644));
    SHOW("mkdir in root", mkdir("/pwned-dir", 0755));
    SHOW("write /etc/passwd", open("/etc/passwd", O_WRONLY | O_APPEND));
    SHOW("truncate /etc/passwd", truncate("/etc/passwd", 0));
    SHOW("chmod /etc/passwd", chmod("/etc/passwd", 0777));
    SHOW("unlink /etc/passwd", unlink("/etc/passwd"));
    SHOW("symlink in root", symlink("/", "/pwned-link"));
    /* Host paths that are not in the image. */
    show_read("host secret", secret);
    show_read("host /etc/shadow", "/etc/shadow");
    show_read("host /etc/hostname", "/etc/hostname");
    show_read("host /root/.bashrc", "/root/.bashrc");
}

static void proc_escapes(const char *host_pid)
{
    SHOW("open /proc/self/mem rw", open("/proc/self/mem", O_RDWR));
    SHOW("open /proc/self/mem r", open("/proc/self/mem", O_RDONLY));
    SHOW("open /proc/1/mem", open("/proc/1/mem", O_RDONLY));
    show_read("host pid environ", at("/proc/%s/environ%s", host_pid, ""));
    show_read("host pid mem", at("/proc/%s/mem%s", host_pid, ""));
    show_read("host pid cmdline", at("/proc/%s/cmdline%s", host_pid, ""));
    show_read("/proc/self/root escape", at("/proc/self/root/proc/%s/environ%s", host_pid, ""));
    SHOW("ptrace traceme", ptrace(PTRACE_TRACEME, 0, NULL, NULL));
    SHOW("ptrace attach self", ptrace(PTRACE_ATTACH, getpid(), NULL, NULL));
    SHOW("ptrace attach host", ptrace(PTRACE_ATTACH, atoi(host_pid), NULL, NULL));
    SHOW("ptrace seize host", ptrace(PTRACE_SEIZE, atoi(host_pid), NULL, NULL));
    char buf[16];
    struct iovec local = {buf, sizeof buf}, remote = {(void *)0x400000, sizeof buf};
    SHOW("process_vm_readv host",
         syscall(SYS_process_vm_readv, atoi(host_pid), &local, 1, &remote, 1, 0));
}

static int try_connect(int family, const char *addr, int port)
{
    int s = socket(family, SOCK_STREAM, 0);
    if (s < 0)
        return -1;
    struct sockaddr_storage ss = {0};
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        inet_pton(AF_INET, addr, &sin->sin_addr);
        len = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        inet_pton(AF_INET6, addr, &sin6->sin6_addr);
        len = sizeof *sin6;
    }
    int r = connect(s, (struct sockaddr *)&ss, len);
    int e = errno;
    close(s);
    errno = e;
    return r;
}

static void net_escapes(int port)
{
    SHOW("raw icmp socket", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP));
    SHOW("raw ipv6 socket", socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6));
    SHOW("raw ip socket", socket(AF_INET, SOCK_RAW, IPPROTO_RAW));
    SHOW("packet socket", socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL)));
    SHOW("packet dgram socket", socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP)));
    SHOW("icmp ping socket", socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP));
    SHOW("udplite socket", socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE));
    SHOW("connect 127.0.0.1", try_connect(AF_INET, "127.0.0.1", port));
    SHOW("connect 127.0.0.2", try_connect(AF_INET, "127.0.0.2", port));
    SHOW("connect 0.0.0.0", try_connect(AF_INET, "0.0.0.0", port));
    SHOW("connect ::1", try_connect(AF_INET6, "::1", port));
    SHOW("connect ::ffff:127.0.0.1", try_connect(AF_INET6, "::ffff:127.0.0.1", port));
    SHOW("connect ::", try_connect(AF_INET6, "::", port));
    int u = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    SHOW("udp sendto 127.0.0.1", sendto(u, "x", 1, 0, (struct sockaddr *)&to, sizeof to));
}

static int listener(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (bind(s, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(s, 8) < 0)
        return -1;
    return s;
}

static void listen_escapes(int port)
{
    int a = listener(port), b = listener(80);
    printf("bind port = %s\nbind 80 = %s\n", a >= 0 ? "ok" : "failed", b >= 0 ? "ok" : "failed");
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port + 1)};
    inet_pton(AF_INET, "10.1.2.3", &sin.sin_addr);
    SHOW("bind a foreign address", bind(c, (struct sockaddr *)&sin, sizeof sin));
    printf("LISTENING\n");
    fflush(stdout);
    char byte;
    MUST(read(0, &byte, 1) == 1);  /* the test has tried to reach the ports from the host */
    fcntl(a, F_SETFL, O_NONBLOCK);
    fcntl(b, F_SETFL, O_NONBLOCK);
    SHOW("accept on port", accept(a, NULL, NULL));
    SHOW("accept on 80", accept(b, NULL, NULL));
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 5 && strcmp(argv[1], "fs") == 0)
        fs_escapes(argv[2], argv[3], argv[4]);
    else if (argc == 3 && strcmp(argv[1], "proc") == 0)
        proc_escapes(argv[2]);
    else if (argc == 3 && strcmp(argv[1], "net") == 0)
        net_escapes(atoi(argv[2]));
    else if (argc == 3 && strcmp(argv[1], "listen") == 0)
        listen_escapes(atoi(argv[2]));
    else
        return 2;
    printf("alive\n");
    return 0;
}
