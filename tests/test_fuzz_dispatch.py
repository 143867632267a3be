"""Property: the syscall layer takes any number and any arguments in its stride.

Drives karn.kernel.syscalls.dispatch directly, with a real Process and Task of a real
unikernel (KVM VM, guest memory, the loaded program, its filesystem and network stack),
whose vCPU is set up but never run. Whatever hypothesis throws at it, a call returns
either a value >= 0 or -errno, never raises anything but the deliberate ProcessExit or
ThreadExit, never reaches the dispatcher's "internal error" path, and never hangs: a call
that blocks must be interruptible the way a signal interrupts it.
"""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from karn.abi.syscalls import SYSCALL_NUMBERS
from karn.kernel import syscalls
from karn.kernel.fs.fdtable import FdTable
from karn.kernel.process import ProcessExit, Task, ThreadExit
from karn.run.builder import build
from karn.run.config import RunConfig

MAX_ERRNO = 4095
HANG_SECONDS = 10.0
INTERRUPT_AFTER = 0.05
# Calls that would run the (never started) guest: new threads start at the given rip.
NEVER = {SYSCALL_NUMBERS[n] for n in ("clone", "clone3", "fork", "vfork")}
MASK64 = (1 << 64) - 1


class Kernel:
    """One unikernel's kernel state; rebuilt when an example ends the process."""

    def __init__(self, program: str) -> None:
        self.program = program
        self.build()

    def build(self) -> None:
        self.guest = build(RunConfig(program=self.program))
        proc = self.guest.process
        devnull = os.open(os.devnull, os.O_RDWR)
        proc.fds = FdTable.with_stdio(host_fds=(devnull, devnull, devnull))  # not pytest's
        os.close(devnull)
        self.task = Task(proc, proc.pid, None)
        self.task.cpu = self.guest.machine.new_cpu()
        self.task.cpu.start({"rip": self.guest.image.rip, "rsp": self.guest.image.rsp}, 0)
        self.stack = self.guest.image.rsp  # pointers near here are real, mapped guest memory

    def call(self, nr: int, args: tuple[int, ...]) -> object:
        """The result or the exception; fails if the call hangs."""
        box: list[object] = []

        def serve() -> None:
            try:
                box.append(syscalls.dispatch(self.task, nr, args))
            except BaseException as err:  # noqa: BLE001 - judged by the caller
                box.append(err)

        worker = threading.Thread(target=serve, daemon=True)
        worker.start()
        worker.join(INTERRUPT_AFTER)
        if worker.is_alive():  # what a signal does to a blocked call: exit_requested + a wake-up
            self.task.exit_requested = True
            self.task.interrupt()
            worker.join(HANG_SECONDS)
            if worker.is_alive():
                pytest.fail(f"syscall {nr}{args} hangs: not interruptible", pytrace=False)
            self.task.exit_requested = False
        return box[0]

    def ended(self) -> bool:
        return self.guest.process.exit_status is not None


@pytest.fixture(scope="module")
def kernel(build) -> Kernel:
    return Kernel(str(build("exit42", "static")))


def arguments(stack: int) -> st.SearchStrategy[int]:
    near = st.integers(-65536, 65536).map(lambda d: (stack + d) & MASK64)
    return st.one_of(
        st.integers(0, 64),  # fds, small counts, flags
        st.sampled_from([0, MASK64, MASK64 - 4095, 1 << 63, (1 << 63) - 1, 0x7FFFF000,
                         0xFFFF800000000000, 0x0000800000000000, 0xFFFF, 0x10000]),
        near,  # pointers into the guest's stack
        st.integers(0, MASK64),
        st.integers(0, 32).map(lambda b: 1 << b),  # single flag bits
    )


@pytest.mark.slow
@settings(max_examples=800, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_syscall_with_any_arguments_returns_a_result_or_errno(kernel, data):
    nr = data.draw(st.one_of(st.integers(0, 470), st.integers(0, MASK64)), label="nr")
    if nr in NEVER:
        return
    args = tuple(data.draw(arguments(kernel.stack), label=f"arg{i}") for i in range(6))
    result = kernel.call(nr, args)
    if isinstance(result, (ProcessExit, ThreadExit)):
        pass  # deliberate: exit, exit_group, a fatal signal sent to itself
    elif isinstance(result, BaseException):
        raise AssertionError(f"syscall {nr}{args} raised {result!r}") from result
    else:
        assert isinstance(result, int), f"syscall {nr}{args} returned {result!r}"
        # (an interrupted call's ERESTARTSYS, 512, is in range: the exit loop handles it)
        assert result >= 0 or 1 <= -result <= MAX_ERRNO, (
            f"syscall {nr}{args} returned {result}")
    assert not syscalls._reported, f"internal error serving {syscalls._reported}"
    if kernel.ended():
        kernel.build()
