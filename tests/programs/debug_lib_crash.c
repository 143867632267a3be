/* A NULL write inside a shared-library call: memset(NULL, ...) from main. The crash report
 * (and gdb on a core dump) must name the libc function and the calling frame in main. */
#include <stdio.h>
#include <string.h>

char *volatile target = 0;

int main(int argc, char **argv)
{
    size_t length = 4096 + (size_t)argc;
    printf("writing %zu bytes\n", length);
    fflush(stdout);
    memset(target, 'x', length);
    printf("not reached\n");
    return 0;
}
