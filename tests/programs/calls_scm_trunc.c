/* SCM_RIGHTS received into control buffers too small for it (CPython's test_socket
 * RecvmsgSCMRightsStreamTest): what msg_controllen, MSG_CTRUNC and the messages say for
 * each size, two descriptors sent each time. */
#include "karntest.h"

#include <sys/socket.h>
#include <unistd.h>

static void receive_into(int s[2], size_t room, const char *label)
{
    int fds[2] = {0, 1};
    char cbuf[CMSG_SPACE(sizeof fds)] = {0};
    struct iovec iov = {"x", 1};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                       .msg_controllen = sizeof cbuf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    MUST(sendmsg(s[0], &m, 0) == 1);

    char big[64];
    memset(big, 0x5a, sizeof big);
    char byte;
    struct iovec riov = {&byte, 1};
    struct msghdr r = {.msg_iov = &riov, .msg_iovlen = 1, .msg_control = room ? big : NULL,
                       .msg_controllen = room};
    MUST(recvmsg(s[1], &r, 0) == 1);
    int messages = 0, received = 0;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&r); h; h = CMSG_NXTHDR(&r, h)) {
        messages++;
        int n = (int)((h->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof fd);
            received++;
            close(fd);
        }
    }
    printf("%s: controllen %zu, ctrunc %d, messages %d, descriptors %d, byte past room %s\n",
           label, (size_t)r.msg_controllen, !!(r.msg_flags & MSG_CTRUNC), messages, received,
           room < sizeof big && (unsigned char)big[room] != 0x5a ? "written" : "untouched");
}

int main(void)
{
    int s[2];
    MUST(socketpair(AF_UNIX, SOCK_STREAM, 0, s) == 0);
    receive_into(s, 0, "no room");
    receive_into(s, CMSG_LEN(0) - 1, "CMSG_LEN(0)-1");
    receive_into(s, CMSG_LEN(0), "CMSG_LEN(0)");
    receive_into(s, CMSG_LEN(sizeof(int)), "CMSG_LEN(one)");
    receive_into(s, CMSG_SPACE(sizeof(int)), "CMSG_SPACE(one)");
    receive_into(s, CMSG_SPACE(2 * sizeof(int)), "CMSG_SPACE(two)");
    return 0;
}
