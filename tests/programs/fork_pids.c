/* --pids-limit counts every task: four threads, then forks until fork fails. Prints how
   many threads and forks were made. */
#include <pthread.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static int go[2];

static void *idle(void *arg) {
    char c;
    read(go[0], &c, 1);
    return arg;
}

int main(void) {
    pipe(go);
    pthread_t threads[4];
    int made = 0, forks = 0;
    for (int i = 0; i < 4; i++)
        made += pthread_create(&threads[i], NULL, idle, NULL) == 0;
    for (int i = 0; i < 8; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            char c;
            close(go[1]);
            read(go[0], &c, 1);
            _exit(0);
        }
        if (pid < 0)
            break;
        forks++;
    }
    printf("threads %d forks %d\n", made, forks);
    close(go[1]);  /* every thread and child reads end of file */
    for (int i = 0; i < made; i++)
        pthread_join(threads[i], NULL);
    while (wait(NULL) > 0) {
    }
    return 0;
}
