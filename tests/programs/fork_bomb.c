/* A fork bomb, run only as a unikernel's first process (pid 1): every process forks until
   fork fails, then reaps its children and exits 1 if its own last fork failed with EAGAIN.
   pid 1 reaps every descendant (orphans are reparented to it) and reports. */
#include <errno.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    if (getpid() != 1) {
        fprintf(stderr, "fork_bomb: only as pid 1 of a contained unikernel\n");
        return 2;
    }
    int eagain = 0;
    for (;;) {
        pid_t pid = fork();
        if (pid < 0) {
            eagain = errno == EAGAIN;
            break;
        }
    }
    int status, all = eagain, reaped = 0;
    while (wait(&status) > 0) {
        reaped++;
        if (getpid() == 1 && !(WIFEXITED(status) && WEXITSTATUS(status) <= 1))
            all = 0;
    }
    if (getpid() != 1)
        _exit(eagain);
    printf("pid 1 stopped by EAGAIN: %d, every process ended normally: %d, reaped some: %d\n",
           eagain, all, reaped > 0);
    return 0;
}
