/* Memory shared between processes: MAP_SHARED|MAP_ANONYMOUS counters that children
   increment with atomics, a process-shared mutex and condition variable, named POSIX
   semaphores (sem_open: a file in /dev/shm, mapped shared, futexes across processes),
   a shm_open file mapped before and after the fork. Prints only results that do not
   depend on timing, to compare with a native run. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHILDREN 4
#define ADDS 20000
#define ROUNDS 200

#define MUST(expr)                                                             \
    do {                                                                       \
        if (!(expr)) {                                                         \
            perror(#expr);                                                     \
            exit(99);                                                          \
        }                                                                      \
    } while (0)

static void wait_all(int n) {
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int status;
        MUST(wait(&status) > 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            bad++;
    }
    printf("children failed: %d\n", bad);
}

static void *shared_pages(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    MUST(p != MAP_FAILED);
    return p;
}

static void atomics(void) {
    long *counter = shared_pages(4096);
    long *private_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    MUST(private_page != MAP_FAILED);
    counter[1] = 7;
    char want[32], line[256], perms[8] = "?";
    snprintf(want, sizeof want, "%lx-", (unsigned long)counter);
    FILE *maps = fopen("/proc/self/maps", "r");
    MUST(maps != NULL);
    while (fgets(line, sizeof line, maps))
        if (!strncmp(line, want, strlen(want)))
            sscanf(line, "%*s %7s", perms);
    fclose(maps);
    printf("/proc/self/maps: %s\n", perms);
    for (int i = 0; i < CHILDREN; i++) {
        if (fork() == 0) {
            for (int j = 0; j < ADDS; j++)
                __atomic_fetch_add(counter, 1, __ATOMIC_SEQ_CST);
            private_page[0] = 1;
            _exit(counter[1] == 7 ? 0 : 1);
        }
    }
    wait_all(CHILDREN);
    printf("atomic counter: %ld (expected %d)\n", counter[0], CHILDREN * ADDS);
    printf("private page after children wrote it: %ld\n", private_page[0]);
    /* a grandchild's write is seen too: sharing is inherited by every fork */
    if (fork() == 0) {
        if (fork() == 0) {
            counter[2] = 42;
            _exit(0);
        }
        int st;
        wait(&st);
        _exit(0);
    }
    wait_all(1);
    printf("grandchild wrote: %ld\n", counter[2]);
    /* shared memory keeps its data through MADV_DONTNEED (private memory would not) */
    MUST(madvise(counter, 4096, MADV_DONTNEED) == 0);
    printf("after MADV_DONTNEED: %ld\n", counter[0]);
    long *grown = mremap(counter, 4096, 8192, MREMAP_MAYMOVE);
    MUST(grown != MAP_FAILED);
    printf("after mremap: %ld %ld\n", grown[0], grown[1024]);
    MUST(munmap(grown, 8192) == 0);
    /* a new mapping at the same place starts from zero */
    long *again = mmap(counter, 4096, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    MUST(again == counter);
    printf("remapped reads: %ld\n", again[0]);
    munmap(again, 4096);
}

struct locked {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    long counter;
    int turn;
};

static void mutex_and_condvar(void) {
    struct locked *s = shared_pages(sizeof *s);
    pthread_mutexattr_t ma;
    pthread_condattr_t ca;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&s->mutex, &ma);
    pthread_condattr_init(&ca);
    pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
    pthread_cond_init(&s->cond, &ca);
    for (int i = 0; i < 2; i++) {
        if (fork() == 0) {
            for (int j = 0; j < ADDS; j++) {
                pthread_mutex_lock(&s->mutex);
                long v = s->counter; /* not atomic: only the mutex keeps it right */
                s->counter = v + 1;
                pthread_mutex_unlock(&s->mutex);
            }
            _exit(0);
        }
    }
    wait_all(2);
    printf("mutex counter: %ld (expected %d)\n", s->counter, 2 * ADDS);
    /* ping-pong: each side waits on the condition variable for its turn */
    if (fork() == 0) {
        for (int r = 0; r < ROUNDS; r++) {
            pthread_mutex_lock(&s->mutex);
            while (s->turn != 1)
                pthread_cond_wait(&s->cond, &s->mutex);
            s->turn = 0;
            pthread_cond_broadcast(&s->cond);
            pthread_mutex_unlock(&s->mutex);
        }
        _exit(0);
    }
    int rounds = 0;
    for (int r = 0; r < ROUNDS; r++) {
        pthread_mutex_lock(&s->mutex);
        s->turn = 1;
        pthread_cond_broadcast(&s->cond);
        while (s->turn != 0)
            pthread_cond_wait(&s->cond, &s->mutex);
        rounds++;
        pthread_mutex_unlock(&s->mutex);
    }
    wait_all(1);
    printf("condvar rounds: %d\n", rounds);
}

