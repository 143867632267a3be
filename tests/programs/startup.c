/* Process start-up: argv, envp, auxv, stdin pass-through, and the exit status. */
#include "karntest.h"

#include <elf.h>
#include <link.h>
#include <stdint.h>
#include <sys/auxv.h>
#include <unistd.h>

#ifndef AT_MINSIGSTKSZ
#define AT_MINSIGSTKSZ 51
#endif
#ifndef AT_HWCAP2
#define AT_HWCAP2 26
#endif
#ifndef AT_EXECFN
#define AT_EXECFN 31
#endif
#ifndef AT_RANDOM
#define AT_RANDOM 25
#endif

extern char **environ;
extern const ElfW(Ehdr) __ehdr_start;
extern char _start[];

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* getauxval that also says whether the entry was present at all. */
static unsigned long aux(unsigned long type, int *present)
{
    errno = 0;
    unsigned long v = getauxval(type);
    *present = !(v == 0 && errno == ENOENT);
    return v;
}

int main(int argc, char **argv)
{
    int present;

    /* argv */
    printf("argc = %d\n", argc);
    const char *base = strrchr(argv[0], '/');
    printf("argv[0] basename = %s\n", base ? base + 1 : argv[0]);
    for (int i = 1; i < argc; i++)
        printf("argv[%d] = [%s]\n", i, argv[i]);
    YESNO("argv[argc] is NULL", argv[argc] == NULL);

    /* envp, sorted */
    int n = 0;
    while (environ[n])
        n++;
    char **env = malloc(sizeof(char *) * (n + 1));
    memcpy(env, environ, sizeof(char *) * n);
    qsort(env, n, sizeof *env, cmp);
    printf("envc = %d\n", n);
    for (int i = 0; i < n; i++)
        printf("env: %s\n", env[i]);
    free(env);

    /* auxv */
    unsigned long phdr = aux(AT_PHDR, &present);
    YESNO("AT_PHDR points at our program headers",
          present && phdr == (uintptr_t)&__ehdr_start + __ehdr_start.e_phoff);
    printf("AT_PHENT = %lu\n", aux(AT_PHENT, &present));
    YESNO("AT_PHNUM matches ELF header", aux(AT_PHNUM, &present) == __ehdr_start.e_phnum);
    printf("AT_PAGESZ = %lu\n", aux(AT_PAGESZ, &present));
    unsigned long at_base = aux(AT_BASE, &present);
    printf("AT_BASE present: %s\n", present ? "yes" : "no");
    YESNO("AT_BASE nonzero", at_base != 0);
    if (at_base)
        YESNO("AT_BASE points at an ELF header", memcmp((void *)at_base, ELFMAG, SELFMAG) == 0);
    YESNO("AT_ENTRY is _start", aux(AT_ENTRY, &present) == (uintptr_t)_start);
    unsigned char *rnd = (unsigned char *)aux(AT_RANDOM, &present);
    int nonzero = 0;
    for (int i = 0; rnd && i < 16; i++)
        nonzero |= rnd[i];
    YESNO("AT_RANDOM has 16 random bytes", present && rnd && nonzero);
    /* glibc's ld.so rewrites its copy of AT_HWCAP, so only check it is there */
    YESNO("AT_HWCAP nonzero", aux(AT_HWCAP, &present) != 0 && present);
    aux(AT_HWCAP2, &present);
    printf("AT_HWCAP2 present: %s\n", present ? "yes" : "no");
    printf("AT_CLKTCK = %lu\n", aux(AT_CLKTCK, &present));
    const char *execfn = (const char *)aux(AT_EXECFN, &present);
    YESNO("AT_EXECFN is argv[0]", execfn && strcmp(execfn, argv[0]) == 0);
    const char *platform = (const char *)aux(AT_PLATFORM, &present);
    printf("AT_PLATFORM = %s\n", platform ? platform : "(none)");
    YESNO("AT_UID is getuid", aux(AT_UID, &present) == getuid() && present);
    YESNO("AT_EUID is geteuid", aux(AT_EUID, &present) == geteuid() && present);
    YESNO("AT_GID is getgid", aux(AT_GID, &present) == getgid() && present);
    YESNO("AT_EGID is getegid", aux(AT_EGID, &present) == getegid() && present);
    printf("AT_SECURE = %lu\n", aux(AT_SECURE, &present));
    unsigned long mss = aux(AT_MINSIGSTKSZ, &present);
    YESNO("AT_MINSIGSTKSZ present and sane", present && mss >= 1024 && mss <= 65536);

    /* the stack is usable: a deep-ish recursion-free big local */
    volatile char big[256 * 1024];
    big[0] = 1;
    big[sizeof big - 1] = 2;
    YESNO("256 KiB on the stack", big[0] + big[sizeof big - 1] == 3);

    /* stdin to EOF */
    unsigned long total = 0, hash = 5381;
    unsigned char buf[4096];
    ssize_t r;
    while ((r = read(0, buf, sizeof buf)) > 0) {
        total += (unsigned long)r;
        for (ssize_t i = 0; i < r; i++)
            hash = hash * 33 + buf[i];
    }
    printf("stdin read result = %ld\n", (long)r);
    printf("stdin bytes = %lu hash = %lu\n", total, hash);
    return argc > 1 && strcmp(argv[argc - 1], "fail") == 0 ? 3 : 0;
}
