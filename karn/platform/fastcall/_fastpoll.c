/* The fast-syscall server's polling loop (docs/design/fast-syscalls.md, section 5).
 *
 * Why C: a Python loop polling shared memory holds the GIL (every other monitor thread
 * would wait up to the 5 ms switch interval) and cannot spin for a fraction of a
 * microsecond. poll() spins over the slots' state words with the GIL released, and sleeps
 * (futex) without taking the GIL back: a server woken by an exit path starts polling as
 * soon as the host gives it a core, instead of first waiting for the GIL that the waking
 * vCPU thread holds through its whole exit (up to the switch interval, measured).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <x86intrin.h>

enum { REQ = 1, TAKEN = 2 };
enum { ASLEEP = 0, AWAKE = 1 }; /* control.bell (server.py adds STOPPED: never woken) */
enum { REFRESH_ROUNDS = 64 };   /* polling rounds between lease refreshes */

/* Shared with server.py (a ctypes array of six u32). */
struct control {
    uint32_t bell;        /* ASLEEP, AWAKE; wake() changes only ASLEEP */
    uint32_t count;       /* slots in use */
    uint64_t yields_from; /* host TSC: no yield before (the poller's own, see poll) */
    uint64_t yield_pause; /* how long yields stopped after the last one kept off long */
};

struct slots {
    uint64_t base; /* host address of slot 0 */
    unsigned int stride, alive_at;
};

static uint32_t *state_of(const struct slots *s, unsigned int i)
{
    return (uint32_t *)(uintptr_t)(s->base + (uint64_t)i * s->stride);
}

/* Every slot's lease word (a u64 at alive_at) says until which guest TSC the server is
 * known to be polling: a stub whose server is off its host core (asleep, busy serving, or
 * preempted by the host's scheduler) sees the lease run out and takes the exit path. */
static void refresh(const struct slots *s, unsigned int count, uint64_t lease_end)
{
    for (unsigned int i = 0; i < count; i++)
        __atomic_store_n((uint64_t *)(uintptr_t)(s->base + (uint64_t)i * s->stride +
                                                 s->alive_at),
                         lease_end, __ATOMIC_RELAXED);
}

