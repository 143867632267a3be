/* The fast-syscall server's polling loop (docs/design/fast-syscalls.md, section 5).
 *
 * Why C: a Python loop polling shared memory holds the GIL (every other monitor thread
 * would wait up to the 5 ms switch interval) and cannot spin for a fraction of a
 * microsecond. poll() spins over the slots' state words with the GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <time.h>

enum { REQ = 1, TAKEN = 2 };

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* poll(base, stride, count, start, idle_ns) -> index of a slot whose state went
 * REQ -> TAKEN, or -1 once idle_ns passed with no request. base is a host address. */
static PyObject *fastpoll_poll(PyObject *self, PyObject *args)
{
    unsigned long long base, idle_ns;
    unsigned int stride, count, start;
    if (!PyArg_ParseTuple(args, "KIIIK", &base, &stride, &count, &start, &idle_ns))
        return NULL;
    if (count == 0 || stride < sizeof(uint32_t) || stride % sizeof(uint32_t))
        return PyLong_FromLong(-1);
    long found = -1;
    Py_BEGIN_ALLOW_THREADS
    uint64_t deadline = now_ns() + idle_ns;
    for (unsigned int round = 0;; round++) {
        for (unsigned int k = 0; k < count; k++) {
            unsigned int i = (start + k) % count;
            uint32_t *state = (uint32_t *)(uintptr_t)(base + (uint64_t)i * stride);
            uint32_t expected = REQ;
            if (__atomic_load_n(state, __ATOMIC_ACQUIRE) == REQ &&
                __atomic_compare_exchange_n(state, &expected, TAKEN, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                found = (long)i;
                break;
            }
        }
        if (found >= 0)
            break;
        __builtin_ia32_pause();
        if ((round & 63) == 0 && now_ns() >= deadline)
            break;
    }
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(found);
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

static PyMethodDef methods[] = {
    {"poll", fastpoll_poll, METH_VARARGS, "Take a requested slot, or -1 after idle_ns."},
    {"cas32", fastpoll_cas32, METH_VARARGS, "Atomic compare-and-swap of a u32."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastpoll", "karn's fast-syscall polling helper", -1, methods,
};

PyMODINIT_FUNC PyInit__fastpoll(void)
{
    return PyModule_Create(&module);
}
