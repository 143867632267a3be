/* Create up to N empty files (and a symlink and a hard link to each) in DIR, report how it
 * stopped, remove them all and create them again: names cost memory too.
 * usage: tmpfs_entries DIR N   (stderr: how many per round) */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[600], other[600];

static int round_of(const char *dir, int n) {
  int made = 0, err = 0;
  for (; made < n; made++) {
    snprintf(path, sizeof path, "%s/f%d", dir, made);
    int fd = open(path, O_CREAT | O_WRONLY | O_EXCL, 0644);
    if (fd < 0) { err = errno; break; }
    close(fd);
    snprintf(other, sizeof other, "%s/l%d", dir, made);
    if (made % 2 ? symlink(path, other) : link(path, other)) { err = errno; made++; break; }
  }
  printf("%s\n", err ? strerror(err) : "all");
  for (int i = 0; i < made; i++) {
    snprintf(path, sizeof path, "%s/f%d", dir, i);
    unlink(path);
    snprintf(path, sizeof path, "%s/l%d", dir, i);
    unlink(path);
  }
  return made;
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : "/tmp";
  int n = argc > 2 ? atoi(argv[2]) : 100000;
  for (int r = 0; r < 2; r++) fprintf(stderr, "round %d: %d\n", r, round_of(dir, n));
  return 0;
}
