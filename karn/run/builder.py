"""A resolved RunConfig -> a Guest, in one direction: root manifest, filesystems, network
stack, VM, address space, process, loaded program. Nothing runs yet (runner.py)."""

from __future__ import annotations

import os
from collections.abc import Callable

from karn.abi.errno import SyscallError
from karn.errors import UsageError
from karn.hints import TYPE_CHECKING
from karn.image.collect import RootManifest, check_placement, collect_program
from karn.kernel.mm import AddressSpace, MemoryAccount, Region
from karn.kernel.process import Identity, KernelConfig, Process
from karn.loader.aslr import choose_placement, mmap_top
from karn.loader.program import LoadSettings, map_executable, prepare
from karn.platform.machine import KvmMachine
from karn.platform.timepage import GuestTsc, TimePage
from karn.policy import apply_policy
from karn.run.config import RunConfig, guest_environment
from karn.run.guest import Guest
from karn.run.vmstart import PendingVm

if TYPE_CHECKING:
    from karn.kernel.fs.context import FsContext, HostSeed
    from karn.kernel.fs.filesystem import Filesystem
    from karn.kernel.net.stack import NetStack

def build(config: RunConfig, vm: PendingVm | None = None) -> Guest:
    """The guest of a resolved config (resolve()); UsageError for what only the guest's
    files can tell (a missing program, a --workdir that is not there). `vm`: its VM,
    started early (karn/run/vmstart.py); otherwise it is started here."""
    pending = PendingVm(config.memory) if vm is None else vm
    try:
        manifest = root_manifest(config)
        memory = MemoryAccount(config.memory)
        fs = filesystem(config, manifest, memory)
        try:
            fs.chdir(config.workdir)
        except SyscallError as err:
            raise UsageError(
                f"--workdir {config.workdir}: {os.strerror(err.errno)} in the guest"
            ) from None
        net = network(config)
        try:
            return _machine(config, manifest, memory, fs, net, pending)
        except BaseException:
            net.close()  # published ports and the AF_UNIX directory go with a failed build
            raise
    except BaseException:
        pending.discard()
        raise


def _machine(config: RunConfig, manifest: RootManifest, memory: MemoryAccount,
             fs: FsContext, net: NetStack, pending: PendingVm) -> Guest:
    """The VM, its address space and the process in it, the program loaded."""
    from karn.kernel.fs.fdtable import FdTable
    from karn.kernel.guestmem import MappedMemory

    # checked before anything is made for it (a `#!` script: the program it names)
    exe, argv = prepare(
        fs.open_readable, manifest.entry,
        [(config.argv0 or config.program).encode(), *(a.encode() for a in config.args)])
    try:
        vm = pending.result()
        lay = vm.layout
        placement = choose_placement(config.policy.aslr)
        region = Region(
            user_start=lay.user_start,
            user_end=lay.user_end,
            mmap_top=mmap_top(lay.user_end, placement),
            # --memory caps what the guest can make the host hold: accessible mappings
            # and tmpfs file data (MemoryAccount). Guest RAM outside them is never touched.
            limit=config.memory,
        )
        mm = AddressSpace(vm.memory, region, memory)
        kconfig = KernelConfig(
            hostname=config.hostname,
            argv=argv,
            envp=guest_environment(config.env),
            exe_path=_canonical(fs, exe.main.path),
            memory_limit=config.memory,
            ncpus=config.cpus,
        )
        machine = KvmMachine(vm)
        # Syscall handlers reach guest memory only where the guest has mappings (EFAULT).
        process = Process(MappedMemory(vm.memory, mm), mm, fs, FdTable.with_stdio(),
                          kconfig, machine=machine, net=net)
        apply_policy(process, config.policy)
        if config.user is not None:  # -u UID[:GID]
            process.identity = Identity(*config.user, *config.user)
        # gdb parks threads in syscalls: exit only
        if config.syscall_transport == "fast" and not (config.debug and config.debug.gdb):
            machine.defer_fast(_fast_transport(process, config.debug is not None
                                               and config.debug.any()))
            mm.code_watcher = machine.code_watcher()  # an execve starts the count afresh
        # the vDSO's time page (--no-vdso: none, clock reads are syscalls)
        time_page = TimePage(GuestTsc(machine)) if config.policy.vdso else None
        process.load_settings = LoadSettings(vm.cpu_features(), config.policy.aslr,
                                             time_page)
        image = map_executable(vm.memory, mm, exe, kconfig.argv, kconfig.envp,
                               process.load_settings.cpu, placement, time_page,
                               manifest.entry.encode())
    finally:
        exe.close()  # mapped by now, or not to be: the mappings hold the files
    return Guest(config, manifest, vm, machine, mm, fs, process, image, time_page)


