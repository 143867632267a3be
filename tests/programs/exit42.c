/* Exit status: stdout is flushed by exit(), atexit handlers run, the status is 42. */
#include <stdio.h>
#include <stdlib.h>

static void goodbye(void)
{
    printf("atexit handler ran\n");
}

int main(void)
{
    atexit(goodbye);
    printf("exiting with 42\n");
    return 42;
}
