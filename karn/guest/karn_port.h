/* karn_port.h: a partition's ports mapped into the program, so that messages move
 * through the channel's shared-memory ring without a system call each.
 *
 * karn (docs/systems.md) gives each partition its ports as /dev/ports/NAME: one write()
 * sends a message, one read() receives one. Each of those is a system call served by
 * the monitor. A program that includes this header maps the ring instead
 * (docs/design/channels.md, "Mapped ports"): a send is a copy into the ring plus, at
 * most every notify_ns, one ioctl that wakes the receiver; a receive is a copy out of
 * the ring, and blocks (an ioctl and a poll) only when the ring is empty. The
 * receiver's view of the ring is read-only: writing it changes nothing the sender sees.
 *
 *     struct karn_port in;
 *     if (karn_port_open(&in, "readings") != 0) perror("readings");
 *     char buf[512];
 *     ssize_t n = karn_port_recv(&in, buf, sizeof buf);
 *
 * Messages sent with write() and with karn_port_send() share one order; so do read()
 * and karn_port_recv(). One thread per port end at a time (as the ring has one writer
 * and one reader). Single header, C99 with GCC/Clang builtins, x86-64 Linux.
 */
#ifndef KARN_PORT_H
#define KARN_PORT_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* ioctl requests on a port's fd (karn/abi/portmap.py) */
#define KARN_PORT_INFO 0x80406b01UL   /* struct karn_port_info */
#define KARN_PORT_NOTIFY 0x6b02UL     /* sender: wake the receiver */
#define KARN_PORT_ARM 0x6b03UL        /* receiver: returns messages waiting; then poll() */
#define KARN_PORT_FREED 0x6b04UL      /* receiver: a sender held back may go on */

#define KARN_PORT_SOURCE 1u           /* info.flags: this end sends */
#define KARN_PORT_QUEUING 2u          /* a queuing port (else sampling) */
#define KARN_PORT_BACKPRESSURE 4u     /* an ordinary queuing channel: the receiver holds
                                         the sender back (not a diode) */

#define KARN_PORT_HEADER 64           /* ring: published count at 0, slots from here */
#define KARN_PORT_SLOT_HEADER 24      /* slot: seq + 1 (0 while written), time, length */

struct karn_port_info {
    uint32_t version, flags;
    uint64_t slots;         /* messages the ring holds */
    uint64_t slot_size;     /* the largest payload a slot holds */
    uint64_t stride;        /* bytes from one slot to the next */
    uint64_t ring_size;     /* bytes of the ring, mapped at offset 0 */
    uint64_t reader_offset; /* mmap offset of the reader page (4096 bytes) */
    uint64_t limit;         /* the largest message this end may send or accept */
    uint64_t notify_ns;     /* sender: wake the receiver at most this often */
};

struct karn_port {
    int fd;
    struct karn_port_info info;
    volatile uint8_t *ring;
    volatile uint64_t *reader; /* position, received, dropped, rejected; NULL: a diode's sender */
    uint64_t notified_ns;      /* when the sender last woke the receiver */
    uint64_t spin_ns;          /* how long a receive spins before it blocks (default 50 us) */
};

#define KARN_PORT_BARRIER() __asm__ __volatile__("" ::: "memory")

static inline uint64_t karn_port_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the vDSO: no system call */
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline volatile uint64_t *karn_port_published(const struct karn_port *p)
{
    return (volatile uint64_t *)p->ring;
}

static inline volatile uint8_t *karn_port_slot(const struct karn_port *p, uint64_t seq)
{
    return p->ring + KARN_PORT_HEADER + (seq % p->info.slots) * p->info.stride;
}

