"""The time page ([vvar]) the guest's vDSO reads (vdso/vdso.c): clocks without a VM exit.

The guest reads its TSC (rdtsc runs at CPL3, under PVM too) and extrapolates each clock
from the page: ns = base[clock] + ((tsc - tsc_base) * mult >> 32). The monitor is the
only writer, under a sequence count that is odd while it writes (readers retry).

Parameters: the rate from KVM_GET_TSC_KHZ; the guest TSC at a known host time from
KVM_GET_MSRS(IA32_TSC) on an idle vCPU, bracketed by host clock reads. That covers the
per-VM TSC offset of hardware KVM; under PVM the guest reads the host's TSC (offset 0:
the guest's rdtsc, the MSR and the host's rdtsc agreed within a few µs, 2026-12). Without
an invariant TSC (CPUID 0x80000007 EDX bit 8) the page says mode 0 and the vDSO makes the
real system calls.

resync() keeps the page on the host's clocks, which NTP slews and a host suspend or a
clock set steps: more than STEP_NS off, a clock steps (MONOTONIC, BOOTTIME and RAW only
forward); less, its rate is slewed by at most MAX_SLEW so the error is gone within
SLEW_NS. REALTIME, BOOTTIME and TAI run at MONOTONIC's rate from offsets that change only
when the host's do. Call it often (every monitor tick): it samples once per
`interval` seconds. The first page is written by attach(), before the guest runs.
"""

from __future__ import annotations

import ctypes
import fcntl
import threading
import time
from collections.abc import Callable

from karn import log
from karn.errors import PlatformError
from karn.hints import TYPE_CHECKING
from karn.platform import kvm_abi as K
from karn.platform.kvm import cpuid_entry

if TYPE_CHECKING:
    from karn.platform.machine import KvmMachine

MODE_SYSCALL, MODE_TSC = 0, 1
SHIFT = 32  # mult is ns per TSC tick in 32.32 fixed point
INVARIANT_TSC = 1 << 8  # CPUID 0x80000007 EDX
SAMPLES = 5  # bracketed TSC reads per sample; the narrowest bracket wins
STEP_NS = 200_000
SLEW_NS = 1_000_000_000
MAX_SLEW = 500e-6
OFFSET_STEP_NS = 50_000  # a change of the host's REALTIME-MONOTONIC (etc.) beyond noise
MAX_SAMPLE_WIDTH_NS = 20_000  # a resync sample less certain than this is not used
PUBLISH_MARGIN_NS = 1_000_000
ROUNDING_NS = 2  # the old and the new formula round down differently: up to 2 ns apart
RESYNC_INTERVAL = 1.0
NSEC = 1_000_000_000
CLOCK_MONOTONIC_COARSE = 6  # not in the time module


class TimeData(ctypes.Structure):
    """struct time_page in vdso.c."""

    _fields_ = [
        ("seq", ctypes.c_uint32),
        ("mode", ctypes.c_uint32),
        ("tsc_base", ctypes.c_uint64),
        ("mult", ctypes.c_uint64),
        ("raw_mult", ctypes.c_uint64),
        ("base", ctypes.c_int64 * 5),  # REALTIME, MONOTONIC, BOOTTIME, TAI, MONOTONIC_RAW
        ("coarse_ns", ctypes.c_int64),
    ]


class Sample:
    """The guest TSC and the host's clocks at one instant (± half the bracket). (A plain
    class: a NamedTuple costs ~0.1 ms of every start-up to create.)"""

    __slots__ = ("tsc", "mono", "raw", "offsets", "width")

    def __init__(self, tsc: int, mono: int, raw: int, offsets: tuple[int, int, int],
                 width: int) -> None:
        self.tsc, self.mono, self.raw = tsc, mono, raw
        self.offsets = offsets  # host REALTIME, BOOTTIME, TAI minus MONOTONIC
        self.width = width  # ns: the widest bracket behind these figures (host preempted us)