static void semaphores(void) {
    char ping_name[64], pong_name[64];
    snprintf(ping_name, sizeof ping_name, "/karn-test-ping-%d", getpid());
    snprintf(pong_name, sizeof pong_name, "/karn-test-pong-%d", getpid());
    sem_t *ping = sem_open(ping_name, O_CREAT | O_EXCL, 0600, 0);
    sem_t *pong = sem_open(pong_name, O_CREAT | O_EXCL, 0600, 0);
    MUST(ping != SEM_FAILED && pong != SEM_FAILED);
    if (fork() == 0) { /* the inherited semaphores */
        for (int r = 0; r < ROUNDS; r++) {
            MUST(sem_wait(ping) == 0);
            MUST(sem_post(pong) == 0);
        }
        _exit(0);
    }
    for (int r = 0; r < ROUNDS; r++) {
        MUST(sem_post(ping) == 0);
        MUST(sem_wait(pong) == 0);
    }
    wait_all(1);
    printf("semaphore rounds (inherited): %d\n", ROUNDS);
    if (fork() == 0) { /* opened again by name in the child */
        sem_t *p = sem_open(ping_name, 0), *q = sem_open(pong_name, 0);
        MUST(p != SEM_FAILED && q != SEM_FAILED);
        for (int r = 0; r < ROUNDS; r++) {
            MUST(sem_wait(p) == 0);
            MUST(sem_post(q) == 0);
        }
        _exit(0);
    }
    for (int r = 0; r < ROUNDS; r++) {
        MUST(sem_post(ping) == 0);
        MUST(sem_wait(pong) == 0);
    }
    wait_all(1);
    printf("semaphore rounds (by name): %d\n", ROUNDS);
    int value = -1;
    sem_getvalue(ping, &value);
    printf("semaphore value at the end: %d\n", value);
    sem_close(ping);
    sem_close(pong);
    sem_unlink(ping_name);
    sem_unlink(pong_name);
}

static void shm_file(void) {
    char name[64];
    snprintf(name, sizeof name, "/karn-test-shm-%d", getpid());
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    MUST(fd >= 0);
    MUST(ftruncate(fd, 8192) == 0);
    char *map = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    MUST(map != MAP_FAILED);
    strcpy(map, "parent");
    if (fork() == 0) {
        strcpy(map + 100, "child through the inherited mapping");
        int fd2 = shm_open(name, O_RDWR, 0);
        MUST(fd2 >= 0);
        char *map2 = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0);
        MUST(map2 != MAP_FAILED);
        strcpy(map2 + 4096, "child through its own mapping");
        /* a read-only mapping of a read-only description sees later writes */
        int fd3 = shm_open(name, O_RDONLY, 0);
        MUST(fd3 >= 0);
        const char *map3 = mmap(NULL, 8192, PROT_READ, MAP_SHARED, fd3, 0);
        MUST(map3 != MAP_FAILED);
        strcpy(map2 + 200, "written after the read-only mapping was made");
        printf("read-only mapping reads: '%s'\n", map3 + 200);
        _exit(strcmp(map2, "parent") == 0 ? 0 : 1);
    }
    wait_all(1);
    printf("parent reads: '%s' '%s'\n", map + 100, map + 4096);
    char buf[64] = {0};
    MUST(pread(fd, buf, sizeof buf - 1, 4096) > 0);
    printf("read(2) of the file: '%s'\n", buf);
    munmap(map, 8192);
    close(fd);
    shm_unlink(name);
}

static void on_usr1(int sig) { (void)sig; }

