/* Create up to N idle threads (64 KiB stacks), report where creation stopped, end them
 * all, and create them again: a thread's host cost is given back when it ends.
 * usage: idle_threads N */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int pipefd[2];

static void *idle(void *arg) {
  char c;
  (void)arg;
  while (read(pipefd[0], &c, 1) > 0) {} /* until main closes the write end */
  return 0;
}

static int wave(int n, pthread_t *ids) {
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setstacksize(&at, 64 * 1024);
  int made = 0;
  for (; made < n; made++) {
    int r = pthread_create(&ids[made], &at, idle, 0);
    if (r) {
      printf("created %s: %s\n", made ? "some" : "none", strerror(r));
      break;
    }
  }
  return made;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 1000;
  pthread_t *ids = calloc(n, sizeof *ids);
  for (int round = 0; round < 2; round++) {
    if (pipe(pipefd)) return 1;
    int made = wave(n, ids);
    fprintf(stderr, "round %d: %d threads\n", round, made);
    close(pipefd[1]);
    for (int i = 0; i < made; i++) pthread_join(ids[i], 0);
    close(pipefd[0]);
    printf("round %d: %s\n", round, made == n ? "all" : made > 0 ? "stopped" : "none");
  }
  return 0;
}
