/* Guest memory must keep what each thread wrote while KVM memory slots are added under
   running vCPUs. WORKERS threads keep writing and checking patterns in memory of their
   own (mapped before they start, in pieces already covered): a few words a page over
   their range, their stack, their TLS, and lock-prefixed counters in a shared array;
   every few passes a worker throws its range away (madvise MADV_DONTNEED: reads zeros,
   then refaults) and starts and joins a short thread that checks and writes its own
   stack and TLS (as a new Go or glibc thread does). Meanwhile one thread maps fresh
   regions far apart, each in a 64 MiB piece no slot covers yet (under karn each is a
   new memory slot), touches and checks them; in MODE "churn" it also unmaps and maps
   regions again, and in MODE "reserve" it reserves PROT_NONE ranges and commits parts of
   them with mprotect or MAP_FIXED, as Go's allocator does. Prints "ok ..." or what went
   wrong. Arguments: [mode] [workers] [pieces]. */
#include "karntest.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#define MIB (1UL << 20)
#define PIECE (64 * MIB)
#define MAX_WORKERS 8
#define OWN (8 * MIB)      /* a worker's own range */
#define STRIDE 1024        /* bytes between checked words */
#define COUNTERS 64
#define BASE 0x40000000UL  /* fresh regions from here up, a piece apart */
#define TOP 0xe0000000UL

static atomic_int stop;
static atomic_long errors;
static atomic_long passes;
static atomic_long counters[COUNTERS];
static long added[MAX_WORKERS];
static __thread uint64_t tls_words[64];

static void bad(const char *what, long where, uint64_t seen, uint64_t want) {
    if (atomic_fetch_add(&errors, 1) < 8) {
        printf("bad %s at %ld: %#lx, not %#lx\n", what, where, (unsigned long)seen,
               (unsigned long)want);
        fflush(stdout);
    }
}

static uint64_t pattern(int me, long pass, size_t i) {
    return 0x9e3779b97f4a7c15ULL * ((uint64_t)me << 40 ^ (uint64_t)pass << 20 ^ i) | 1;
}

static void *short_thread(void *p) {
    int me = (int)(intptr_t)p;
    volatile uint64_t stack[512];
    for (int i = 0; i < 64; i++)
        if (tls_words[i] != 0)
            bad("new thread's TLS not zero", i, tls_words[i], 0);
    for (int i = 0; i < 512; i++)
        stack[i] = pattern(me, -1, i);
    for (int i = 0; i < 64; i++)
        tls_words[i] = pattern(me, -2, i);
    for (int i = 0; i < 512; i++)
        if (stack[i] != pattern(me, -1, i))
            bad("new thread's stack", i, stack[i], pattern(me, -1, i));
    for (int i = 0; i < 64; i++)
        if (tls_words[i] != pattern(me, -2, i))
            bad("new thread's TLS", i, tls_words[i], pattern(me, -2, i));
    return NULL;
}

struct worker { int me; uint64_t *own; };

static void *worker(void *p) {
    struct worker *w = p;
    int me = w->me;
    uint64_t *own = w->own;
    volatile uint64_t stack[1024];
    for (long pass = 0; !atomic_load(&stop); pass++) {
        for (size_t i = 0; i < OWN / 8; i += STRIDE / 8)
            own[i] = pattern(me, pass, i);
        for (int i = 0; i < 1024; i++)
            stack[i] = pattern(me, pass, i + 7);
        for (int i = 0; i < 64; i++)
            tls_words[i] = pattern(me, pass, i + 3);
        for (int k = 0; k < 256; k++) {
            atomic_fetch_add(&counters[(k + me) % COUNTERS], 1);
            added[me]++;
        }
        for (size_t i = 0; i < OWN / 8; i += STRIDE / 8)
            if (own[i] != pattern(me, pass, i))
                bad("own word", (long)i, own[i], pattern(me, pass, i));
        for (int i = 0; i < 1024; i++)
            if (stack[i] != pattern(me, pass, i + 7))
                bad("stack word", i, stack[i], pattern(me, pass, i + 7));
        for (int i = 0; i < 64; i++)
            if (tls_words[i] != pattern(me, pass, i + 3))
                bad("TLS word", i, tls_words[i], pattern(me, pass, i + 3));
        if (pass % 8 == 7) {
            MUST(madvise(own, OWN, MADV_DONTNEED) == 0);
            for (size_t i = 0; i < OWN / 8; i += STRIDE / 8)
                if (own[i] != 0)
                    bad("word after MADV_DONTNEED", (long)i, own[i], 0);
        }
        if (pass % 4 == 3) {
            pthread_t t;
            MUST(pthread_create(&t, NULL, short_thread, (void *)(intptr_t)(me + 100)) == 0);
            MUST(pthread_join(t, NULL) == 0);
        }
        atomic_fetch_add(&passes, 1);
    }
    return NULL;
}

