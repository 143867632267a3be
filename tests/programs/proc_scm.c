/* SCM_RIGHTS between processes: after fork, the parent passes its child a pipe's read
   end and one end of a new socketpair (as nginx's master passes channels to its
   workers); the child reads and answers through them. */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void send_fd(int sock, int fd) {
    char byte = 'F';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (sendmsg(sock, &msg, 0) != 1) perror("sendmsg");
}

static int recv_fd(int sock) {
    char byte;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } control;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    if (recvmsg(sock, &msg, 0) != 1) return -1;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) return -2;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    int channel[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, channel);
    pid_t child = fork();
    if (child == 0) {
        close(channel[0]);
        int pipe_in = recv_fd(channel[1]);
        int talk = recv_fd(channel[1]);
        char buf[64] = {0};
        ssize_t n = read(pipe_in, buf, sizeof buf - 1);
        printf("child: got fds %d %d, pipe said %.*s\n", pipe_in >= 0, talk >= 0,
               (int)(n > 0 ? n : 0), buf);
        const char answer[] = "over the passed socket";
        write(talk, answer, sizeof answer - 1);
        _exit(0);
    }
    close(channel[1]);
    int fds[2], pair[2];
    pipe(fds);  /* made after the fork: the child has no copy of them */
    socketpair(AF_UNIX, SOCK_STREAM, 0, pair);
    send_fd(channel[0], fds[0]);
    send_fd(channel[0], pair[1]);
    close(fds[0]);
    close(pair[1]);
    write(fds[1], "through the passed pipe", 23);
    char buf[64] = {0};
    ssize_t n = read(pair[0], buf, sizeof buf - 1);
    int status;
    waitpid(child, &status, 0);
    printf("parent: %.*s; child exited %d\n", (int)(n > 0 ? n : 0), buf, WEXITSTATUS(status));
    return 0;
}
