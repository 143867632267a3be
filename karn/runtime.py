"""Assembling and running one unikernel: image -> VM -> kernel -> loader -> exit loop."""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, NamedTuple

from karn import log
from karn.abi.errno import SyscallError
from karn.abi.signals import SI_USER, signal_name
from karn.errors import UsageError
from karn.image.collect import RootManifest, collect_program
from karn.kernel.mm import AddressSpace, MemoryAccount, Region
from karn.kernel.process import KernelConfig, Process, Task
from karn.kernel.signals import SigInfo
from karn.loader.aslr import choose_placement
from karn.loader.program import load_program
from karn.platform.kvm import VirtualMachine
from karn.platform.layout import GIB, layout_for
from karn.platform.machine import KvmMachine
from karn.platform.timepage import GuestTsc, TimePage
from karn.platform.vcpu import install_kick_handler
from karn.policy import LimitWatch, Policy, apply_policy

if TYPE_CHECKING:
    from karn.debug.options import DebugOptions
    from karn.instance.monitor import InstanceOptions

MIB = 1 << 20
DEFAULT_MEMORY = 512 * MIB
MAX_CPUS = 256
MIN_SPAN = 4 * GIB  # KVM memslot set-up cost grows with the span: 4 GiB ~7 ms, 8 GiB ~25 ms
MAX_SPAN = 64 * GIB
MMAP_GAP = 16 * MIB  # between the stack and the top-down mmap area
GUEST_MOUNTS = ("/tmp", "/dev", "/proc")  # synthetic mounts that would hide collected files
RELOCATED_PREFIX = "/run/karn"
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)
# A foreground run appears in `karn ps` once it has run this long: short runs skip the
# ~15 ms of registering (imports, socket, files) that nobody could have used.
LISTED_AFTER = 0.05
DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root")


class Volume(NamedTuple):
    host: str
    guest: str
    readonly: bool = False


