/* Integer division by zero inside a named function: SIGFPE. */
#include <stdio.h>

volatile int divisor = 0;

__attribute__((noinline)) int crash_divide_by_zero(int x)
{
    return x / divisor;
}

int main(void)
{
    printf("about to crash\n");
    fflush(stdout);
    return crash_divide_by_zero(7);
}
