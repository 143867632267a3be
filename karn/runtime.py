"""Assembling and running one unikernel: image -> VM -> kernel -> loader -> exit loop."""

from __future__ import annotations

import os
from typing import NamedTuple

from karn.errors import UsageError
from karn.image.collect import RootManifest, collect_program
from karn.kernel.errors import SyscallError
from karn.kernel.mm import AddressSpace, Region
from karn.kernel.process import KernelConfig, Process, ProcessExit, Task
from karn.kernel.syscalls import dispatch
from karn.loader.program import load_program
from karn.platform.kvm import VirtualMachine
from karn.platform.layout import GIB, layout_for
from karn.platform.vcpu import Vcpu

MIB = 1 << 20
DEFAULT_MEMORY = 512 * MIB
MIN_SPAN = 4 * GIB  # KVM memslot set-up cost grows with the span: 4 GiB ~7 ms, 8 GiB ~25 ms
MAX_SPAN = 64 * GIB
MMAP_GAP = 16 * MIB  # between the stack and the top-down mmap area
GUEST_MOUNTS = ("/tmp", "/dev", "/proc")  # synthetic mounts that would hide collected files
RELOCATED_PREFIX = "/run/karn"
DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root")


class Volume(NamedTuple):
    host: str
    guest: str
    readonly: bool = False


class RunConfig:
    """Everything `karn run` needs, validated before anything starts."""

    __slots__ = ("program", "args", "memory", "env", "volumes", "workdir", "hostname", "root")

    def __init__(
        self,
        program: str,
        args: list[str] | None = None,
        memory: int = DEFAULT_MEMORY,
        env: list[str] | None = None,
        volumes: list[Volume] | None = None,
        workdir: str = "/",
        hostname: str = "karn",
        root: str | None = None,
    ) -> None:
        self.program = program
        self.args = [] if args is None else args
        self.memory = memory
        self.env = [] if env is None else env
        self.volumes = [] if volumes is None else volumes
        self.workdir = workdir
        self.hostname = hostname
        self.root = root  # a host directory used as the read-only root filesystem

    def validate(self) -> None:
        if self.memory < 16 * MIB:
            raise UsageError("--memory must be at least 16m")
        if self.memory > MAX_SPAN // 2:
            raise UsageError(f"--memory must be at most {MAX_SPAN // 2 // GIB}g")
        if not self.workdir.startswith("/"):
            raise UsageError(f"--workdir must be an absolute guest path, not {self.workdir!r}")
        if not 0 < len(self.hostname) < 65:
            raise UsageError("--hostname must be 1 to 64 characters")
        for vol in self.volumes:
            if not os.path.isdir(vol.host):
                raise UsageError(f"volume source {vol.host} is not a directory")
            if not vol.guest.startswith("/") or vol.guest == "/":
                raise UsageError(f"volume target must be an absolute path below /: {vol.guest}")
        if self.root is not None and not os.path.isdir(self.root):
            raise UsageError(f"--root {self.root} is not a directory")


def guest_environment(extra: list[str]) -> list[bytes]:
    env: dict[str, str] = {}
    for item in (*DEFAULT_ENV, *extra):
        key, sep, value = item.partition("=")
        if not sep:  # -e KEY takes the host's value, as docker does
            if key not in os.environ:
                continue
            value = os.environ[key]
        env[key] = value
    return [f"{k}={v}".encode() for k, v in env.items()]


def address_space_span(memory: int) -> int:
    span = max(MIN_SPAN, 4 * memory)
    return min(MAX_SPAN, (span + GIB - 1) // GIB * GIB)


class Unikernel:
    """One program in its own VM; `run()` returns the exit status a shell would see."""

    def __init__(self, config: RunConfig) -> None:
        config.validate()
        self.config = config
        self.manifest = self._root_manifest()
        self.vm = VirtualMachine(layout_for(address_space_span(config.memory)))
        lay = self.vm.layout
        region = Region(
            user_start=lay.user_start,
            user_end=lay.user_end,
            mmap_top=lay.user_end - 8 * MIB - MMAP_GAP,
            limit=config.memory,
        )
        mem = self.vm.memory
        self.mm = AddressSpace(mem, region)
        self.fs = self._filesystem()
        kconfig = KernelConfig(
            hostname=config.hostname,
            argv=[config.program.encode(), *(a.encode() for a in config.args)],  # as typed
            envp=guest_environment(config.env),
            exe_path=self._canonical(self.manifest.entry),
            memory_limit=config.memory,
        )
        from karn.kernel.fs.fdtable import FdTable

        self.process = Process(mem, self.mm, self.fs, FdTable.with_stdio(), kconfig)
        self.vcpu = Vcpu(self.vm, 0)
        self.task = Task(self.process, 1, self.vcpu)
        self.image = load_program(
            mem,
            self.mm,
            self.fs.read_file,
            self.manifest.entry,
            kconfig.argv,
            kconfig.envp,
            self.vm.cpu_features(),
        )
        try:
            self.fs.chdir(config.workdir)
        except SyscallError as err:
            raise UsageError(
                f"--workdir {config.workdir}: {os.strerror(err.errno)} in the guest"
            ) from None

    def _root_manifest(self) -> RootManifest:
        if self.config.root is None:
            shadowed = [*GUEST_MOUNTS, *(v.guest for v in self.config.volumes)]
            return collect_program(self.config.program).relocated(shadowed, RELOCATED_PREFIX)
        entry = self.config.program
        if not entry.startswith("/"):
            raise UsageError(f"with --root, the program must be an absolute guest path: {entry}")
        return RootManifest(files={}, symlinks={}, entry=entry)

    def _filesystem(self):
        from karn.kernel.fs.context import FsContext
        from karn.kernel.fs.hostfs import HostDirFs
        from karn.kernel.fs.manifestfs import ManifestFs

        if self.config.root is not None:
            root = HostDirFs(self.config.root, readonly=True)
        else:
            root = ManifestFs(self.manifest.files, self.manifest.symlinks)
        volumes = [(v.host, v.guest, v.readonly) for v in self.config.volumes]
        return FsContext.build(root, volumes)

    def _canonical(self, guest_path: str) -> str:
        """The path /proc/self/exe shows: symlinks resolved, as the kernel reports it."""
        try:
            return self.fs.resolve(guest_path).path
        except SyscallError:
            return guest_path  # missing: load_program reports it

    def host_path(self, guest_path: str) -> str | None:
        if self.config.root is not None:
            return os.path.join(self.config.root, guest_path.lstrip("/"))
        return self.manifest.files.get(guest_path)

    def run(self) -> int:
        task = self.task

        def on_syscall(nr: int, a0: int, a1: int, a2: int, a3: int, a4: int, a5: int) -> int:
            return dispatch(task, nr, (a0, a1, a2, a3, a4, a5))

        self.vcpu.start(self.image.rip, self.image.rsp)
        try:
            fault = self.vcpu.run(on_syscall)
        except ProcessExit as done:
            return done.status
        from karn.debug.crash import classify, format_report  # only when crashing

        report = classify(fault)
        os.write(2, (format_report(report, self.manifest.entry, self.symbolize) + "\n").encode())
        return report.exit_status

    def symbolize(self, addr: int) -> str | None:
        from karn.debug.symbols import Symbolizer

        objects = []
        for obj in self.image.objects:
            host = self.host_path(obj.guest_path)
            if host:
                objects.append((host, obj.bias))
        return Symbolizer(objects).symbolize(addr)
