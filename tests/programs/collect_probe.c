/* V5 probe: says whether the guest can open argv[1]; calls probe_lib() from the library it
 * is linked with (tests/programs/collect_probe_lib.c), so that library is a DT_NEEDED entry
 * (found by an absolute name, an RPATH/RUNPATH or $ORIGIN, as the test links it). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int probe_lib(void);

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/";
    int fd = open(path, O_RDONLY);
    printf("%s: %s\n", path, fd >= 0 ? "readable" : strerror(errno));
    return probe_lib();
}
