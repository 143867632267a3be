/* membarrier(2) as liburcu and musl's dynamic linker use it: QUERY, a private expedited
 * barrier before (EPERM) and after registering, the SYNC_CORE pair, bad commands and
 * flags (EINVAL), and a barrier while another thread spins in user mode (the barrier
 * returns: that thread left guest mode once). Prints what it saw, as native does; the
 * QUERY bits karn does not offer (the global and RSEQ commands) are masked off. */
#include "karntest.h"

#include <linux/membarrier.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

static long mb(int cmd, unsigned flags)
{
    long r = syscall(SYS_membarrier, cmd, flags, 0);
    return r < 0 ? -errno : r;
}

static atomic_int spinning, stop;

static void *spinner(void *arg)
{
    (void)arg;
    atomic_store(&spinning, 1);
    while (!atomic_load(&stop))
        ;
    return NULL;
}

int main(void)
{
    long private = MEMBARRIER_CMD_PRIVATE_EXPEDITED | MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED |
                   MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE |
                   MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE;
    long query = mb(MEMBARRIER_CMD_QUERY, 0);
    printf("query private %s\n", query >= 0 && (query & private) == private ? "all" : "missing");
    printf("unregistered %ld\n", mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0));
    printf("register %ld\n", mb(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0));
    pthread_t t;
    MUST(pthread_create(&t, NULL, spinner, NULL) == 0);
    while (!atomic_load(&spinning))
        ;
    long barriers = 0;
    for (int i = 0; i < 100; i++)
        barriers += mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) == 0;
    printf("barriers %ld\n", barriers);
    atomic_store(&stop, 1);
    MUST(pthread_join(t, NULL) == 0);
    printf("sync_core unregistered %ld\n", mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0));
    printf("sync_core register %ld\n", mb(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0));
    printf("sync_core %ld\n", mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0));
    printf("bad flags %ld\n", mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED, 4));
    printf("bad command %ld\n", mb(1 << 20, 0));
    return 0;
}
