/* A failed check that calls abort() two frames below main (line numbers are asserted). */
#include <stdio.h>
#include <stdlib.h>

static void __attribute__((noinline)) check_positive(int value)
{
    if (value <= 0) {
        fprintf(stderr, "check failed: %d\n", value);
        abort();
    }
}

int main(int argc, char **argv)
{
    (void)argv;
    check_positive(1 - argc);
    return 0;
}
