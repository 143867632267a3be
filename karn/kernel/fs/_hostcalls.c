/* Host calls Python's os module lacks, for host-backed mounts (hostfs.py).
 *
 * Why C: openat2(2) through ctypes costs ~1.5-2.5 µs more than the call itself (the
 * open_how structure, byref, the generic foreign call), and a host mount's every open
 * of a path deeper than one name makes it (a web server's every request). The call is
 * made with the GIL released, as os.open makes its own. Optional: without it hostfs.py
 * makes the same call through ctypes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

/* openat2(dirfd, path, flags, mode, resolve) -> fd; OSError with the host's errno. */
static PyObject *hostcalls_openat2(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "openat2() takes 5 arguments");
        return NULL;
    }
    long dirfd = PyLong_AsLong(args[0]);
    if (dirfd == -1 && PyErr_Occurred())
        return NULL;
    if (dirfd < INT_MIN || dirfd > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "dirfd out of range");
        return NULL;
    }
    struct open_how how = {0};
    how.flags = PyLong_AsUnsignedLongLong(args[2]);
    how.mode = PyLong_AsUnsignedLongLong(args[3]);
    how.resolve = PyLong_AsUnsignedLongLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(args[1], &path))
        return NULL;
    long fd;
    Py_BEGIN_ALLOW_THREADS
    fd = syscall(SYS_openat2, dirfd, PyBytes_AS_STRING(path), &how, sizeof(how));
    Py_END_ALLOW_THREADS
    Py_DECREF(path);
    if (fd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(fd);
}

static PyMethodDef methods[] = {
    {"openat2", (PyCFunction)(void (*)(void))hostcalls_openat2, METH_FASTCALL,
     "openat2(dirfd, path, flags, mode, resolve) -> fd"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hostcalls", "host calls Python's os module lacks", -1, methods,
};

PyMODINIT_FUNC PyInit__hostcalls(void) { return PyModule_Create(&module); }
