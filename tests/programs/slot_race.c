/* Memory written by one thread must read back, on any thread, while other threads map.
   Under karn each fresh 64 MiB piece gets a new KVM memory slot while the other vCPUs
   run (platform/memory.py cover), and adding one releases the GIL. CHECKERS threads each
   map OWN_REGIONS ranges where the kernel chooses (the mmap area grows down into new
   pieces) and keep checking that every one holds their own words: two threads handed one
   range see each other's (docs/design/processes.md 3.3). Meanwhile one thread maps
   ROUNDS regions at fixed addresses, each in a piece no slot covered yet; in each it
   writes a pattern and starts a thread whose stack is in that region, which checks the
   pattern and writes its own (as pthread_create does with a new thread's TLS); the
   checkers check and write those regions too. Prints "ok" or what was wrong. */
#include "karntest.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>

#define MIB (1UL << 20)
#define PIECE (64 * MIB)
#define ROUNDS 16
#define CHECKERS 3
#define PAGES 64 /* pages written in each region, spread over its first 4 MiB */
#define OWN_REGIONS 24 /* each checker maps this many of OWN_SIZE */
#define OWN_SIZE (8 * MIB)
#define BASE 0x40000000UL /* fixed regions from here up, 1.5 pieces apart, below the mmap area */

static char *regions[ROUNDS];
static atomic_int made;    /* regions[0, made) are written and published */
static atomic_int stop;
static atomic_long errors;

static uint64_t word(int region, int page, int who) {
    return 0x9e3779b97f4a7c15ULL * (uint64_t)(region * 4096 + page * 16 + who + 1);
}

static uint64_t *at(char *region, int page, int who) {
    return (uint64_t *)(region + (size_t)page * 65536 + 64 * who);
}

static void bad(const char *what, int region, int page, uint64_t seen, uint64_t want) {
    if (atomic_fetch_add(&errors, 1) < 5)
        printf("bad %s: region %d page %d: %#lx, not %#lx\n", what, region, page,
               (unsigned long)seen, (unsigned long)want);
}

struct child_arg { int round; };

static void *child(void *p) {
    int k = ((struct child_arg *)p)->round;
    for (int page = 0; page < PAGES; page++) {
        if (*at(regions[k], page, 0) != word(k, page, 0))
            bad("creator's word seen by new thread", k, page, *at(regions[k], page, 0),
                word(k, page, 0));
        *at(regions[k], page, 1) = word(k, page, 1);
    }
    return NULL;
}

/* A checker's own regions, mapped where the kernel chooses (the mmap area grows down into
   pieces no slot covers yet, while the other checkers map too): each must be its own. */
static uint64_t own_word(int me, int region, size_t i) {
    return (uint64_t)me << 32 | (uint64_t)region << 24 | i;
}

static int own_regions_ok(uint64_t **own, int count, int me) {
    int ok = 1;
    for (int r = 0; r < count; r++)
        for (size_t i = 0; i < OWN_SIZE / 8; i += 8192)
            if (own[r][i] != own_word(me, r, i)) {
                bad("own region's word", r, (int)(i / 512), own[r][i], own_word(me, r, i));
                ok = 0;
            }
    return ok;
}

static void *checker(void *p) {
    int me = (int)(intptr_t)p; /* 2 + index: slots 0 and 1 of a page are the mapper's */
    uint64_t *own[OWN_REGIONS];
    int owned = 0;
    while (!atomic_load(&stop) || owned < OWN_REGIONS) {
        if (owned < OWN_REGIONS) {
            uint64_t *r = mmap(NULL, OWN_SIZE, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            MUST(r != MAP_FAILED);
            for (size_t i = 0; i < OWN_SIZE / 8; i += 8192) /* a word every 64 KiB */
                r[i] = own_word(me, owned, i);
            own[owned++] = r;
        }
        own_regions_ok(own, owned, me);
        int upto = atomic_load(&made);
        for (int k = 0; k < upto; k++)
            for (int page = 0; page < PAGES; page++) {
                if (*at(regions[k], page, 0) != word(k, page, 0))
                    bad("creator's word seen by checker", k, page, *at(regions[k], page, 0),
                        word(k, page, 0));
                uint64_t *mine = at(regions[k], page, me);
                if (*mine != 0 && *mine != word(k, page, me))
                    bad("checker's own word in region", k, page, *mine, word(k, page, me));
                *mine = word(k, page, me);
            }
    }
    return NULL;
}

int main(void) {
    pthread_t checkers[CHECKERS];
    for (int i = 0; i < CHECKERS; i++)
        MUST(pthread_create(&checkers[i], NULL, checker, (void *)(intptr_t)(2 + i)) == 0);
    uintptr_t next = BASE;
    for (int k = 0; k < ROUNDS; k++) {
        char *r;
        do { /* the next free piece-and-a-half step (something else may be there) */
            r = mmap((void *)next, 8 * MIB, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
            next += PIECE * 3 / 2;
        } while (r == MAP_FAILED && errno == EEXIST && next < 0xe0000000UL);
        MUST(r != MAP_FAILED);
        regions[k] = r;
        for (int page = 0; page < PAGES; page++) {
            (void)*(volatile uint64_t *)at(r, page, 1); /* a read first: the zero page */
            *at(r, page, 0) = word(k, page, 0);
        }
        atomic_store(&made, k + 1);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstack(&attr, r + 4 * MIB, 4 * MIB);
        struct child_arg arg = {k};
        pthread_t t;
        MUST(pthread_create(&t, &attr, child, &arg) == 0);
        MUST(pthread_join(t, NULL) == 0);
        for (int page = 0; page < PAGES; page++)
            if (*at(r, page, 1) != word(k, page, 1))
                bad("new thread's word seen by creator", k, page, *at(r, page, 1),
                    word(k, page, 1));
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < CHECKERS; i++)
        MUST(pthread_join(checkers[i], NULL) == 0);
    long n = atomic_load(&errors);
    if (n)
        printf("%ld bad words\n", n);
    else
        printf("ok\n");
    return n != 0;
}
