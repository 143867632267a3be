/* /proc/self/task: a directory per thread with its own status (name, Pid = its tid),
 * stat and comm; /proc/thread-self; the Groups line of status as Linux writes it; and
 * recvmsg handing MSG_CMSG_CLOEXEC back in msg_flags (Go's syscall tests read all of it). */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_barrier_t barrier;
static pid_t worker_tid;

static void *worker(void *arg) {
    worker_tid = (pid_t)syscall(SYS_gettid);
    pthread_setname_np(pthread_self(), "worker");
    pthread_barrier_wait(&barrier);
    pthread_barrier_wait(&barrier);
    return arg;
}

static void field(const char *path, const char *key, char *out, size_t len) {
    char buf[4096];
    out[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *at = strstr(buf, key);
    if (!at)
        return;
    at += strlen(key);
    size_t i = 0;
    while (at[i] && at[i] != '\n' && i + 1 < len) {
        out[i] = at[i];
        i++;
    }
    out[i] = 0;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    pthread_barrier_init(&barrier, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_barrier_wait(&barrier);
    DIR *d = opendir("/proc/self/task");
    int threads = 0, main_seen = 0, worker_seen = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        threads++;
        main_seen |= atoi(e->d_name) == getpid();
        worker_seen |= atoi(e->d_name) == worker_tid;
    }
    if (d)
        closedir(d);
    printf("task entries: %d (main %d, worker %d)\n", threads, main_seen, worker_seen);
    char path[64], name[64], pid[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", worker_tid);
    field(path, "Name:\t", name, sizeof name);
    field(path, "\nPid:\t", pid, sizeof pid);
    printf("worker's status: name %s, Pid is its tid %d\n", name, atoi(pid) == worker_tid);
    snprintf(path, sizeof path, "/proc/self/task/%d/comm", worker_tid);
    field(path, "", name, sizeof name);
    printf("worker's comm: %s\n", name);
    field("/proc/thread-self/comm", "", name, sizeof name);
    printf("thread-self comm: %s\n", name);
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", worker_tid);
    field(path, "", name, sizeof name);
    printf("worker's stat starts with its tid: %d\n", atoi(name) == worker_tid);
    field("/proc/self/status", "\nGroups:\t", name, sizeof name);
    size_t len = strlen(name);  /* the groups are the runner's: only the form is compared */
    printf("Groups line ends with Linux's space: %d\n", len > 0 && name[len - 1] == ' ');
    pthread_barrier_wait(&barrier);
    pthread_join(t, NULL);

    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    write(sv[0], "x", 1);
    char byte, control[64];
    struct iovec iov = {&byte, 1};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                         .msg_controllen = sizeof control};
    ssize_t n = recvmsg(sv[1], &msg, MSG_CMSG_CLOEXEC);
    printf("recvmsg: %zd, msg_flags has MSG_CMSG_CLOEXEC: %d\n", n,
           (msg.msg_flags & MSG_CMSG_CLOEXEC) != 0);
    return 0;
}
