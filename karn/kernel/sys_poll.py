"""Readiness: poll/ppoll, select/pselect6, epoll, eventfd.

Files backed by a host fd (pipes, sockets, eventfds, stdio) are polled on the host;
files without one (tmpfs, /dev/null, /proc) are always ready, as regular files are on
Linux. A guest epoll is a host epoll over those host fds. Every wait also polls the
task's waker, so signals and exit interrupt it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import struct
import time
from collections.abc import Callable

from karn.abi.errno import SyscallError
from karn.abi.registers import s32
from karn.kernel.blocking import Interrupted
from karn.kernel.fs.constants import OFlag
from karn.kernel.fs.file import HostFile, OpenFile
from karn.kernel.fs.stat import Stat
from karn.kernel.process import Task
from karn.kernel.sys_time import NSEC, TIMESPEC

POLLIN, POLLPRI, POLLOUT, POLLERR, POLLHUP, POLLNVAL = 1, 2, 4, 8, 16, 32
POLLRDNORM, POLLRDBAND, POLLWRNORM, POLLWRBAND = 0x40, 0x80, 0x100, 0x200
EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP = 1, 4, 8, 16
EPOLLEXCLUSIVE, EPOLLWAKEUP, EPOLLONESHOT, EPOLLET = 1 << 28, 1 << 29, 1 << 30, 1 << 31
EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
EPOLL_CLOEXEC = 0o2000000
EFD_SEMAPHORE, EFD_NONBLOCK, EFD_CLOEXEC = 1, 0o4000, 0o2000000
POLLFD = struct.Struct("<ihh")
EPOLL_EVENT = struct.Struct("<IQ")  # packed on x86-64: 12 bytes
FD_SETSIZE = 1024
MAX_EVENTS = (1 << 31) // EPOLL_EVENT.size
ALWAYS_READY = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM


def _deadline_ms(timeout_ms: int) -> float | None:
    return None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000


def _deadline_ts(task: Task, addr: int) -> float | None:
    if not addr:
        return None
    sec, nsec = TIMESPEC.unpack(task.mem.read(addr, TIMESPEC.size))
    if sec < 0 or not 0 <= nsec < NSEC:
        raise SyscallError(errno.EINVAL)
    return time.monotonic() + sec + nsec / NSEC


class _SignalMask:
    """ppoll/pselect/epoll_pwait's temporary mask; on EINTR the frame restores the old."""

    def __init__(self, task: Task, addr: int, size: int) -> None:
        self.task = task
        self.old: int | None = None
        if addr:
            if size != 8:
                raise SyscallError(errno.EINVAL)
            (mask,) = struct.unpack("<Q", task.mem.read(addr, 8))
            self.old = task.blocked
            task.set_blocked(mask)

    def done(self, interrupted: bool) -> None:
        if self.old is None:
            return
        if interrupted:
            self.task.saved_mask = self.old
        else:
            self.task.set_blocked(self.old)


def _masked(task: Task, addr: int, size: int, wait: Callable[[], int]) -> int:
    """Run a wait with a temporary signal mask; a signal ends it with EINTR (no restart)."""
    mask = _SignalMask(task, addr, size)
    try:
        result = wait()
    except Interrupted:
        mask.done(True)
        raise SyscallError(errno.EINTR) from None
    mask.done(False)
    return result


def _wait_ready(task: Task, watch: list[tuple[int, int]], deadline: float | None,
                immediate: bool, soon: tuple[tuple[OpenFile, int], ...] = ()
                ) -> dict[int, int]:
    """Host fds ready among `watch` ((fd, events)); waits unless `immediate`. Before
    blocking, the files of `soon` may wait a little their own way (OpenFile.ready_soon)."""
    while True:
        if watch:
            poller = select.poll()
            for fd, events in watch:
                poller.register(fd, events)
            ready = dict(poller.poll(0))
            if ready or immediate:
                return ready
        elif immediate:
            return {}
        if task.signal_pending():
            raise Interrupted
        if deadline is not None and time.monotonic() >= deadline:
            return {}
        if any(file.ready_soon(events) for file, events in soon):
            continue
        task.waker.wait(deadline, tuple(watch))


def _poll_files(task: Task, entries: list[tuple[int, int]], deadline: float | None
                ) -> list[int]:
    """revents for each (fd, events), waiting until one is non-zero."""
    fds = task.process.fds
    revents = [0] * len(entries)
    watch: list[tuple[int, int]] = []
    where: list[tuple[int, int]] = []
    files: list[tuple[OpenFile, int]] = []
    for i, (fd, events) in enumerate(entries):
        if fd < 0:
            continue
        try:
            file = fds.get(fd)
        except SyscallError:
            revents[i] = POLLNVAL
            continue
        host = file.host_fd()
        if host is None:
            revents[i] = events & ALWAYS_READY
        else:
            watch.append((host, events))
            where.append((i, host))
            files.append((file, events))
    ready = _wait_ready(task, watch, deadline, immediate=any(revents), soon=tuple(files))
    for i, host in where:
        revents[i] = ready.get(host, 0) & (entries[i][1] | POLLERR | POLLHUP | POLLNVAL)
    return revents