static long take(const struct slots *s, unsigned int count, unsigned int start)
{
    for (unsigned int k = 0; k < count; k++) {
        unsigned int i = (start + k) % count;
        uint32_t *state = state_of(s, i);
        uint32_t expected = REQ;
        if (__atomic_load_n(state, __ATOMIC_ACQUIRE) == REQ &&
            __atomic_compare_exchange_n(state, &expected, TAKEN, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            return (long)i;
    }
    return -1;
}

/* Ends the leases and sleeps until wake(); a request published just before the leases
 * ended is taken instead (its index returned), else -1 once woken. */
static long sleep_until_woken(const struct slots *s, struct control *ctl, unsigned int start)
{
    __atomic_store_n(&ctl->bell, ASLEEP, __ATOMIC_SEQ_CST);
    unsigned int count = __atomic_load_n(&ctl->count, __ATOMIC_ACQUIRE);
    refresh(s, count, 0);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    long found = take(s, count, start);
    if (found >= 0) {
        __atomic_store_n(&ctl->bell, AWAKE, __ATOMIC_SEQ_CST);
        return found;
    }
    while (__atomic_load_n(&ctl->bell, __ATOMIC_SEQ_CST) == ASLEEP)
        syscall(SYS_futex, &ctl->bell, FUTEX_WAIT_PRIVATE, ASLEEP, NULL, NULL, 0);
    return -1;
}

/* The poller idle for yield_ticks lends its core: to whatever else the host wants to run
 * there, most often the client the last answer woke (placed on the waker's core), which
 * ran meanwhile on the guest's core or waited. A yield that kept it off longer than
 * long_ticks met something that keeps the core for whole slices (a busy loop): yields
 * stop for pause_ticks, twice as long when another comes soon after a pause (to 64
 * times: a busy loop then costs the poller a slice every ~0.6 s). */
static uint64_t lend_core(struct control *ctl, uint64_t now, uint64_t long_ticks,
                          uint64_t pause_ticks)
{
    sched_yield();
    uint64_t back = __rdtsc();
    if (back - now > long_ticks) {
        /* another soon after the last pause ended: twice as long; else from the start */
        uint64_t pause = ctl->yield_pause;
        pause = pause && back - ctl->yields_from < pause ? 2 * pause : pause_ticks;
        ctl->yield_pause = pause < 64 * pause_ticks ? pause : 64 * pause_ticks;
        ctl->yields_from = back + ctl->yield_pause;
    }
    return back;
}

/* poll(base, stride, control, start, idle_ticks, cold_ticks, alive_at, guest_offset,
 *      lease_ticks, yield_ticks, long_ticks, pause_ticks)
 * -> index of a slot whose state went REQ -> TAKEN. base and control are host addresses;
 * guest TSC = host TSC + guest_offset (mod 2^64). After idle_ticks (host TSC) of polling
 * with no request it sleeps until wake(); after cold_ticks when it has just been woken or
 * was off its core (its callers went to the exit path meanwhile: the next call comes
 * after such an exit), but never more than 2 * (idle_ticks + cold_ticks) after the last
 * request or wake. Leases are renewed while polling, not after: a server busy serving
 * lets them run out. Every yield_ticks without a request it yields its core (lend_core;
 * 0: never), keeping the leases: a call published meanwhile is taken when it is back. */
static PyObject *fastpoll_poll(PyObject *self, PyObject *args)
{
    unsigned long long base, control, idle_ticks, cold_ticks, guest_offset, lease_ticks;
    unsigned long long yield_ticks, long_ticks, pause_ticks;
    unsigned int stride, start, alive_at;
    if (!PyArg_ParseTuple(args, "KIKIKKIKKKKK", &base, &stride, &control, &start,
                          &idle_ticks, &cold_ticks, &alive_at, &guest_offset, &lease_ticks,
                          &yield_ticks, &long_ticks, &pause_ticks))
        return NULL;
    if (stride < sizeof(uint32_t) || stride % sizeof(uint32_t) ||
        alive_at % sizeof(uint64_t) || alive_at + sizeof(uint64_t) > stride) {
        PyErr_SetString(PyExc_ValueError, "bad slot layout");
        return NULL;
    }
    struct slots s = {base, stride, alive_at};
    struct control *ctl = (struct control *)(uintptr_t)control;
    long found = -1;
    Py_BEGIN_ALLOW_THREADS
    uint64_t now = __rdtsc();
    uint64_t deadline = now + idle_ticks;
    /* however often the host preempts it, it polls at most this long without a request
     * since its last one or its wake (each return to its core gives cold_ticks more) */
    uint64_t last_call = now, most = 2 * (idle_ticks + cold_ticks);
    uint64_t lent = now; /* the last request, wake or yield */
    unsigned int count = __atomic_load_n(&ctl->count, __ATOMIC_ACQUIRE);
    refresh(&s, count, now + guest_offset + lease_ticks);
    for (unsigned int round = 1;; round++) {
        count = __atomic_load_n(&ctl->count, __ATOMIC_ACQUIRE);
        found = take(&s, count, count ? start % count : 0);
        if (found >= 0)
            break;
        __builtin_ia32_pause();
        if (round % REFRESH_ROUNDS)
            continue;
        uint64_t last = now;
        now = __rdtsc();
        if (yield_ticks && now - lent > yield_ticks && now >= ctl->yields_from) {
            now = lent = lend_core(ctl, now, long_ticks, pause_ticks);
            found = take(&s, count, count ? start % count : 0);
            if (found >= 0)
                break;
        }
        /* Off the core since the last look (the host preempted this thread): the leases
         * ran out meanwhile, so stubs did not wait and no request came; that time is not
         * idleness. */
        if (now - last > lease_ticks)
            deadline = now + cold_ticks < last_call + most ? now + cold_ticks
                                                           : last_call + most;
        if (now >= deadline) {
            found = sleep_until_woken(&s, ctl, start);
            if (found >= 0)
                break;
            now = last_call = lent = __rdtsc();
            deadline = now + cold_ticks;
        }
        refresh(&s, count, now + guest_offset + lease_ticks);
    }
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(found);
}

/* wake(control): a sleeping poll() starts polling again. */
static PyObject *fastpoll_wake(PyObject *self, PyObject *args)
{
    unsigned long long control;
    if (!PyArg_ParseTuple(args, "K", &control))
        return NULL;
    uint32_t *bell = &((struct control *)(uintptr_t)control)->bell;
    uint32_t asleep = ASLEEP;
    if (__atomic_compare_exchange_n(bell, &asleep, AWAKE, 0, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST))
        syscall(SYS_futex, bell, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
    Py_RETURN_NONE;
}

/* tsc() -> the host's TSC now (to measure the guest's offset from it). */
static PyObject *fastpoll_tsc(PyObject *self, PyObject *args)
{
    return PyLong_FromUnsignedLongLong(__rdtsc());
}

/* cas32(addr, old, new) -> True if the u32 at host address addr was old and is now new. */
static PyObject *fastpoll_cas32(PyObject *self, PyObject *args)
{
    unsigned long long addr;
    unsigned int old, new;
    if (!PyArg_ParseTuple(args, "KII", &addr, &old, &new))
        return NULL;
    uint32_t expected = old;
    int done = __atomic_compare_exchange_n((uint32_t *)(uintptr_t)addr, &expected, new, 0,
                                           __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    return PyBool_FromLong(done);
}

/* publish64(addr, value): store the u64 at host address addr with a full barrier (xchg):
 * later reads of guest memory (a futex word) come after the store is visible to the
 * guest's vCPUs, as a stub's mfence orders its own store before its read. */
static PyObject *fastpoll_publish64(PyObject *self, PyObject *args)
{
    unsigned long long addr, value;
    if (!PyArg_ParseTuple(args, "KK", &addr, &value))
        return NULL;
    __atomic_exchange_n((uint64_t *)(uintptr_t)addr, (uint64_t)value, __ATOMIC_SEQ_CST);
    Py_RETURN_NONE;
}

/* wait_u64(buffer, offset, old, spin_ns) -> the u64 at buffer[offset], once it is no longer
 * old or after spin_ns of spinning (GIL released), whichever comes first. A channel's
 * receiver watches its ring's published count with it before it blocks
 * (docs/design/channels.md): a message that comes within the spin costs no host wake-up.
 * The buffer may be read-only (the receiver's view of a ring). */
static PyObject *fastpoll_wait_u64(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t offset;
    unsigned long long old, spin_ns;
    if (!PyArg_ParseTuple(args, "y*nKK", &view, &offset, &old, &spin_ns))
        return NULL;
    if (offset < 0 || offset % sizeof(uint64_t) ||
        offset + (Py_ssize_t)sizeof(uint64_t) > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "offset outside the buffer");
        return NULL;
    }
    const uint64_t *word = (const uint64_t *)((const char *)view.buf + offset);
    uint64_t value;
    Py_BEGIN_ALLOW_THREADS
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t start = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    for (unsigned int round = 1;; round++) {
        value = __atomic_load_n(word, __ATOMIC_ACQUIRE);
        if (value != old || spin_ns == 0)
            break;
        __builtin_ia32_pause();
        if (round % 32)
            continue;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec - start >= spin_ns)
            break;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLongLong(value);
}

/* answer(slot, state_at, alive_at, result_at, lease_ahead, result, state): the server's
 * answer in one call (a served call's Python runs cold, ~0.3 µs a statement: four
 * statements here took ~1.5 µs). slot is the slot's host address, the *_at offsets in
 * it; the lease is renewed to (host TSC + lease_ahead) mod 2^64, the result stored (any
 * int, taken mod 2^64), then the state, last: a stub reads the result once it sees the
 * state. */
static PyObject *fastpoll_answer(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "answer() takes 7 arguments");
        return NULL;
    }
    uint64_t word[5];
    for (int i = 0; i < 5; i++) {
        word[i] = PyLong_AsUnsignedLongLong(args[i]);
        if (word[i] == (uint64_t)-1 && PyErr_Occurred())
            return NULL;
    }
    uint64_t result = PyLong_AsUnsignedLongLongMask(args[5]);
    if (result == (uint64_t)-1 && PyErr_Occurred())
        return NULL;
    unsigned long state = PyLong_AsUnsignedLong(args[6]);
    if (state == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    uint64_t slot = word[0];
    __atomic_store_n((uint64_t *)(uintptr_t)(slot + word[2]), __rdtsc() + word[4],
                     __ATOMIC_RELAXED);
    __atomic_store_n((uint64_t *)(uintptr_t)(slot + word[3]), result, __ATOMIC_RELAXED);
    __atomic_store_n((uint32_t *)(uintptr_t)(slot + word[1]), (uint32_t)state,
                     __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"answer", (PyCFunction)(void (*)(void))fastpoll_answer, METH_FASTCALL,
     "Renew a slot's lease, store its result, then its state."},
    {"poll", fastpoll_poll, METH_VARARGS, "Take a requested slot (sleeping while idle)."},
    {"wake", fastpoll_wake, METH_VARARGS, "Wake a sleeping poll()."},
    {"tsc", fastpoll_tsc, METH_NOARGS, "The host's time-stamp counter."},
    {"cas32", fastpoll_cas32, METH_VARARGS, "Atomic compare-and-swap of a u32."},
    {"publish64", fastpoll_publish64, METH_VARARGS, "Store a u64 with a full barrier."},
    {"wait_u64", fastpoll_wait_u64, METH_VARARGS, "Spin until a u64 changes, bounded."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpoll", "karn's fast-syscall polling helper", -1, methods,
};

/* What server.py's load_helper checks: a module built from an older source (its calls
 * differ) counts as none. */
enum { ABI = 3 };

PyMODINIT_FUNC PyInit__fastpoll(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && PyModule_AddIntConstant(m, "ABI", ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
