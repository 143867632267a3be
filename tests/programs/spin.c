/* Never exits: a pure compute loop (default), or with "syscalls" a getpid loop.
 * Used to check that Ctrl-C stops a guest. */
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    printf("spinning\n");
    fflush(stdout);
    if (argc > 1 && strcmp(argv[1], "syscalls") == 0)
        for (;;)
            syscall(SYS_getpid);
    for (volatile unsigned long i = 0;; i++)
        ;
}
