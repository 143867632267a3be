/* Run as pid 1 (karn's first process, or natively in a new pid namespace): an orphan is
   reparented to init (getppid() becomes 1, its PR_SET_PDEATHSIG signal fires) and init
   reaps it with wait(). */
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t death_signal;

static void on_death(int sig) { death_signal = sig; }

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("first process is pid 1: %d\n", getpid() == 1);
    int ready[2];
    pipe(ready);
    pid_t middle = fork();
    if (middle == 0) {
        pid_t orphan = fork();
        if (orphan == 0) {
            signal(SIGUSR1, on_death);
            prctl(PR_SET_PDEATHSIG, SIGUSR1);
            pid_t parent = getppid();
            write(ready[1], "r", 1);
            while (getppid() == parent) usleep(1000);
            while (!death_signal) usleep(1000);
            printf("orphan: new parent is init %d, death signal %d\n", getppid() == 1,
                   death_signal);
            _exit(6);
        }
        char c;
        read(ready[0], &c, 1);
        _exit(5);
    }
    int status, reaped = 0, sum = 0;
    pid_t got;
    while ((got = wait(&status)) > 0) {
        reaped++;
        sum += WEXITSTATUS(status);
    }
    printf("init reaped %d processes, exit codes sum %d\n", reaped, sum);
    return 0;
}
