/* Start-up benchmark: does as little as a program can and exits. */
#include <stdio.h>

int main(void)
{
    puts("hello");
    return 0;
}
