/* Many threads, then exit_group from one of them while the others sleep, spin, make
 * syscalls or are just waking from a futex: the monitor must end with the guest's status
 * (regression: it segfaulted signalling vCPU threads that had already exited).
 * usage: thread_exit_storm NTHREADS STATUS [DELAY_MS before exit_group, default 20] */
#define _GNU_SOURCE
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static atomic_int go;

static void *worker(void *arg) {
  long i = (long)arg;
  while (!atomic_load(&go)) syscall(SYS_futex, &go, FUTEX_WAIT_PRIVATE, 0, 0, 0, 0);
  switch (i % 8) { /* mostly blocked: they all leave at once on exit_group */
  case 0: for (volatile unsigned long n = 0;; n++) {} break;
  case 1: for (;;) getppid();
  default: { struct timespec ts = {30, 0}; nanosleep(&ts, 0); }
  }
  return 0;
}

int main(int argc, char **argv) {
  int nthreads = argc > 1 ? atoi(argv[1]) : 100;
  int status = argc > 2 ? atoi(argv[2]) : 0;
  long delay_ms = argc > 3 ? atol(argv[3]) : 20;
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setstacksize(&at, 64 * 1024);
  for (long i = 0; i < nthreads; i++) {
    pthread_t t;
    if (pthread_create(&t, &at, worker, (void *)i)) {
      perror("pthread_create");
      return 1;
    }
  }
  printf("threads: %d\n", nthreads);
  fflush(stdout);
  atomic_store(&go, 1);
  syscall(SYS_futex, &go, FUTEX_WAKE_PRIVATE, INT_MAX, 0, 0, 0);
  struct timespec ts = {delay_ms / 1000, delay_ms % 1000 * 1000000};
  nanosleep(&ts, 0);
  syscall(SYS_exit_group, status);
  return 99;
}