/* Open /dev/ports/NAME (or a path with a '/') and map its ring. 0, or -1 with errno. */
static inline int karn_port_open(struct karn_port *p, const char *name)
{
    char path[256];
    struct stat st;
    memset(p, 0, sizeof *p);
    p->fd = -1;
    p->spin_ns = 50000;
    if (snprintf(path, sizeof path, strchr(name, '/') ? "%s" : "/dev/ports/%s", name)
        >= (int)sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (stat(path, &st) != 0)
        return -1;
    int source = (st.st_mode & 0222) != 0; /* a port is one-way: its mode says which */
    p->fd = open(path, (source ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
    if (p->fd < 0 || ioctl(p->fd, KARN_PORT_INFO, &p->info) != 0)
        goto fail;
    if (p->info.version != 1 || !p->info.slots) {
        errno = EPROTO;
        goto fail;
    }
    void *ring = mmap(NULL, p->info.ring_size, source ? PROT_READ | PROT_WRITE : PROT_READ,
                      MAP_SHARED, p->fd, 0);
    if (ring == MAP_FAILED)
        goto fail;
    p->ring = ring;
    if (!source || (p->info.flags & KARN_PORT_BACKPRESSURE)) { /* a diode's sender: never */
        void *page = mmap(NULL, 4096, source ? PROT_READ : PROT_READ | PROT_WRITE,
                          MAP_SHARED, p->fd, (off_t)p->info.reader_offset);
        if (page == MAP_FAILED)
            goto fail;
        p->reader = page;
    }
    return 0;
fail:;
    int saved = errno;
    if (p->ring)
        munmap((void *)p->ring, p->info.ring_size);
    if (p->fd >= 0)
        close(p->fd);
    p->ring = NULL;
    p->fd = -1;
    errno = saved;
    return -1;
}

static inline void karn_port_close(struct karn_port *p)
{
    if (p->reader)
        munmap((void *)p->reader, 4096);
    if (p->ring)
        munmap((void *)p->ring, p->info.ring_size);
    if (p->fd >= 0)
        close(p->fd);
    memset(p, 0, sizeof *p);
    p->fd = -1;
}

/* Send one message. 0, or -1 with errno (EMSGSIZE over the port's limit). A queuing
 * channel whose receiver is behind by a whole ring waits in write() for space (or
 * fails with EAGAIN if the fd was made O_NONBLOCK). */
static inline int karn_port_send(struct karn_port *p, const void *data, size_t len)
{
    if (len > p->info.limit || len > p->info.slot_size) {
        errno = EMSGSIZE;
        return -1;
    }
    volatile uint64_t *published = karn_port_published(p);
    uint64_t seq = *published;
    if (p->reader && seq - p->reader[0] >= p->info.slots)
        return write(p->fd, data, len) == (ssize_t)len ? 0 : -1;
    volatile uint8_t *slot = karn_port_slot(p, seq);
    *(volatile uint64_t *)slot = 0; /* being written: a reader here sees a torn copy */
    KARN_PORT_BARRIER();
    memcpy((void *)(slot + KARN_PORT_SLOT_HEADER), data, len);
    *(volatile uint64_t *)(slot + 8) = karn_port_now_ns();
    *(volatile uint32_t *)(slot + 16) = (uint32_t)len;
    KARN_PORT_BARRIER(); /* x86-64 keeps stores in order; the compiler must too */
    *(volatile uint64_t *)slot = seq + 1;
    KARN_PORT_BARRIER();
    *published = seq + 1;
    KARN_PORT_BARRIER();
    /* Wake the receiver at most every notify_ns: what comes between is seen by a
     * receiver that is awake, or by its last wait before it sleeps, which the monitor
     * makes last notify_ns after its last wake-up. The time is read after publishing. */
    uint64_t now = karn_port_now_ns();
    if (now - p->notified_ns >= p->info.notify_ns) {
        p->notified_ns = now;
        if (ioctl(p->fd, KARN_PORT_NOTIFY) != 0)
            return -1;
    }
    return 0;
}

/* Publish the position and counters a receive moved; free a sender held back. */
static inline void karn_port_moved(struct karn_port *p, uint64_t start, uint64_t pos,
                                   uint64_t received, uint64_t dropped, uint64_t rejected)
{
    volatile uint64_t *r = p->reader;
    r[1] += received;
    r[2] += dropped;
    r[3] += rejected;
    KARN_PORT_BARRIER();
    r[0] = pos;
    if (p->info.flags & KARN_PORT_BACKPRESSURE) {
        /* The sender marks itself held back, then reads our position: with a full
         * fence between our store and this load, either it saw our new position or we
         * see the count it published before it stopped. */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (*karn_port_published(p) - start >= p->info.slots)
            ioctl(p->fd, KARN_PORT_FREED);
    }
}

/* Copy slot seq out: its length, or -1 when the sender rewrote it meanwhile. */
static inline int64_t karn_port_copy(const struct karn_port *p, uint64_t seq, void *buf,
                                     size_t size)
{
    volatile uint8_t *slot = karn_port_slot(p, seq);
    uint64_t tag = *(volatile uint64_t *)slot;
    KARN_PORT_BARRIER();
    uint32_t len = *(volatile uint32_t *)(slot + 16);
    if (tag != seq + 1 || len > p->info.slot_size)
        return -1;
    memcpy(buf, (const void *)(slot + KARN_PORT_SLOT_HEADER), len < size ? len : size);
    KARN_PORT_BARRIER();
    return *(volatile uint64_t *)slot == seq + 1 ? (int64_t)len : -1;
}

/* Receive the next message without waiting: its length (what does not fit in buf is
 * dropped, as read() does), or -1 with errno EAGAIN when none waits. */
static inline ssize_t karn_port_try_recv(struct karn_port *p, void *buf, size_t size)
{
    uint64_t start = p->reader[0], pos = start, received = 0, dropped = 0, rejected = 0;
    ssize_t got = -1;
    for (;;) {
        uint64_t published = *karn_port_published(p);
        if ((int64_t)(published - pos) <= 0)
            break;
        if (published - pos > p->info.slots) { /* overwritten before we came: a gap */
            dropped += published - p->info.slots - pos;
            pos = published - p->info.slots;
        }
        int64_t len = karn_port_copy(p, pos, buf, size);
        pos++;
        if (len < 0) {
            dropped++;
        } else if ((uint64_t)len > p->info.limit) {
            rejected++;
        } else {
            received++;
            got = (ssize_t)(len < (int64_t)size ? len : (int64_t)size);
            break;
        }
    }
    if (pos != start)
        karn_port_moved(p, start, pos, received, dropped, rejected);
    if (got < 0)
        errno = EAGAIN;
    return got;
}

/* The newest message of a sampling port (taken or not), or -1 with EAGAIN if none came
 * (or the newest is being rewritten: the newer one is coming; or over the limit). */
static inline ssize_t karn_port_latest(struct karn_port *p, void *buf, size_t size)
{
    for (int tries = 0; tries < 4; tries++) {
        uint64_t published = *karn_port_published(p), pos = p->reader[0];
        if (!published)
            break;
        int64_t len = karn_port_copy(p, published - 1, buf, size);
        if (len < 0 || (uint64_t)len > p->info.limit)
            continue;
        if ((int64_t)(published - pos) > 0)
            karn_port_moved(p, pos, published, 1, published - 1 - pos, 0);
        return (ssize_t)(len < (int64_t)size ? len : (int64_t)size);
    }
    errno = EAGAIN;
    return -1;
}

/* Receive the next message, waiting for one at most timeout_ms (-1: without end):
 * spin_ns in user mode, then in the monitor (an ioctl and a poll). -1 with errno
 * ETIMEDOUT when none came in time, EINTR when a signal came meanwhile. */
static inline ssize_t karn_port_recv_within(struct karn_port *p, void *buf, size_t size,
                                            int timeout_ms)
{
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX
                                       : karn_port_now_ns() + (uint64_t)timeout_ms * 1000000u;
    for (;;) {
        ssize_t n = karn_port_try_recv(p, buf, size);
        if (n >= 0 || errno != EAGAIN)
            return n;
        uint64_t pos = p->reader[0], now = karn_port_now_ns(), until = now + p->spin_ns;
        int moved = 0;
        while (!moved && now < until && now < deadline) {
            for (int i = 0; i < 64 && !moved; i++) {
                __builtin_ia32_pause();
                moved = *karn_port_published(p) != pos;
            }
            now = karn_port_now_ns();
        }
        if (moved)
            continue;
        if (now >= deadline) {
            errno = ETIMEDOUT;
            return -1;
        }
        int waiting = ioctl(p->fd, KARN_PORT_ARM);
        if (waiting < 0)
            return -1;
        if (waiting)
            continue;
        struct pollfd pfd = {p->fd, POLLIN, 0};
        int wait_ms = timeout_ms < 0 ? -1 : (int)((deadline - now + 999999) / 1000000);
        if (poll(&pfd, 1, wait_ms) < 0)
            return -1;
    }
}

/* Receive the next message, waiting for one as long as it takes. */
static inline ssize_t karn_port_recv(struct karn_port *p, void *buf, size_t size)
{
    return karn_port_recv_within(p, buf, size, -1);
}

#endif
