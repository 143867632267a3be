/* Timeouts and timers set centuries ahead (as a fuzzer or a "sleep forever" idiom does):
 * Linux saturates them; the calls block until woken or interrupted, and timers stay armed. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define FAR (1LL << 62)
#define CENTURY (100LL * 365 * 24 * 3600)

static int wake_pipe[2];
static atomic_int futex_word;
static atomic_int sleeper_done;

static void on_usr1(int sig) { (void)sig; }

static void *poller(void *arg) {
  (void)arg;
  struct pollfd p = {.fd = wake_pipe[0], .events = POLLIN};
  struct timespec far = {.tv_sec = FAR};
  int r = ppoll(&p, 1, &far, NULL);
  printf("ppoll: %d\n", r);
  return NULL;
}

static void *futex_waiter(void *arg) {
  (void)arg;
  struct timespec far = {.tv_sec = FAR};
  long r = syscall(SYS_futex, &futex_word, FUTEX_WAIT_PRIVATE, 0, &far, NULL, 0);
  /* woken (0) or the word had changed already (EAGAIN): both are a wake-up */
  printf("futex: %s\n", r == 0 || errno == EAGAIN ? "woken" : "failed");
  return NULL;
}

static void *sleeper(void *arg) {
  (void)arg;
  struct timespec far = {.tv_sec = FAR};
  int r = nanosleep(&far, NULL);
  printf("nanosleep: %s\n", r == -1 && errno == EINTR ? "interrupted" : "returned");
  atomic_store(&sleeper_done, 1);
  return NULL;
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  struct itimerval it = {.it_value = {.tv_sec = FAR}};
  printf("setitimer: %d\n", setitimer(ITIMER_REAL, &it, NULL));
  struct itimerval left;
  getitimer(ITIMER_REAL, &left);
  printf("itimer armed for over a century: %s\n", left.it_value.tv_sec > CENTURY ? "yes" : "no");

  timer_t t;
  struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR2};
  printf("timer_create: %d\n", timer_create(CLOCK_MONOTONIC, &ev, &t));
  struct itimerspec spec = {.it_value = {.tv_sec = FAR}, .it_interval = {.tv_sec = FAR}};
  printf("timer_settime: %d\n", timer_settime(t, 0, &spec, NULL));
  struct itimerspec got;
  timer_gettime(t, &got);
  printf("timer armed for over a century: %s\n", got.it_value.tv_sec > CENTURY ? "yes" : "no");

  struct sigaction sa = {.sa_handler = on_usr1};
  sigaction(SIGUSR1, &sa, NULL);
  if (pipe(wake_pipe)) return 99;
  pthread_t a, b, c;
  pthread_create(&a, NULL, poller, NULL);
  pthread_create(&b, NULL, futex_waiter, NULL);
  pthread_create(&c, NULL, sleeper, NULL);
  if (write(wake_pipe[1], "x", 1) != 1) return 98;
  pthread_join(a, NULL);
  atomic_store(&futex_word, 1);
  while (pthread_tryjoin_np(b, NULL) == EBUSY) {
    syscall(SYS_futex, &futex_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    sched_yield();
  }
  while (!atomic_load(&sleeper_done)) {  /* until the signal finds it inside nanosleep */
    pthread_kill(c, SIGUSR1);
    struct timespec tick = {.tv_nsec = 10 * 1000 * 1000};
    nanosleep(&tick, NULL);
  }
  pthread_join(c, NULL);
  printf("done\n");
  return 0;
}
