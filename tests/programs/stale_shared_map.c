/* MAP_SHARED write-back must reach the mapped file, whatever the fd number came to mean:
 * the fd is closed before the write-back and its number reused by another file; a
 * MAP_FIXED mapping over a shared one; and a mapping still there at exit.
 * usage: stale_shared_map DIR */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static char dir[256];

static int make(const char *name, char fill) {
  char path[512], z[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0644);
  memset(z, fill, sizeof z);
  if (fd < 0 || write(fd, z, sizeof z) != sizeof z) perror(path);
  return fd;
}

static void show(const char *name) {
  char path[512], buf[32] = {0};
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_RDONLY);
  if (pread(fd, buf, 28, 0) < 0) perror(path);
  printf("%s starts with: %.28s\n", name, buf);
  close(fd);
}

int main(int argc, char **argv) {
  snprintf(dir, sizeof dir, "%s", argc > 1 ? argv[1] : "/rw");
  int a = make("a", 'A');
  char *m = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, a, 0);
  close(a); /* the mapping keeps the file; the fd number is free */
  int b = make("b", 'B');
  printf("fd reused: %s\n", b == a ? "yes" : "no");
  memcpy(m, "WRITTEN-THROUGH-MAPPING-OF-A", 28);
  munmap(m, 4096);
  show("a");
  show("b");
  close(b);

  int c = make("c", 'C');
  m = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, c, 0);
  close(c);
  memcpy(m, "SHARED-BEFORE-MAP-FIXED-OF-C", 28);
  mmap(m, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  memcpy(m, "ANONYMOUS-MUST-NOT-REACH-C!!", 28);
  munmap(m, 4096);
  show("c");

  int d = make("d", 'D');
  m = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, d, 0);
  close(d);
  memcpy(m, "LEFT-MAPPED-AT-EXIT-IN-D....", 28);
  fflush(stdout);
  return 0; /* d is written back at exit */
}