def _host_offsets() -> tuple[tuple[int, int, int], int]:
    """REALTIME, BOOTTIME and TAI minus MONOTONIC, each from the narrowest of SAMPLES
    brackets, and the widest of those brackets (a preempted read is off by its width)."""
    out, widest = [], 0
    for clock in (time.CLOCK_REALTIME, time.CLOCK_BOOTTIME, time.CLOCK_TAI):
        best: tuple[int, int] | None = None
        for _ in range(SAMPLES):
            before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            value = time.clock_gettime_ns(clock)
            after = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            if best is None or after - before < best[1]:
                best = (value - (before + after) // 2, after - before)
        assert best is not None
        out.append(best[0])
        widest = max(widest, best[1])
    return (out[0], out[1], out[2]), widest


class GuestTsc:
    """The guest's TSC seen from the monitor, through an idle vCPU (a vCPU in KVM_RUN
    holds its fd's lock, so a spare one is taken from the machine and given back)."""

    def __init__(self, machine: KvmMachine) -> None:
        self._machine = machine
        entry = cpuid_entry(machine.vm.cpuid, 0x80000007)
        self.invariant = bool(entry and entry.edx & INVARIANT_TSC)
        self.khz = 0

    def sample(self) -> Sample:
        cpu = self._machine.new_cpu()
        try:
            if not self.khz:
                self.khz = fcntl.ioctl(cpu.fd, K.KVM_GET_TSC_KHZ)
            msrs = K.kvm_msrs(nmsrs=1)
            msrs.entries[0].index = K.MSR_IA32_TSC
            best: tuple[int, int, int] | None = None
            for _ in range(SAMPLES):
                before = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
                fcntl.ioctl(cpu.fd, K.KVM_GET_MSRS, msrs)
                after = time.clock_gettime_ns(time.CLOCK_MONOTONIC_RAW)
                if best is None or after - before < best[1] - best[0]:
                    best = (before, after, msrs.entries[0].data)
        finally:
            self._machine.release_cpu(cpu)
        assert best is not None  # SAMPLES > 0
        before, after, tsc = best
        # The bracket is in RAW (never slewed, so its width is exact); MONOTONIC at the
        # same instant is RAW plus their current difference.
        raw = (before + after) // 2
        mono = raw + time.clock_gettime_ns(time.CLOCK_MONOTONIC) - time.clock_gettime_ns(
            time.CLOCK_MONOTONIC_RAW)
        offsets, width = _host_offsets()
        return Sample(tsc, mono, raw, offsets, max(after - before, width))


class Timeline:
    """One host clock extrapolated from the TSC: ns(tsc) = base + (tsc - tsc_base) * mult
    >> SHIFT, kept on the host clock by steps and slews."""

    def __init__(self, nominal_mult: int, tsc: int, ns: int) -> None:
        self.nominal = nominal_mult
        self.mult = nominal_mult
        self.tsc_base, self.base = tsc, ns
        self.anchor = (tsc, ns)  # the rate is measured from here (the start or last step)

    def at(self, tsc: int) -> int:
        return self.base + (((tsc - self.tsc_base) * self.mult) >> SHIFT)

    def retune(self, tsc: int, host_ns: int, window_ticks: int) -> None:
        """Rebase at `tsc`, where the host clock read `host_ns`. A reader may still use
        the old parameters for window_ticks after `tsc`: a slower rate then starts that
        much later, so no reader sees the clock go back."""
        predicted = self.at(tsc)
        error = host_ns - predicted
        if error > STEP_NS:
            base, self.anchor, correction = host_ns, (tsc, host_ns), 0.0
        else:  # behind: catch up; ahead: slow down (never step back)
            base, correction = predicted, max(-MAX_SLEW, min(MAX_SLEW, error / SLEW_NS))
        anchor_tsc, anchor_ns = self.anchor
        ticks = tsc - anchor_tsc
        rate = (host_ns - anchor_ns) / ticks if ticks > 0 else self.nominal / (1 << SHIFT)
        mult = round(rate * (1 + correction) * (1 << SHIFT))
        # One bad sample must not make the clock race or crawl.
        low, high = self.nominal * (1 - 2 * MAX_SLEW), self.nominal * (1 + 2 * MAX_SLEW)
        mult = int(max(low, min(high, mult)))
        if mult < self.mult:
            base += ((self.mult - mult) * window_ticks) >> SHIFT
        base += ROUNDING_NS
        self.tsc_base, self.base, self.mult = tsc, base, mult


class TimePage:
    """The monitor's side of [vvar]: attach() writes it before the guest runs,
    resync() keeps it on the host's clocks."""

    def __init__(self, tsc: GuestTsc) -> None:
        self._tsc = tsc
        self._data: TimeData | None = None
        self._mapped: Callable[[], bool] = lambda: False
        self._seq = 0
        self._mono: Timeline | None = None
        self._raw: Timeline | None = None
        self._offsets = (0, 0, 0)
        self._coarse_ns = round(time.clock_getres(CLOCK_MONOTONIC_COARSE) * NSEC)
        self._last = 0.0
        self.interval = RESYNC_INTERVAL  # seconds between samples
        self._lock = threading.Lock()  # one writer at a time: the sequence count needs it

    @property
    def mode(self) -> int:
        return MODE_SYSCALL if self._mono is None else MODE_TSC

    def attach(self, page: memoryview, mapped: Callable[[], bool]) -> None:
        """Take the guest's [vvar] page and write the first parameters into it; later
        writes happen only while mapped() says the guest still has it there. A page
        mapped again (execve's new program) gets the parameters this VM already follows
        (~0.3 ms of every execve less than a new TSC sample)."""
        self._data = TimeData.from_buffer(page)
        self._mapped = mapped
        with self._lock:
            if self._mono is not None:
                pass  # calibrated for this VM already: its timelines hold
            elif self._tsc.invariant:
                try:
                    self._start(self._tsc.sample())
                except (OSError, PlatformError) as err:
                    log.debug("vDSO clocks make system calls: no TSC sample (%s)", err)
            else:
                log.debug("vDSO clocks make system calls: the TSC is not invariant")
            self._publish()

    def _start(self, s: Sample) -> None:
        if self._tsc.khz <= 0:
            return
        nominal = round(1_000_000 * (1 << SHIFT) / self._tsc.khz)
        self._mono = Timeline(nominal, s.tsc, s.mono)
        self._raw = Timeline(nominal, s.tsc, s.raw)
        self._offsets = s.offsets
        self._last = time.monotonic()

    def forked(self, machine: KvmMachine) -> None:
        """In a forked monitor: read the TSC through the child's own VM (the parent's
        vCPUs are not there) and start over from a sample, since a new VM's TSC may not
        be its parent's (hardware KVM offsets it per VM); unless it is known to be the
        parent's (PVM: both read the host's), when the parent's parameters, already in
        the child's copy of the page, hold as they are (~0.3 ms of every fork)."""
        self._lock = threading.Lock()
        khz = self._tsc.khz
        self._tsc = GuestTsc(machine)
        if self._mono is None:
            return
        if machine.tsc_as_parent:
            self._tsc.khz = khz
            return
        try:
            self._start(self._tsc.sample())
        except (OSError, PlatformError) as err:
            log.debug("vDSO clocks make system calls in a forked process: %s", err)
            self._mono = None
        if self._mapped():
            self._publish()

    def resync(self) -> bool:
        """Follow the host's clocks; cheap unless `interval` has passed. Whether the
        page was rewritten."""
        mono, raw = self._mono, self._raw
        if mono is None or raw is None or time.monotonic() - self._last < self.interval:
            return False
        if not self._mapped():  # the guest unmapped it: it reads zeros, mode 0 (syscalls)
            self._mono = None
            return False
        with self._lock:
            self._last = time.monotonic()
            try:
                s = self._tsc.sample()
            except (OSError, PlatformError) as err:
                log.debug("vDSO time page not resynced: %s", err)
                return False
            if s.width > MAX_SAMPLE_WIDTH_NS:  # on a busy host: try again next time
                return False
            real, boot, tai = (_follow(old, new, forward_only=i == 1) for i, (old, new)
                               in enumerate(zip(self._offsets, s.offsets, strict=True)))
            self._offsets = (real, boot, tai)
            elapsed = time.clock_gettime_ns(time.CLOCK_MONOTONIC) - s.mono
            window = (elapsed + PUBLISH_MARGIN_NS) * self._tsc.khz // 1_000_000
            mono.retune(s.tsc, s.mono, window)
            raw.retune(s.tsc, s.raw, window)
            if not self._mapped():
                return False
            self._publish()
            return True

    def _publish(self) -> None:
        d = self._data
        if d is None:
            return
        self._seq += 1
        d.seq = self._seq  # odd: readers retry until the even store below
        mono, raw = self._mono, self._raw
        if mono is None or raw is None:
            d.mode = MODE_SYSCALL
        else:
            real, boot, tai = self._offsets
            d.tsc_base = mono.tsc_base
            d.mult = mono.mult
            d.raw_mult = raw.mult
            d.base[:] = (mono.base + real, mono.base, mono.base + boot, mono.base + tai,
                         raw.base)
            d.coarse_ns = self._coarse_ns
            d.mode = MODE_TSC
        self._seq += 1
        d.seq = self._seq


def _follow(old: int, new: int, forward_only: bool) -> int:
    """A host clock's offset from MONOTONIC, kept unless the host's really changed (a
    clock set, a suspend), so sampling noise never moves the guest's clock."""
    if abs(new - old) <= OFFSET_STEP_NS or (forward_only and new < old):
        return old
    return new