def _do_poll(task: Task, ufds: int, nfds: int, deadline: float | None) -> int:
    if nfds > task.process.fds.limit:
        raise SyscallError(errno.EINVAL)
    raw = task.mem.read(ufds, nfds * POLLFD.size)
    entries = [POLLFD.unpack_from(raw, i * POLLFD.size)[:2] for i in range(nfds)]
    revents = _poll_files(task, [(fd, ev & 0xFFFF) for fd, ev in entries], deadline)
    out = bytearray(raw)
    for i, rev in enumerate(revents):
        struct.pack_into("<h", out, i * POLLFD.size + 6, rev - 0x10000 if rev & 0x8000 else rev)
    task.mem.write(ufds, bytes(out))
    return sum(1 for r in revents if r)


def sys_poll(task: Task, ufds: int, nfds: int, timeout: int) -> int:
    return _do_poll(task, ufds, nfds, _deadline_ms(s32(timeout)))


def sys_ppoll(task: Task, ufds: int, nfds: int, tsp: int, sigmask: int, size: int) -> int:
    deadline = _deadline_ts(task, tsp)
    return _masked(task, sigmask, size, lambda: _do_poll(task, ufds, nfds, deadline))


def _do_select(task: Task, n: int, inp: int, outp: int, exp: int,
               deadline: float | None) -> int:
    n = s32(n)
    if not 0 <= n <= FD_SETSIZE:
        raise SyscallError(errno.EINVAL)
    size = (n + 63) // 64 * 8
    sets = [int.from_bytes(task.mem.read(a, size), "little") if a else 0
            for a in (inp, outp, exp)]
    entries = []
    for fd in range(n):
        events = ((POLLIN if sets[0] >> fd & 1 else 0) | (POLLOUT if sets[1] >> fd & 1 else 0)
                  | (POLLPRI if sets[2] >> fd & 1 else 0))
        if events:
            entries.append((fd, events))
    revents = _poll_files(task, entries, deadline)
    result = [0, 0, 0]
    count = 0
    for (fd, events), rev in zip(entries, revents, strict=True):
        if rev & POLLNVAL:
            raise SyscallError(errno.EBADF)
        for k, bits in enumerate((POLLIN | POLLHUP | POLLERR, POLLOUT | POLLERR, POLLPRI)):
            want = (POLLIN, POLLOUT, POLLPRI)[k]
            if events & want and rev & bits:
                result[k] |= 1 << fd
                count += 1
    for addr, value in zip((inp, outp, exp), result, strict=True):
        if addr:
            task.mem.write(addr, value.to_bytes(size, "little"))
    return count


def sys_select(task: Task, n: int, inp: int, outp: int, exp: int, tvp: int) -> int:
    deadline = None
    if tvp:
        sec, usec = struct.unpack("<qq", task.mem.read(tvp, 16))
        if sec < 0 or not 0 <= usec < 1_000_000:
            raise SyscallError(errno.EINVAL)
        deadline = time.monotonic() + sec + usec / 1e6
    return _do_select(task, n, inp, outp, exp, deadline)


def sys_pselect6(task: Task, n: int, inp: int, outp: int, exp: int, tsp: int, sig: int) -> int:
    deadline = _deadline_ts(task, tsp)
    ss, size = struct.unpack("<QQ", task.mem.read(sig, 16)) if sig else (0, 8)
    return _masked(task, ss, size, lambda: _do_select(task, n, inp, outp, exp, deadline))


# -- epoll -----------------------------------------------------------------------------

