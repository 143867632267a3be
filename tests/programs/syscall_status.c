/* Calls raw syscall numbers as told on the command line and prints what each returned.
 *
 * Each argument is NR[,ARG...]: ARG is an integer or @path ("/"), @name ("user.karn"),
 * @buf (a 256-byte buffer). Prints "NR RESULT ERRNO" per call (ERRNO 0 on success), so
 * tests/test_syscall_status.py can hold karn's syscall table to what a guest sees. */
#include "karntest.h"

#include <sys/syscall.h>
#include <unistd.h>

static char buf[256];

static long arg(const char *word)
{
    if (strcmp(word, "@path") == 0)
        return (long)"/";
    if (strcmp(word, "@name") == 0)
        return (long)"user.karn";
    if (strcmp(word, "@buf") == 0)
        return (long)buf;
    return strtol(word, NULL, 0);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        long a[7] = {0};
        int n = 0;
        for (char *word = strtok(argv[i], ","); word && n < 7; word = strtok(NULL, ","))
            a[n++] = arg(word);
        errno = 0;
        long r = syscall(a[0], a[1], a[2], a[3], a[4], a[5], a[6]);
        printf("%ld %ld %d\n", a[0], r, r == -1 ? errno : 0);
    }
    return 0;
}
