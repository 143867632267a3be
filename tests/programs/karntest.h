/* Helpers shared by the test programs. Everything printed must be the same natively and
 * under karn: print return values and errno, never addresses, pids or times. */
#ifndef KARNTEST_H
#define KARNTEST_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* prctl's ambient-capability options, for C libraries whose headers lack them */
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_IS_SET 1
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

/* Evaluate EXPR, print "label = value" and, when it failed (-1), the errno name. */
#define SHOW(label, expr)                                                     \
    do {                                                                      \
        errno = 0;                                                            \
        long show_r_ = (long)(expr);                                          \
        int show_e_ = errno;                                                  \
        if (show_r_ == -1)                                                    \
            printf("%s = -1 %s\n", (label), errno_name(show_e_));             \
        else                                                                  \
            printf("%s = %ld\n", (label), show_r_);                           \
    } while (0)

/* Print "label: yes/no" for a condition. */
#define YESNO(label, cond) printf("%s: %s\n", (label), (cond) ? "yes" : "no")

/* Abort with a message when a set-up step fails (the rest would be meaningless). */
#define MUST(expr)                                                            \
    do {                                                                      \
        if (!(expr)) {                                                        \
            printf("MUST failed line %d: %s (errno %d)\n", __LINE__, #expr, errno); \
            fflush(stdout);                                                   \
            exit(99);                                                         \
        }                                                                     \
    } while (0)

static inline const char *errno_name(int e)
{
    switch (e) {
    case 0: return "OK";
    case EPERM: return "EPERM";
    case ESRCH: return "ESRCH";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EPROTONOSUPPORT: return "EPROTONOSUPPORT";
    case EFAULT: return "EFAULT";
    case EEXIST: return "EEXIST";
    case EXDEV: return "EXDEV";
    case ENOTDIR: return "ENOTDIR";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case EMFILE: return "EMFILE";
    case ENOTTY: return "ENOTTY";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case ESPIPE: return "ESPIPE";
    case EROFS: return "EROFS";
    case EPIPE: return "EPIPE";
    case ERANGE: return "ERANGE";
    case ENAMETOOLONG: return "ENAMETOOLONG";
    case ENOSYS: return "ENOSYS";
    case ENOTEMPTY: return "ENOTEMPTY";
    case ELOOP: return "ELOOP";
    case EOVERFLOW: return "EOVERFLOW";
    default: {
        static char buf[32];
        snprintf(buf, sizeof buf, "errno%d", e);
        return buf;
    }
    }
}

#endif
