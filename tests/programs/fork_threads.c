/* fork from a process whose other threads keep the kernel busy (fds, memory maps,
   futexes, pipes) while it forks: every child must run and exit, none may hang on a
   lock a parent thread held in the kernel at the fork. (Not on the program's own mutex:
   a child would inherit it locked natively too.) */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREADS 3
#define FORKS 12

static atomic_int stop;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static long counter;

static void *busy(void *arg) {
    long kind = (long)arg;
    while (!atomic_load(&stop)) {
        if (kind == 0) {
            int fd = open("/dev/null", O_RDONLY);
            int dup = fcntl(fd, F_DUPFD_CLOEXEC, 10);
            close(dup);
            close(fd);
        } else if (kind == 1) {
            void *p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            ((char *)p)[0] = 1;
            munmap(p, 65536);
        } else {
            int fds[2];
            pipe(fds);
            write(fds[1], "x", 1);
            char c;
            read(fds[0], &c, 1);
            close(fds[0]);
            close(fds[1]);
            pthread_mutex_lock(&mutex);
            counter++;
            pthread_mutex_unlock(&mutex);
        }
    }
    return NULL;
}

int main(void) {
    pthread_t threads[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_create(&threads[i], NULL, busy, (void *)i);
    int ok = 0;
    for (int i = 0; i < FORKS; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            /* the child's one thread uses what the others were using */
            int fd = open("/dev/null", O_RDONLY);
            void *p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            ((char *)p)[1] = 2;
            int fds[2];
            pipe(fds);
            _exit(fd >= 0 && p != MAP_FAILED && write(fds[1], "y", 1) == 1 ? 7 : 1);
        }
        int status;
        waitpid(pid, &status, 0);
        ok += WIFEXITED(status) && WEXITSTATUS(status) == 7;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
    printf("children that ran and exited: %d of %d\n", ok, FORKS);
    return 0;
}