def _fast_transport(process: Process, observed: bool) -> Callable[[KvmMachine], bool]:
    """What makes the process's fast syscall transport once it is warm (platform/
    warmup.py); `observed`: every call must reach the tracer."""

    def make(machine: KvmMachine) -> bool:
        from karn.kernel.fastmap import fastmap

        if not machine.enable_fast(process.mm, fastmap(process.syscall_table, observed)):
            return False
        # munmap, MAP_FIXED and execve: patched sites and arenas in the range go
        process.mm.code_watcher = machine.code_watcher()
        return True

    return make


def root_manifest(config: RunConfig) -> RootManifest:
    """The files of the guest's root: the collected program, or none (--root, an image)."""
    if config.root is None:
        from karn.kernel.net.etc import add_to_manifest

        manifest = collect_program(config.program, config.collect)
        check_placement(manifest, [(v.host, v.guest) for v in config.volumes])
        add_to_manifest(manifest.files, config.hostname, config.network or "none")
        return manifest
    entry = config.program
    if not entry.startswith("/"):
        raise UsageError(f"with --root, the program must be an absolute guest path: {entry}")
    return RootManifest(files=_generated_etc(config, config.root), symlinks={}, entry=entry)


def _generated_etc(config: RunConfig, root: str) -> dict[str, str]:
    """The name-service files an image or --root lacks (nginx's getpwnam("nobody")), as
    single files mounted over the root; none where a volume decides what is there."""
    from karn.image.paths import guest_file
    from karn.kernel.net.etc import add_to_manifest

    def provided(path: str) -> bool:
        return guest_file(root, path) is not None or any(
            path == v.guest or path.startswith(v.guest.rstrip("/") + "/")
            for v in config.volumes)

    files: dict[str, str] = {}
    add_to_manifest(files, config.hostname, config.network or "none", provided)
    return files


def filesystem(config: RunConfig, manifest: RootManifest, memory: MemoryAccount) -> FsContext:
    from karn.kernel.fs.context import FsContext, HostSeed
    from karn.kernel.fs.hostfs import HostDirFs
    from karn.kernel.fs.manifestfs import ManifestFs

    root: Filesystem
    volumes = [(v.host, v.guest, v.readonly) for v in config.volumes]
    if config.root is not None:
        root = HostDirFs(config.root, readonly=not config.root_writable)
        # the generated /etc files: single files over the root
        volumes += [(host, guest, True) for guest, host in manifest.files.items()]
        # an image's /tmp files stay visible, as in docker (not a --root DIR's: that may
        # be the host's /, whose /tmp the guest must not see)
        seed = HostSeed.from_tree(config.root, TMPFS_MOUNTS) if config.image_tmp else None
    else:
        root = ManifestFs(manifest.files, manifest.symlinks)
        seed = _tmpfs_seed(manifest)
    policy = config.policy
    return FsContext.build(root, volumes, ports=config.ports, memory=memory,
                           tmp_size=policy.tmpfs_size or config.memory // 2,
                           max_file_size=policy.file_size, tmpfs=config.tmpfs, seed=seed)


TMPFS_MOUNTS = ("/tmp", "/dev/shm")  # the tmpfs mounts every guest has (FsContext.build)


def _tmpfs_seed(manifest: RootManifest) -> HostSeed | None:
    """The collected files a tmpfs mount would hide (a program built in the host's
    /tmp): copied into that tmpfs, they keep their paths. (They stay in the manifest
    too, where crash reports and the sandbox find their host files.)"""
    from karn.kernel.fs.context import HostSeed

    below = tuple(m + "/" for m in TMPFS_MOUNTS)
    files = {g: h for g, h in manifest.files.items() if g.startswith(below)}
    links = {g: t for g, t in manifest.symlinks.items() if g.startswith(below)}
    return HostSeed(files, links) if files or links else None


def network(config: RunConfig) -> NetStack:
    """Networking (docs/networking.md): the policy, published ports reserved now."""
    from karn.kernel.net.policy import PolicyError
    from karn.kernel.net.stack import NetStack

    net = NetStack(config.net_policy())
    try:
        net.reserve_published()
    except PolicyError as err:  # it closed itself
        raise UsageError(str(err)) from None
    return net


def _canonical(fs: FsContext, guest_path: str) -> str:
    """The path /proc/self/exe shows: symlinks resolved, as the kernel reports it."""
    try:
        return fs.resolve(guest_path).path
    except SyscallError:
        return guest_path  # missing: prepare reports it