/* Waits on shared words end as on Linux: a handled signal interrupts sem_wait (EINTR,
   no SA_RESTART), sem_timedwait times out, SIGKILL ends a process blocked in one. */
static void interrupted_waits(void) {
    struct state {
        sem_t sem;
        int result, err, ready;
    } *s = shared_pages(sizeof(struct state));
    MUST(sem_init(&s->sem, 1, 0) == 0);
    pid_t child = fork();
    if (child == 0) {
        struct sigaction sa = {.sa_handler = on_usr1};
        sigaction(SIGUSR1, &sa, NULL);
        __atomic_store_n(&s->ready, 1, __ATOMIC_SEQ_CST);
        int r = sem_wait(&s->sem);
        s->err = errno;
        __atomic_store_n(&s->result, r == -1 ? 1 : 2, __ATOMIC_SEQ_CST);
        _exit(0);
    }
    while (!__atomic_load_n(&s->ready, __ATOMIC_SEQ_CST))
        sched_yield();
    /* the signal may land before the wait begins: send it until the wait has ended */
    while (!__atomic_load_n(&s->result, __ATOMIC_SEQ_CST)) {
        kill(child, SIGUSR1);
        usleep(20000);
    }
    wait_all(1);
    printf("sem_wait interrupted: %s, errno EINTR: %s\n", s->result == 1 ? "yes" : "no",
           s->err == EINTR ? "yes" : "no");
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 50 * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    int r = sem_timedwait(&s->sem, &until);
    printf("sem_timedwait: %d %s\n", r, r == -1 && errno == ETIMEDOUT ? "ETIMEDOUT" : "?");
    child = fork();
    if (child == 0) {
        sem_wait(&s->sem);
        _exit(0);
    }
    kill(child, SIGKILL);
    int status;
    MUST(waitpid(child, &status, 0) == child);
    printf("killed while waiting: %s\n",
           WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL ? "yes" : "no");
    /* a post after all that still reaches a new waiter */
    if (fork() == 0)
        _exit(sem_wait(&s->sem) == 0 ? 0 : 1);
    MUST(sem_post(&s->sem) == 0);
    wait_all(1);
}

/* A shared file truncated below a mapping of it: touching the page past the new end is
   SIGBUS, in the process that touches it; a write(2) from it is EFAULT. */
static void truncated_file(void) {
    if (fork() == 0) /* after the first fork, as a process that opens the file later */
        _exit(0);
    wait_all(1);
    char name[64];
    snprintf(name, sizeof name, "/karn-test-cut-%d", getpid());
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    MUST(fd >= 0 && ftruncate(fd, 8192) == 0);
    char *map = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    MUST(map != MAP_FAILED);
    map[0] = map[4096] = 'x';
    MUST(ftruncate(fd, 4096) == 0);
    shm_unlink(name);
    printf("first page still there: %c\n", map[0]);
    int pipefd[2];
    MUST(pipe(pipefd) == 0);
    errno = 0;
    long n = write(pipefd[1], map + 4096, 16);
    printf("write(2) from past the end: %ld %s\n", n, errno == EFAULT ? "EFAULT" : "?");
    pid_t child = fork();
    if (child == 0) {
        map[4096] = 'y';
        _exit(0);
    }
    int status;
    MUST(waitpid(child, &status, 0) == child);
    printf("touching past the end: %s\n",
           WIFSIGNALED(status) && WTERMSIG(status) == SIGBUS ? "SIGBUS" : "no signal");
}

/* One part per run (argv[1]), so that each makes its shared memory before the run's
   first fork, as well as after it (the second half of each part). */
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    const char *part = argc > 1 ? argv[1] : "";
    if (!strcmp(part, "atomics"))
        atomics();
    else if (!strcmp(part, "mutex"))
        mutex_and_condvar();
    else if (!strcmp(part, "semaphores"))
        semaphores();
    else if (!strcmp(part, "shm"))
        shm_file();
    else if (!strcmp(part, "interrupted"))
        interrupted_waits();
    else if (!strcmp(part, "truncated"))
        truncated_file();
    else {
        fprintf(stderr, "usage: %s atomics|mutex|semaphores|shm|interrupted|truncated\n", argv[0]);
        return 2;
    }
    return 0;
}