/* Write a word every 4 KiB (every 64 KiB when sparse) of [p, p+size), then check. */
static void fill_check(char *p, size_t size, uint64_t seed, size_t step) {
    for (size_t i = 0; i < size; i += step)
        *(uint64_t *)(p + i) = seed ^ i;
    for (size_t i = 0; i < size; i += step)
        if (*(uint64_t *)(p + i) != (seed ^ i))
            bad("mapper's word", (long)i, *(uint64_t *)(p + i), seed ^ i);
}

static char *map_fresh(uintptr_t *next, size_t size, int prot) {
    char *r = MAP_FAILED;
    while (r == MAP_FAILED && *next + size < TOP) {
        r = mmap((void *)*next, size, prot,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
        *next += PIECE;
    }
    return r;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "fresh";
    int workers = argc > 2 ? atoi(argv[2]) : 3;
    int pieces = argc > 3 ? atoi(argv[3]) : 40;
    MUST(workers > 0 && workers <= MAX_WORKERS);
    pthread_t threads[MAX_WORKERS];
    struct worker ws[MAX_WORKERS];
    for (int i = 0; i < workers; i++) {
        ws[i].me = i;
        ws[i].own = mmap(NULL, OWN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        MUST(ws[i].own != MAP_FAILED);
    }
    for (int i = 0; i < workers; i++)
        MUST(pthread_create(&threads[i], NULL, worker, &ws[i]) == 0);
    while (atomic_load(&passes) < workers) /* every worker in its loop */
        ;
    uintptr_t next = BASE;
    int made = 0;
    char *last = NULL;
    for (int k = 0; k < pieces; k++) {
        long before = atomic_load(&passes);
        if (!strcmp(mode, "reserve")) {
            /* Go: reserve PROT_NONE, then commit the front with mprotect, a middle part
               with MAP_FIXED over the reservation */
            char *r = map_fresh(&next, 16 * MIB, PROT_NONE);
            if (r == MAP_FAILED)
                break;
            MUST(mprotect(r, 4 * MIB, PROT_READ | PROT_WRITE) == 0);
            fill_check(r, 4 * MIB, 0x1234500000000000ULL + k, 4096);
            char *m = mmap(r + 8 * MIB, 4 * MIB, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            MUST(m == r + 8 * MIB);
            fill_check(m, 4 * MIB, 0x5432100000000000ULL + k, 4096);
            MUST(madvise(r, 4 * MIB, MADV_DONTNEED) == 0);
            fill_check(r, 4 * MIB, 0x6789000000000000ULL + k, 4096);
        } else {
            char *r = map_fresh(&next, 8 * MIB, PROT_READ | PROT_WRITE);
            if (r == MAP_FAILED)
                break;
            fill_check(r, 8 * MIB, 0xabcde00000000000ULL + k, 4096);
            if (!strcmp(mode, "churn") && last != NULL) {
                MUST(munmap(last, 8 * MIB) == 0);
                char *again = mmap(last, 8 * MIB, PROT_READ | PROT_WRITE,
                                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
                MUST(again == last);
                for (size_t i = 0; i < 8 * MIB; i += 65536)
                    if (*(uint64_t *)(again + i) != 0)
                        bad("remapped word", (long)i, *(uint64_t *)(again + i), 0);
                fill_check(again, 8 * MIB, 0xfeed000000000000ULL + k, 65536);
            }
            last = r;
        }
        made++;
        while (atomic_load(&passes) < before + workers / 2 + 1) /* the workers ran between */
            ;
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < workers; i++)
        MUST(pthread_join(threads[i], NULL) == 0);
    long want = 0, sum = 0;
    for (int i = 0; i < workers; i++)
        want += added[i];
    for (int i = 0; i < COUNTERS; i++)
        sum += atomic_load(&counters[i]);
    if (sum != want)
        bad("atomic counters' sum", 0, (uint64_t)sum, (uint64_t)want);
    long n = atomic_load(&errors);
    if (n)
        printf("%ld bad words, %d regions\n", n, made);
    else
        printf("ok %d regions\n", made);
    return n != 0;
}