class EpollFile(OpenFile):
    """A guest epoll instance: a host epoll over the host fds of the watched files.

    Linux keys a registration by file and fd, so two fds of one open file (a dup: Go's
    net.FileListener) are watched apart, each with its events and data; both are one
    host fd here, which a host epoll takes once. So the host registration asks for what
    any of them asks for, and each event is reported to every registration that asked.
    A wait reads the registrations while another thread's epoll_ctl may change them:
    it walks copies and skips a registration gone meanwhile (it walked the set itself:
    "Set changed size during iteration", EINVAL to the guest, once in 3000 waits of
    test_epoll_wait_survives_fds_taken_off_meanwhile). A copy is made in one C call,
    which no other Python thread interleaves."""

    def __init__(self, flags: int) -> None:
        super().__init__("anon_inode:[eventpoll]", OFlag.RDWR | flags)
        self.epoll = select.epoll(flags=select.EPOLL_CLOEXEC)
        # guest fd -> its file, the file's host fd, events asked, data
        self.watched: dict[int, tuple[OpenFile, int, int, int]] = {}
        self.by_host: dict[int, set[int]] = {}  # host fd -> the guest fds watched on it
        # the watched files with a way to wait before blocking (OpenFile.ready_soon), and
        # their events: asked before a wait blocks, without a walk over every watched file
        self.soon: dict[int, tuple[OpenFile, int]] = {}

    def host_mask(self, host: int) -> int:
        mask = 0
        for gfd in tuple(self.by_host.get(host, ())):
            entry = self.watched.get(gfd)
            if entry is not None:
                mask |= entry[2]
        return mask

    def events(self, ready: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
        """(events, data) for each registration a host event concerns, at most limit."""
        out: list[tuple[int, int]] = []
        for host, ev in ready:
            if host not in self.by_host:  # no longer ours: its guest fd was closed, by
                # another thread since this poll (the host fd is closed, the kernel
                # dropped it: ENOENT or EBADF), or its host fd was reused meanwhile
                with contextlib.suppress(OSError):
                    self.epoll.unregister(host)
                continue
            for gfd in tuple(self.by_host.get(host, ())):
                entry = self.watched.get(gfd)
                if entry is None:
                    continue  # taken off since the copy
                _file, _host, mask, data = entry
                got = ev & (mask | select.EPOLLERR | select.EPOLLHUP)
                if got and len(out) < limit:
                    out.append((got, data))
        return out

    def host_fd(self) -> int | None:
        return self.epoll.fileno()

    def stat(self) -> Stat:
        return Stat.from_host(os.fstat(self.epoll.fileno()))  # an anonymous inode, 0600

    def link_name(self) -> str:
        return "anon_inode:[eventpoll]"

    def close(self) -> None:
        self.epoll.close()


def _epoll_create(task: Task, flags: int) -> int:
    if flags & ~EPOLL_CLOEXEC:
        raise SyscallError(errno.EINVAL)
    return task.process.fds.install(EpollFile(0), bool(flags & EPOLL_CLOEXEC))


def sys_epoll_create(task: Task, size: int) -> int:
    if s32(size) <= 0:
        raise SyscallError(errno.EINVAL)
    return _epoll_create(task, 0)


def sys_epoll_create1(task: Task, flags: int) -> int:
    return _epoll_create(task, s32(flags))


def _epoll(task: Task, epfd: int) -> EpollFile:
    file = task.process.fds.get(s32(epfd))
    if not isinstance(file, EpollFile):
        raise SyscallError(errno.EINVAL)
    return file


def sys_epoll_ctl(task: Task, epfd: int, op: int, fd: int, event: int) -> int:
    ep = _epoll(task, epfd)
    fd, op = s32(fd), s32(op)
    target = task.process.fds.get(fd)
    if target is ep:
        raise SyscallError(errno.EINVAL)
    host = target.host_fd()
    if host is None or target.is_regular or target.is_dir:
        raise SyscallError(errno.EPERM)  # as Linux for regular files and directories
    known = ep.watched.get(fd)
    if known is not None and known[0] is not target:  # that fd's file was closed since
        _forget(ep, fd)
        known = None
    if op in (EPOLL_CTL_ADD, EPOLL_CTL_MOD):
        events, data = EPOLL_EVENT.unpack(task.mem.read(event, EPOLL_EVENT.size))
        mask = events & ~(EPOLLEXCLUSIVE | EPOLLWAKEUP)
        if (known is not None) != (op == EPOLL_CTL_MOD):
            raise SyscallError(errno.EEXIST if known is not None else errno.ENOENT)
        registered = bool(ep.by_host.get(host))
        others = ep.by_host.get(host, set()) - {fd}
        if others and not _host_watches(ep, host):
            for gone in others:  # a host fd closed and reused: its old files left
                _forget(ep, gone)
            registered = False
        ep.watched[fd] = (target, host, mask, data)
        ep.by_host.setdefault(host, set()).add(fd)
        union = ep.host_mask(host)
        try:
            if registered:
                ep.epoll.modify(host, union)
            else:
                ep.epoll.register(host, union)
        except OSError as err:
            _forget(ep, fd)
            raise SyscallError(err.errno or errno.EINVAL) from None
        if type(target).ready_soon is not OpenFile.ready_soon:
            ep.soon[host] = (target, union)
        return 0
    if op == EPOLL_CTL_DEL:
        if known is None:
            raise SyscallError(errno.ENOENT)
        _forget(ep, fd)
        return 0
    raise SyscallError(errno.EINVAL)


def _host_watches(ep: EpollFile, host: int) -> bool:
    """Whether the host epoll still watches host (it drops a host fd closed since)."""
    try:
        ep.epoll.modify(host, ep.host_mask(host))
        return True
    except OSError:
        return False


def _forget(ep: EpollFile, fd: int) -> None:
    """Drop guest fd's registration; the host one goes with the last on its host fd."""
    host = ep.watched.pop(fd)[1]
    guests = ep.by_host.get(host, set())
    guests.discard(fd)
    try:
        if guests:
            ep.epoll.modify(host, ep.host_mask(host))
        else:
            ep.by_host.pop(host, None)
            ep.soon.pop(host, None)
            ep.epoll.unregister(host)
    except OSError:
        pass  # the host fd was closed: the host epoll dropped it then


def _epoll_wait(task: Task, epfd: int, events: int, maxevents: int,
                deadline: float | None) -> int:
    ep = _epoll(task, epfd)
    maxevents = s32(maxevents)
    if not 0 < maxevents <= MAX_EVENTS:
        raise SyscallError(errno.EINVAL)
    task.mem.view(events, maxevents * EPOLL_EVENT.size)  # EFAULT before waiting
    while True:
        ready = ep.epoll.poll(0, maxevents)
        found = ep.events(ready, maxevents) if ready else None
        if found:
            task.mem.write(events, b"".join(EPOLL_EVENT.pack(*pair) for pair in found))
            return len(found)
        if task.signal_pending():
            raise Interrupted
        if deadline is not None and time.monotonic() >= deadline:
            return 0
        if any(file.ready_soon(mask) for file, mask in tuple(ep.soon.values())):
            continue
        task.waker.wait(deadline, ((ep.epoll.fileno(), select.POLLIN),))


def sys_epoll_wait(task: Task, epfd: int, events: int, maxevents: int, timeout: int) -> int:
    return _epoll_wait(task, epfd, events, maxevents, _deadline_ms(s32(timeout)))


def sys_epoll_pwait(task: Task, epfd: int, events: int, maxevents: int, timeout: int,
                    sigmask: int, size: int) -> int:
    deadline = _deadline_ms(s32(timeout))
    return _masked(task, sigmask, size,
                   lambda: _epoll_wait(task, epfd, events, maxevents, deadline))


def sys_epoll_pwait2(task: Task, epfd: int, events: int, maxevents: int, tsp: int,
                     sigmask: int, size: int) -> int:
    deadline = _deadline_ts(task, tsp)
    return _masked(task, sigmask, size,
                   lambda: _epoll_wait(task, epfd, events, maxevents, deadline))


# -- eventfd ---------------------------------------------------------------------------

def sys_eventfd2(task: Task, initval: int, flags: int) -> int:
    flags = s32(flags)
    if flags & ~(EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC):
        raise SyscallError(errno.EINVAL)
    host_flags = os.EFD_CLOEXEC | (os.EFD_NONBLOCK if flags & EFD_NONBLOCK else 0)
    host_flags |= os.EFD_SEMAPHORE if flags & EFD_SEMAPHORE else 0
    fd = os.eventfd(initval & 0xFFFFFFFF, host_flags)
    status = OFlag.NONBLOCK if flags & EFD_NONBLOCK else 0
    file = HostFile(fd, "anon_inode:[eventfd]", OFlag.RDWR | status)
    try:
        return task.process.fds.install(file, bool(flags & EFD_CLOEXEC))
    except SyscallError:
        file.close()
        raise


def sys_eventfd(task: Task, initval: int) -> int:
    return sys_eventfd2(task, initval, 0)


HANDLERS = {
    "poll": sys_poll,
    "ppoll": sys_ppoll,
    "select": sys_select,
    "pselect6": sys_pselect6,
    "epoll_create": sys_epoll_create,
    "epoll_create1": sys_epoll_create1,
    "epoll_ctl": sys_epoll_ctl,
    "epoll_wait": sys_epoll_wait,
    "epoll_pwait": sys_epoll_pwait,
    "epoll_pwait2": sys_epoll_pwait2,
    "eventfd": sys_eventfd,
    "eventfd2": sys_eventfd2,
}

NOTES = {
    "poll": "Files without a host fd (tmpfs, /dev, /proc) are always ready.",
    "epoll_ctl": "Watches files with a host fd (pipes, eventfds, stdio); EPOLLEXCLUSIVE and "
    "EPOLLWAKEUP are accepted and ignored.",
}

