/* Memory far apart in the address space, made before and after a fork, in the parent and
   in the child: under karn each new range needs a KVM memory slot (the slots cover only
   what the guest maps, platform/memory.py cover), and a forked monitor's new VM must
   cover what its parent's did. Every range is written and read back by the guest. */
#include "karntest.h"

#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1UL << 20)

/* Far apart and clear of a static program, its heap and the mmap area natively and under
   karn (a 4 GiB guest: its mmap area is in the top 300 MiB). */
static const uintptr_t before_fork[] = {0x48000000, 0x68000000, 0x90000000};
static const uintptr_t child_after[] = {0xa0000000, 0x58000000};
static const uintptr_t parent_after = 0xb0000000;

static char *map_at(uintptr_t addr, size_t size) {
    char *p = mmap((void *)addr, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    MUST(p == (char *)addr);
    return p;
}

/* Write a pattern over [p, p+size) a page apart and check it. */
static int fill_and_check(char *p, size_t size, char seed) {
    for (size_t i = 0; i < size; i += 4096)
        p[i] = (char)(seed + i / 4096);
    for (size_t i = 0; i < size; i += 4096)
        if (p[i] != (char)(seed + i / 4096))
            return 0;
    return 1;
}

static int still(char *p, size_t size, char seed) {
    for (size_t i = 0; i < size; i += 4096)
        if (p[i] != (char)(seed + i / 4096))
            return 0;
    return 1;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    size_t n = sizeof before_fork / sizeof before_fork[0];
    for (size_t i = 0; i < n; i++)
        YESNO("parent writes far memory before the fork",
              fill_and_check(map_at(before_fork[i], 3 * MIB), 3 * MIB, (char)i));
    /* the heap grows by 200 MiB: past any one slot */
    char *heap = sbrk(0);
    MUST(sbrk(200 * MIB) != (void *)-1);
    YESNO("parent writes a 200 MiB heap", fill_and_check(heap, 200 * MIB, 7));
    pid_t pid = fork();
    if (pid == 0) {
        int ok = 1;
        for (size_t i = 0; i < n; i++)
            ok &= still((char *)before_fork[i], 3 * MIB, (char)i);
        ok &= still(heap, 200 * MIB, 7);
        printf("child reads the parent's memory: %s\n", ok ? "yes" : "no");
        ok = fill_and_check((char *)before_fork[0], 3 * MIB, 40);  /* its own copy */
        for (size_t i = 0; i < sizeof child_after / sizeof child_after[0]; i++)
            ok &= fill_and_check(map_at(child_after[i], 5 * MIB), 5 * MIB, (char)(50 + i));
        MUST(sbrk(100 * MIB) != (void *)-1);
        ok &= fill_and_check(heap + 200 * MIB, 100 * MIB, 60);
        printf("child writes old and new far memory: %s\n", ok ? "yes" : "no");
        _exit(ok ? 0 : 1);
    }
    int status;
    MUST(waitpid(pid, &status, 0) == pid);
    printf("child exit status %d\n", WEXITSTATUS(status));
    int ok = 1;
    for (size_t i = 0; i < n; i++)
        ok &= still((char *)before_fork[i], 3 * MIB, (char)i);
    printf("parent's memory unchanged by the child: %s\n", ok ? "yes" : "no");
    YESNO("parent writes far memory after the fork",
          fill_and_check(map_at(parent_after, 9 * MIB), 9 * MIB, 90));
    return 0;
}
