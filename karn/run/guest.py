"""The built guest: the one handle that debug/, instance/ and sandbox/ are given, and the
RunPlugin hooks through which the runner drives them.

They import this module only for its types (TYPE_CHECKING), never the builder or the
runner; it imports nothing of theirs at module level.
"""

from __future__ import annotations

import os

from karn.abi.errno import SyscallError
from karn.hints import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from karn.debug.symbols import Symbolizer
    from karn.image.collect import RootManifest
    from karn.kernel.fs.context import FsContext
    from karn.kernel.guestmem import GuestMemory
    from karn.kernel.mm import AddressSpace
    from karn.kernel.net.stack import NetStack
    from karn.kernel.process import Process
    from karn.loader.program import ProgramImage
    from karn.platform.kvm import VirtualMachine
    from karn.platform.machine import KvmMachine
    from karn.platform.timepage import TimePage
    from karn.run.config import RunConfig


class Described(Protocol):
    def describe(self) -> dict[str, Any]: ...


class Guest:
    """One program in its own VM, set up and not yet started (karn/run/builder.py)."""

    def __init__(self, config: RunConfig, manifest: RootManifest, vm: VirtualMachine,
                 machine: KvmMachine, mm: AddressSpace, fs: FsContext, process: Process,
                 image: ProgramImage, time_page: TimePage | None) -> None:
        self.config = config
        self.manifest = manifest  # guest path -> host path of every file of the root
        self.vm = vm
        self.machine = machine
        self.mm = mm
        self.fs = fs
        self.process = process
        self._first_image = image  # the loaded program: its first thread's rip and rsp
        self.time_page = time_page  # the vDSO's clock parameters, kept on the host's
        self.sandbox: Described | None = None  # the monitor's confinement, once made

    @property
    def mem(self) -> GuestMemory:
        """Guest memory as syscall handlers see it: only where the guest has mappings."""
        return self.process.mem

    @property
    def image(self) -> ProgramImage:
        """The running program's start (rip, rsp: its auxv): execve's last, or the first."""
        return self.process.image or self._first_image

    @property
    def program(self) -> str:
        """The guest path of the running program, as execve or the user named it."""
        return self.process.exec_path or self.manifest.entry

    @property
    def net(self) -> NetStack:
        from karn.kernel.net.stack import net_of

        return net_of(self.process)

    def canonical(self, guest_path: str) -> str:
        """The path /proc/self/exe shows: symlinks resolved, as the kernel reports it."""
        try:
            return self.fs.resolve(guest_path).path
        except SyscallError:
            return guest_path  # missing: prepare reports it

    def host_path(self, guest_path: str) -> str | None:
        """The host file behind a guest path of the root; None if there is none."""
        if self.config.root is not None:
            return os.path.join(self.config.root, guest_path.lstrip("/"))
        return self.manifest.files.get(self.canonical(guest_path))

    def symbolizer(self) -> Symbolizer:
        """Symbols of every ELF object mapped now: the program, interpreter, libraries."""
        from karn.debug.objects import mapped_objects
        from karn.debug.symbols import LoadedObject, Symbolizer

        objects = [LoadedObject(o.host_path, o.bias, o.guest_path)
                   for o in mapped_objects(self.mm, self.host_path)]
        return Symbolizer(objects)


class RunPlugin(Protocol):
    """Something a run carries besides its guest (a debug session, an instance record,
    the sandbox). The runner calls attach() once the guest is built and before it runs,
    started() once its first thread runs, finish() once it has ended, with the exit
    status a shell sees (125: karn failed) and the fatal signal (0: none)."""

    def attach(self, guest: Guest) -> None: ...

    def started(self) -> None: ...

    def finish(self, status: int, signal: int) -> None: ...
