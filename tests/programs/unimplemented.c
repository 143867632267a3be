/* Syscalls that no Linux implements: -ENOSYS natively; karn must say ENOSYS too, and
 * log the name once. Also an unknown number far beyond the table. */
#include "karntest.h"

#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_afs_syscall
#define SYS_afs_syscall 183
#endif

int main(void)
{
    for (int i = 0; i < 3; i++)
        SHOW("afs_syscall", syscall(SYS_afs_syscall, 0, 0, 0));
    SHOW("syscall 1000", syscall(1000, 0, 0, 0));
    SHOW("syscall 1000 again", syscall(1000, 0, 0, 0));
    SHOW("still alive", 1);
    return 0;
}
