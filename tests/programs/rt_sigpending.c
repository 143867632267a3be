/* Real-time signals queue one siginfo each, up to RLIMIT_SIGPENDING: past it sigqueue and
 * tgkill fail with EAGAIN, kill() succeeds (the signal is pending once more at most). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LIMIT 16
static volatile int delivered;
static void on_signal(int sig) { (void)sig; delivered++; }

int main(void) {
  struct rlimit rl = {LIMIT, LIMIT};
  if (setrlimit(RLIMIT_SIGPENDING, &rl)) perror("setrlimit");
  sigset_t rt;
  sigemptyset(&rt);
  sigaddset(&rt, SIGRTMIN);
  sigaddset(&rt, SIGRTMIN + 1);
  sigprocmask(SIG_BLOCK, &rt, 0);
  signal(SIGRTMIN, on_signal);
  signal(SIGRTMIN + 1, on_signal);
  int queued = 0, err = 0;
  for (int i = 0; i < 10 * LIMIT; i++) {
    union sigval v = {.sival_int = i};
    if (sigqueue(getpid(), SIGRTMIN, v)) { err = errno; break; }
    queued++;
  }
  printf("sigqueue: %s, within the limit: %s\n", strerror(err), queued <= LIMIT ? "yes" : "no");
  int r = syscall(SYS_tgkill, getpid(), gettid(), SIGRTMIN + 1);
  printf("tgkill: %s\n", r ? strerror(errno) : "ok");
  int kills = 0;
  for (int i = 0; i < 100; i++) kills += kill(getpid(), SIGRTMIN + 1) == 0;
  printf("kill: %d of 100 ok\n", kills);
  sigprocmask(SIG_UNBLOCK, &rt, 0);
  printf("delivered: %s\n", delivered == queued + 1 ? "each queued one, and the kill once"
                                                     : "something else");
  return 0;
}
