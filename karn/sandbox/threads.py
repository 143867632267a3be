"""Apply per-thread confinement to every thread of the monitor.

no_new_privs, capabilities, network namespaces and Landlock domains belong to a *thread*
in Linux, not to the process, and the kernel here (Landlock ABI 7) has no flag to apply
a Landlock domain to all threads at once (seccomp has SECCOMP_FILTER_FLAG_TSYNC; that is
used for the filter). Threads that exist before confinement (the control socket's,
--metrics') would stay unconfined, and any Python code in the monitor can make them run
something. So, like glibc's setuid() broadcast (SIGSETXID), every thread is signalled and
its handler makes the same few system calls itself. The handler cannot be Python (Python
signal handlers run only on the main thread, later), so it is the small machine-code
routine below, in its own executable page; the main thread calls it directly.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import threading
import time

from karn.hints import TYPE_CHECKING

if TYPE_CHECKING:
    import signal
else:  # the C module: `signal` makes enums of its names at import, ~0.5 ms of start-up
    import _signal as signal

SIGNAL = signal.SIGRTMIN + 6  # unused by karn (vCPU kicks use SIGRTMIN+2)
TIMEOUT = 2.0

# void confine_thread(int sig), x86-64, reads its parameters from the data block at 0x80:
#   if (netns >= 0 && setns(netns, CLONE_NEWNET)) goto fail;      # 308
#   if (caps && capset(&hdr, data)) goto fail;                    # 126
#   if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) goto fail;        # 157
#   if (ruleset >= 0 && landlock_restrict_self(ruleset, 0)) goto fail;   # 446
#   atomic ++done; return;  fail: atomic ++failed; return;
_CODE = bytes.fromhex(
    "8b3d7e00000085ff7810b834010000be000000400f0585c0755e833d67000000007419b87e000000"
    "488d3d69000000488d356a0000000f0585c0753cb89d000000bf26000000be0100000031d24531d2"
    "4531c00f0585c0751f8b3d2100000085ff780db8be01000031f60f0585c07508f0ff0515000000c3"
    "f0ff0511000000c3"
)
_RULESET, _NETNS, _CAPS, _DONE, _FAILED, _HDR, _DATA = 0x80, 0x84, 0x88, 0x8C, 0x90, 0x98, 0xA0
_CAP_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)


class _Sigaction(ctypes.Structure):  # glibc's struct sigaction on x86-64
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_uint64 * 16),
                ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]


class ThreadRoutine:
    """The routine and its parameters; `apply_everywhere()` runs it on every thread."""

    def __init__(self, ruleset_fd: int = -1, netns_fd: int = -1,
                 keep_caps: int | None = None) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._page[: len(_CODE)] = _CODE
        self._base = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        self._set(_RULESET, ruleset_fd)
        self._set(_NETNS, netns_fd)
        self._netns = _namespace(os.fstat(netns_fd)) if netns_fd >= 0 else None
        self._set(_CAPS, keep_caps is not None)
        if keep_caps is not None:  # version 3: two 32-bit halves of effective/permitted
            self._set(_HDR, _CAP_VERSION_3)
            for half in (0, 1):
                bits = (keep_caps >> (32 * half)) & 0xFFFFFFFF
                self._set(_DATA + 12 * half, bits)  # effective
                self._set(_DATA + 12 * half + 4, bits)  # permitted; inheritable stays 0
        self._fn = ctypes.CFUNCTYPE(None, ctypes.c_int)(self._base)

    def _set(self, offset: int, value: int) -> None:
        ctypes.c_int32.from_address(self._base + offset).value = value

    def _get(self, offset: int) -> int:
        return ctypes.c_int32.from_address(self._base + offset).value

    def apply_everywhere(self) -> int:
        """Run on this thread, then on every other one; the number of threads confined.
        OSError if a thread failed or did not answer."""
        self._fn(0)
        done = {threading.get_native_id()}
        answers = 1  # the routine's runs so far, each counted done or failed
        action = _Sigaction(handler=self._base, flags=0x10000000)  # SA_RESTART
        old = _Sigaction()
        if _libc.sigaction(SIGNAL, ctypes.byref(action), ctypes.byref(old)) != 0:
            raise OSError(ctypes.get_errno(), "sigaction")
        try:
            while True:  # again: a thread may have started one before it was confined
                todo = [tid for tid in _thread_ids() if tid not in done]
                if not todo:
                    break
                sent = [tid for tid in todo if not self._inherited(tid) and _tgkill(tid)]
                answers += len(sent)
                self._wait(answers)
                done.update(todo)
        finally:
            _libc.sigaction(SIGNAL, ctypes.byref(old), None)
        if self._get(_FAILED):
            raise OSError(0, f"{self._get(_FAILED)} thread(s) could not be confined")
        return len(done)

    def _inherited(self, tid: int) -> bool:
        """Whether the thread was started by a thread already confined, and so is confined
        too (it inherited the creds, the Landlock domain and the network namespace): the
        routine's setns would fail there, the capabilities to do it being gone. Only a
        confined thread can have started a thread in the new network namespace."""
        if self._netns is None:
            return False  # the routine's other steps may safely run twice
        try:
            return _namespace(os.stat(f"/proc/self/task/{tid}/ns/net")) == self._netns
        except OSError:
            return False  # it ended: tgkill says so

    def _wait(self, expected: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        while self._get(_DONE) + self._get(_FAILED) < expected:
            if time.monotonic() > deadline:
                raise OSError(0, "a monitor thread did not answer the confinement signal")
            time.sleep(0.0005)


def _thread_ids() -> list[int]:
    """Every thread of the process, Python's or not."""
    return [int(tid) for tid in os.listdir("/proc/self/task")]


def _namespace(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _tgkill(tid: int) -> bool:
    """False when the thread has ended meanwhile (ESRCH)."""
    if _libc.syscall(234, os.getpid(), tid, SIGNAL) == 0:  # tgkill
        return True
    err = ctypes.get_errno()
    if err == errno.ESRCH:
        return False
    raise OSError(err, f"tgkill {tid}")
