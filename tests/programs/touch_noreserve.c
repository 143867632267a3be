/* Touch MiB of MAP_NORESERVE (or, with "stack", MAP_STACK) memory page by page without
 * a syscall in between: memory --memory does not charge up front, which the monitor's
 * watchdog must stop near the limit.  usage: touch_noreserve MIB [stack] */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int main(int argc, char **argv) {
  long mib = argc > 1 ? atol(argv[1]) : 1;
  int flag = argc > 2 && !strcmp(argv[2], "stack") ? MAP_STACK : MAP_NORESERVE;
  size_t size = (size_t)mib << 20;
  volatile char *p = mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | flag,
                          -1, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  for (size_t off = 0; off < size; off += 4096) p[off] = 1;
  printf("touched %ld MiB\n", mib);
  return 0;
}
