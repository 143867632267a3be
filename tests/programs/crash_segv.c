/* A NULL pointer write (default), with argument "read" a read at 0x1238, with "call" a
 * call through a NULL function pointer (an instruction fetch at 0).
 * The faulting function has a name the crash report should show. */
#include <stdio.h>
#include <string.h>

volatile int *volatile null_pointer = 0;

__attribute__((noinline)) void crash_null_write(void)
{
    *null_pointer = 42;
}

__attribute__((noinline)) int crash_low_read(void)
{
    return *(volatile int *)((volatile char *)null_pointer + 0x1238);
}

void (*volatile null_function)(void) = 0;

__attribute__((noinline)) void crash_null_call(void)
{
    null_function();
}

int main(int argc, char **argv)
{
    printf("about to crash\n");
    fflush(stdout);
    if (argc > 1 && strcmp(argv[1], "read") == 0)
        return crash_low_read();
    if (argc > 1 && strcmp(argv[1], "call") == 0)
        crash_null_call();
    crash_null_write();
    return 0;
}
