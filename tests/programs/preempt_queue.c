/* 50 threads share a bounded queue guarded by a try-lock: 25 producers put, 25 consumers
 * take, and a thread that finds the lock taken, the queue full or empty calls sched_yield
 * and retries (non-blocking work, like Python's put_nowait/get_nowait loops). Prints the
 * totals, the same on every run. */
#include "karntest.h"
#include <pthread.h>
#include <sched.h>

#define PAIRS 25
#define ITEMS 200 /* per producer, and per consumer */
#define SLOTS 8

static volatile int lock;
static long ring[SLOTS];
static int head, count;
static long consumed[PAIRS];

static int try_lock(void) { return __sync_bool_compare_and_swap(&lock, 0, 1); }
static void unlock(void) { __sync_lock_release(&lock); }

static void *producer(void *arg) {
    long id = (long)arg;
    for (int i = 0; i < ITEMS;) {
        if (try_lock()) {
            if (count < SLOTS) {
                ring[(head + count++) % SLOTS] = id * 1000 + i;
                i++;
            }
            unlock();
        }
        sched_yield();
    }
    return NULL;
}

static void *consumer(void *arg) {
    long id = (long)arg;
    for (int i = 0; i < ITEMS;) {
        if (try_lock()) {
            if (count > 0) {
                consumed[id] += ring[head];
                head = (head + 1) % SLOTS;
                count--;
                i++;
            }
            unlock();
        }
        sched_yield();
    }
    return NULL;
}

int main(void) {
    pthread_t threads[2 * PAIRS];
    for (long i = 0; i < PAIRS; i++) {
        MUST(pthread_create(&threads[2 * i], NULL, producer, (void *)i) == 0);
        MUST(pthread_create(&threads[2 * i + 1], NULL, consumer, (void *)i) == 0);
    }
    for (int i = 0; i < 2 * PAIRS; i++)
        MUST(pthread_join(threads[i], NULL) == 0);
    long total = 0;
    for (int i = 0; i < PAIRS; i++)
        total += consumed[i];
    printf("threads %d items %d sum %ld left %d\n", 2 * PAIRS, PAIRS * ITEMS, total, count);
    return 0;
}
