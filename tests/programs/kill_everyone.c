/* kill(-1, sig) from a process alone in its pid namespace (karn's guest, or pid 1 under
 * `unshare --pid --fork`): every process but the caller is no process at all.
 * Refuses to run as any other pid: kill(-1) would then signal the whole host. */
#include "karntest.h"

#include <signal.h>
#include <unistd.h>

static volatile sig_atomic_t got;

static void handler(int sig)
{
    got = sig;
}

int main(void)
{
    if (getpid() != 1) {
        printf("not pid 1: refusing to call kill(-1)\n");
        return 2;
    }
    MUST(signal(SIGUSR1, handler) != SIG_ERR);
    SHOW("kill(-1, SIGUSR1)", kill(-1, SIGUSR1));
    SHOW("kill(-1, 0)", kill(-1, 0));
    YESNO("the caller got SIGUSR1", got == SIGUSR1);
    SHOW("kill(1, SIGUSR1)", kill(1, SIGUSR1));
    YESNO("the caller got SIGUSR1 from kill(1)", got == SIGUSR1);
    return 0;
}
