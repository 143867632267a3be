/* An illegal instruction (ud2) inside a named function: SIGILL. */
#include <stdio.h>

__attribute__((noinline)) void crash_illegal_instruction(void)
{
    __asm__ volatile("ud2");
}

int main(void)
{
    printf("about to crash\n");
    fflush(stdout);
    crash_illegal_instruction();
    return 0;
}
