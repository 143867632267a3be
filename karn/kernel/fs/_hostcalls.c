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
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The first arguments' check: nargs of them, args[0] an int fd. 0 and *dirfd set, or -1
 * with the Python error set. */
static int take_dirfd(const char *name, Py_ssize_t want, PyObject *const *args,
                      Py_ssize_t nargs, int *dirfd)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments", name, want);
        return -1;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return -1;
    if (fd < INT_MIN || fd > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "dirfd out of range");
        return -1;
    }
    *dirfd = (int)fd;
    return 0;
}

/* openat2(dirfd, path, flags, mode, resolve) -> fd; OSError with the host's errno. */
static PyObject *hostcalls_openat2(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int dirfd;
    if (take_dirfd("openat2", 5, args, nargs, &dirfd) < 0)
        return NULL;
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

/* lstat_beneath(dirfd, parent, name, resolve) -> (mode, ino, dev, nlink, uid, gid, rdev,
 * size, blksize, blocks, atime_ns, mtime_ns, ctime_ns): the parent opened O_PATH below
 * dirfd with openat2, name looked at there without following it, the parent closed. One
 * call for what takes three from Python (~1 µs more: every stat of a path below a volume).
 * OSError with the host's errno; EXDEV is openat2's "the path leaves dirfd". */
static PyObject *hostcalls_lstat_beneath(PyObject *self, PyObject *const *args,
                                         Py_ssize_t nargs)
{
    int dirfd;
    if (take_dirfd("lstat_beneath", 4, args, nargs, &dirfd) < 0)
        return NULL;
    struct open_how how = {0};
    how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW;
    how.resolve = PyLong_AsUnsignedLongLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *parent = NULL, *name = NULL;
    if (!PyUnicode_FSConverter(args[1], &parent))
        return NULL;
    if (!PyUnicode_FSConverter(args[2], &name)) {
        Py_DECREF(parent);
        return NULL;
    }
    struct stat st;
    int failed = 0, code = 0;
    Py_BEGIN_ALLOW_THREADS
    long fd = syscall(SYS_openat2, dirfd, PyBytes_AS_STRING(parent), &how, sizeof(how));
    if (fd < 0) {
        failed = 1;
        code = errno;
    } else {
        if (fstatat(fd, PyBytes_AS_STRING(name), &st, AT_SYMLINK_NOFOLLOW) < 0) {
            failed = 1;
            code = errno;
        }
        close(fd);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(parent);
    Py_DECREF(name);
    if (failed) {
        errno = code;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return Py_BuildValue("(KKKKKKKLLLLLL)", (unsigned long long)st.st_mode,
                         (unsigned long long)st.st_ino, (unsigned long long)st.st_dev,
                         (unsigned long long)st.st_nlink, (unsigned long long)st.st_uid,
                         (unsigned long long)st.st_gid, (unsigned long long)st.st_rdev,
                         (long long)st.st_size, (long long)st.st_blksize,
                         (long long)st.st_blocks,
                         st.st_atim.tv_sec * 1000000000LL + st.st_atim.tv_nsec,
                         st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec,
                         st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec);
}

static PyMethodDef methods[] = {
    {"lstat_beneath", (PyCFunction)(void (*)(void))hostcalls_lstat_beneath, METH_FASTCALL,
     "lstat_beneath(dirfd, parent, name, resolve) -> the 13 fields of karn's Stat"},
    {"openat2", (PyCFunction)(void (*)(void))hostcalls_openat2, METH_FASTCALL,
     "openat2(dirfd, path, flags, mode, resolve) -> fd"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_hostcalls", "host calls Python's os module lacks", -1, methods,
};

PyMODINIT_FUNC PyInit__hostcalls(void) { return PyModule_Create(&module); }
