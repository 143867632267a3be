/* Calls karn does not implement amid the guest's stderr lines: karn's one-time notices
 * must not split a line of the guest's, nor be split by one. */
#include "karntest.h"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile int stop;

static void *chatter(void *arg)
{
    (void)arg;
    static const char line[] = "guest line: the quick brown fox jumps over the lazy dog\n";
    while (!stop)
        MUST(write(2, line, sizeof line - 1) == sizeof line - 1);
    return NULL;
}

int main(void)
{
    pthread_t th;
    /* a line written in pieces, the call in the middle (as a test runner's "name ... ok") */
    MUST(write(2, "checking afs_syscall ... ", 25) == 25);
    syscall(SYS_afs_syscall);
    MUST(write(2, "ok\n", 3) == 3);
    MUST(pthread_create(&th, NULL, chatter, NULL) == 0);
    for (int i = 0; i < 2000; i++)
        syscall(SYS_afs_syscall);
    for (int i = 0; i < 300; i++) /* unknown numbers: another notice */
        syscall(1000 + i);
    stop = 1;
    pthread_join(th, NULL);
    printf("done\n");
    return 0;
}