class RunConfig:
    """Everything `karn run` needs, validated before anything starts."""

    __slots__ = (
        "program", "args", "memory", "env", "volumes", "workdir", "hostname", "root", "argv0",
        "cpus", "debug", "publish", "network", "instance", "ports", "sandbox", "policy",
        "collect",
    )  # fmt: skip

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
        argv0: str | None = None,
        cpus: int = 1,
        debug: DebugOptions | None = None,
        publish: list[str] | None = None,
        network: str | None = None,
        instance: InstanceOptions | None = None,
        ports: list | None = None,
        sandbox: bool = True,
        policy: Policy | None = None,
        collect: list[str] | None = None,
    ) -> None:
        self.program = program
        self.args = [] if args is None else args
        self.memory = memory
        self.env = [] if env is None else env
        self.volumes = [] if volumes is None else volumes
        self.workdir = workdir
        self.hostname = hostname
        self.root = root  # a host directory used as the read-only root filesystem
        self.argv0 = argv0  # argv[0] when it is not program (an image's entrypoint as given)
        self.cpus = cpus  # guest vCPUs that may run at once
        self.debug = debug  # trace, gdb, core dumps (karn/debug/); None: no hooks at all
        self.publish = [] if publish is None else publish  # --publish specs (networking)
        self.network = network  # --network none|host|egress=...; None: none
        self.instance = instance  # -d, --name, --metrics (karn/instance/); None: defaults
        self.ports = [] if ports is None else ports  # a partition's PortSpecs (docs/systems.md)
        self.sandbox = sandbox  # confine the monitor after set-up (karn/sandbox/)
        self.policy = Policy() if policy is None else policy  # syscalls, limits, aslr
        self.collect = [] if collect is None else collect  # host paths collection may take

    def validate(self) -> None:
        if not 1 <= self.cpus <= MAX_CPUS:
            raise UsageError(f"--cpus must be between 1 and {MAX_CPUS}")
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
        self.net_policy()

    def net_policy(self):  # noqa: ANN201 - a NetPolicy (imported only when networking is set)
        """The network policy (docs/networking.md); UsageError for a bad spec."""
        from karn.kernel.net.policy import NetPolicy, PolicyError

        try:
            return NetPolicy.parse(self.network, self.publish)
        except PolicyError as err:
            raise UsageError(str(err)) from None


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
        policy = config.policy
        placement = choose_placement(policy.aslr)
        region = Region(
            user_start=lay.user_start,
            user_end=lay.user_end,
            mmap_top=lay.user_end - 8 * MIB - MMAP_GAP - placement.mmap_offset,
            # --memory caps what the guest can make the host hold: accessible mappings and
            # tmpfs file data (MemoryAccount). Guest RAM outside them is never touched.
            limit=config.memory,
        )
        mem = self.vm.memory
        self.memory = MemoryAccount(config.memory)
        self.mm = AddressSpace(mem, region, self.memory)
        self.fs = self._filesystem()
        kconfig = KernelConfig(
            hostname=config.hostname,
            argv=[(config.argv0 or config.program).encode(), *(a.encode() for a in config.args)],
            envp=guest_environment(config.env),
            exe_path=self._canonical(self.manifest.entry),
            memory_limit=config.memory,
            ncpus=config.cpus,
        )
        from karn.kernel.fs.fdtable import FdTable
        from karn.kernel.guestmem import MappedMemory

        self.machine = KvmMachine(self.vm)
        # Syscall handlers reach guest memory only where the guest has mappings (EFAULT).
        self.process = Process(MappedMemory(mem, self.mm), self.mm, self.fs,
                               FdTable.with_stdio(), kconfig, machine=self.machine)
        self.process.net = self._network()  # type: ignore[attr-defined]
        apply_policy(self.process, policy)
        # The vDSO's time page; resync() belongs on the monitor's periodic tick.
        self.time_page = TimePage(GuestTsc(self.machine)) if policy.vdso else None
        self.image = load_program(
            mem,
            self.mm,
            self.fs.read_file,
            self.manifest.entry,
            kconfig.argv,
            kconfig.envp,
            self.vm.cpu_features(),
            placement,
            self.time_page,
        )
        try:
            self.fs.chdir(config.workdir)
        except SyscallError as err:
            raise UsageError(
                f"--workdir {config.workdir}: {os.strerror(err.errno)} in the guest"
            ) from None
        self.instance = None  # registered when run() starts (karn/instance/)
        self.debug = None
        if config.debug is not None and config.debug.any():
            from karn.debug.session import DebugSession

            self.debug = DebugSession(self, config.debug)

    def _network(self):  # noqa: ANN202 - a NetStack
        """Networking (docs/networking.md): the policy, published ports reserved now."""
        from karn.kernel.net.policy import PolicyError
        from karn.kernel.net.stack import NetStack

        net = NetStack(self.config.net_policy())
        try:
            net.reserve_published()
        except PolicyError as err:
            raise UsageError(str(err)) from None
        return net

    def _root_manifest(self) -> RootManifest:
        if self.config.root is None:
            from karn.kernel.net.etc import add_to_manifest

            shadowed = [*GUEST_MOUNTS, *(v.guest for v in self.config.volumes)]
            manifest = collect_program(self.config.program, self.config.collect).relocated(
                shadowed, RELOCATED_PREFIX)
            add_to_manifest(manifest.files, self.config.hostname, self.config.network or "none")
            return manifest
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
        policy = self.config.policy
        return FsContext.build(root, volumes, ports=self.config.ports, memory=self.memory,
                               tmp_size=policy.tmpfs_size or self.config.memory // 2,
                               max_file_size=policy.file_size)

    def _canonical(self, guest_path: str) -> str:
        """The path /proc/self/exe shows: symlinks resolved, as the kernel reports it."""
        try:
            return self.fs.resolve(guest_path).path
        except SyscallError:
            return guest_path  # missing: load_program reports it

    def host_path(self, guest_path: str) -> str | None:
        if self.config.root is not None:
            return os.path.join(self.config.root, guest_path.lstrip("/"))
        return self.manifest.files.get(self._canonical(guest_path))

    def run(self) -> int:
        """Start the main thread, wait for the process to end, report how it ended."""
        proc = self.process
        install_kick_handler()
        forwarded = {sig: signal.signal(sig, self._forward_signal) for sig in FORWARDED_SIGNALS}
        eager = self.config.instance is not None  # -d, --name, --metrics
        if eager:
            self.instance = self._register()
        try:
            if self.config.sandbox:  # after set-up, before the guest runs
                from karn.sandbox import confine

                self.sandbox = confine(self)
            # the watch opens what it reads before the guest can use up the monitor's fds
            watch = LimitWatch(proc, self.config.policy, self.config.memory)
            main = Task(proc, proc.pid, None)
            proc.start_task(main, {"rip": self.image.rip, "rsp": self.image.rsp}, 0)
            if self.instance is not None:
                self.instance.started()
            if not eager and not proc.done.wait(LISTED_AFTER):
                self.instance = self._register_unlisted()
            while not proc.done.wait(watch.tick):
                watch.check()
        finally:
            for sig, previous in forwarded.items():
                signal.signal(sig, previous)
            if self.mm.shared_files:  # dirty shared pages reach their files at exit
                from karn.kernel.sys_mm import write_back

                write_back(proc.mem, self.mm, 0, self.mm.region.user_end, forget=True)
            if self.debug is not None:
                self.debug.finish()
            self.process.net.close()  # type: ignore[attr-defined]
            if self.instance is not None:
                failed = proc.internal_failure is not None or proc.exit_status is None
                self.instance.finish(125 if failed else proc.exit_status, proc.fatal_signal)
        if proc.internal_failure is not None:
            raise proc.internal_failure
        self._report_fatal_signal()
        return proc.exit_status if proc.exit_status is not None else 0

    def _register(self):  # noqa: ANN202 - a MonitorInstance or None
        """karn ps/inspect/stop find the run through this (karn/instance/)."""
        from karn.instance.monitor import register

        return register(self, self.config.instance)

    def _register_unlisted(self):  # noqa: ANN202 - a MonitorInstance or None
        """A foreground run registers late; if the guest has used up the monitor's fds by
        then, the import itself fails, and the run goes on unlisted (as register() does)."""
        try:
            return self._register()
        except OSError as err:
            log.debug("not registered: %s", err)
            return None

    def _forward_signal(self, signum: int, frame: object) -> None:
        """Host signals to karn (Ctrl-C, kill) go to the guest, as to a process."""
        proc = self.process
        if proc.exit_status is not None:  # asked twice: the guest is not leaving, stop now
            raise KeyboardInterrupt
        proc.signal_process(SigInfo.from_sender(signum, SI_USER, 0))

    def _report_fatal_signal(self) -> None:
        proc = self.process
        snapshot = proc.fatal_snapshot
        if proc.crash_fault is not None or snapshot is not None:
            from karn.debug.crash import CrashContext, classify, format_report, signal_report

            if proc.crash_fault is not None:
                report = classify(proc.crash_fault)
            else:
                report = signal_report(proc.fatal_signal, snapshot.regs, snapshot.fs_base)
            history = list(self.debug.history.records) if self.debug is not None else None
            symbolizer = self.symbolizer()
            context = CrashContext(proc.mem, symbolizer, history)
            text = format_report(report, self.manifest.entry, symbolizer.symbolize, context)
            os.write(2, (text + "\n").encode())
        elif proc.fatal_core:
            name = signal_name(proc.fatal_signal)
            os.write(2, f"karn: {self.manifest.entry} terminated by {name}\n".encode())

    def symbolizer(self):
        """Symbols of every ELF object mapped now: the program, interpreter, libraries."""
        from karn.debug.objects import mapped_objects
        from karn.debug.symbols import LoadedObject, Symbolizer

        objects = [LoadedObject(o.host_path, o.bias, o.guest_path)
                   for o in mapped_objects(self.mm, self.host_path)]
        return Symbolizer(objects)

    def symbolize(self, addr: int) -> str | None:
        return self.symbolizer().symbolize(addr)
