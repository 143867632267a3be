/* RLIMIT_CPU counts per process: a child that spins past it dies by SIGXCPU (its
   default action), and its parent, which waits without using CPU, sees WTERMSIG. */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    pid_t pid = fork();
    if (pid == 0) {
        for (volatile unsigned long i = 0;; i++) {}
    }
    int status;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status))
        printf("spinning child: killed by signal %d\n", WTERMSIG(status));
    else
        printf("spinning child: status %#x\n", status);
    return 0;
}
