"""A run's settings: RunConfig, and resolve(), the one step that merges the command line,
an image's settings and the policy (docs/security.md) and checks them.

What the command line alone decides is checked before an image is pulled; what an image
sets, once it is found, before any VM exists. The builder takes a resolved RunConfig.
"""

from __future__ import annotations

import os

from karn.errors import UsageError
from karn.hints import TYPE_CHECKING, Any
from karn.platform.layout import GIB
from karn.policy import OVERRIDE_OPTIONS, Policy, loosenings
from karn.run.publish import needs_host_port, with_free_host_port

if TYPE_CHECKING:
    from karn.debug.options import DebugOptions
    from karn.image.launch import ImageRun
    from karn.instance.options import InstanceOptions
    from karn.kernel.fs.ports import PortSpec
    from karn.kernel.net.policy import NetPolicy

MIB = 1 << 20
DEFAULT_MEMORY = 512 * MIB
MAX_CPUS = 256
MAX_SPAN = 64 * GIB  # of guest-physical addresses (builder.py); --memory is at most half
SYSCALL_TRANSPORTS = ("exit", "fast")


def default_syscall_transport() -> str:
    """fast, unless KARN_SYSCALL_TRANSPORT names another (so a test file can run in exit
    mode: KARN_SYSCALL_TRANSPORT=exit pytest ...)."""
    return os.environ.get("KARN_SYSCALL_TRANSPORT") or "fast"
DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root")


# Mounts a volume may not replace (a volume at /tmp or /dev/shm replaces the tmpfs).
KARN_MOUNTS = {"/dev": "devfs", "/proc": "procfs", "/dev/ports": "ports"}


class Volume:
    """A host directory or file mounted into the guest. (A plain class: a NamedTuple
    costs ~60 µs of every start-up to create.)"""

    __slots__ = ("host", "guest", "readonly")

    def __init__(self, host: str, guest: str, readonly: bool = False) -> None:
        self.host, self.guest, self.readonly = host, guest, readonly


class RunConfig:
    """Everything a run needs; resolve() makes one from the command line and an image."""

    __slots__ = (
        "program", "args", "memory", "env", "volumes", "workdir", "hostname", "root", "argv0",
        "cpus", "debug", "publish", "network", "instance", "ports", "sandbox", "policy",
        "collect", "syscall_transport", "tmpfs", "user", "chosen_ports", "root_writable",
        "image_tmp",
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
        ports: list[PortSpec] | None = None,
        sandbox: bool = True,
        policy: Policy | None = None,
        collect: list[str] | None = None,
        syscall_transport: str | None = None,
        tmpfs: list[str] | None = None,
        user: tuple[int, int] | None = None,
        root_writable: bool = False,
    ) -> None:
        self.program = program
        self.args = [] if args is None else args
        self.memory = memory
        self.env = [] if env is None else env
        self.volumes = [] if volumes is None else volumes
        self.workdir = workdir
        self.hostname = hostname
        self.root = root  # a host directory used as the root filesystem
        self.argv0 = argv0  # argv[0] when it is not program (an image's entrypoint as given)
        self.cpus = cpus  # guest vCPUs that may run at once
        self.debug = debug  # trace, gdb, core dumps (karn/debug/); None: no hooks at all
        self.publish = [] if publish is None else publish  # --publish specs (networking)
        self.network = network  # --network none|host|egress=...; None: none
        self.instance = instance  # -d, --name, --metrics (karn/instance/); None: defaults
        self.ports = [] if ports is None else ports  # a partition's ports (docs/systems.md)
        self.sandbox = sandbox  # confine the monitor after set-up (karn/sandbox/)
        self.policy = Policy() if policy is None else policy  # syscalls, limits, aslr
        self.collect = [] if collect is None else collect  # host paths collection may take
        # exit: every syscall is a VM exit; fast: patched sites hand calls to a server
        # thread through shared memory (karn/platform/fastcall)
        self.syscall_transport = syscall_transport or default_syscall_transport()
        self.tmpfs = [] if tmpfs is None else tmpfs  # guest paths of further tmpfs mounts
        self.user = user  # -u UID[:GID]: the guest's credentials (None: root)
        self.chosen_ports: list[str] = []  # --publish specs whose host port karn chose
        # the guest may write in root, as in a writable volume (an OCI bundle's own rootfs)
        self.root_writable = root_writable
        self.image_tmp = False  # root is an image's: its /tmp files start the guest's tmpfs

    def validate(self) -> None:
        if not 1 <= self.cpus <= MAX_CPUS:
            raise UsageError(f"--cpus must be between 1 and {MAX_CPUS}")
        if self.memory < 16 * MIB:
            raise UsageError("--memory must be at least 16m")
        if self.memory > MAX_SPAN // 2:
            raise UsageError(f"--memory must be at most {MAX_SPAN // 2 // GIB}g")
        if self.syscall_transport not in SYSCALL_TRANSPORTS:
            raise UsageError(f"--syscall-transport must be one of {', '.join(SYSCALL_TRANSPORTS)}")
        if not self.workdir.startswith("/"):
            raise UsageError(f"--workdir must be an absolute guest path, not {self.workdir!r}")
        if not 0 < len(self.hostname) < 65:
            raise UsageError("--hostname must be 1 to 64 characters")
        targets: set[str] = set()
        for vol in self.volumes:
            if not (os.path.isdir(vol.host) or os.path.isfile(vol.host)):
                raise UsageError(f"volume source {vol.host}: no such directory or file")
            if not vol.guest.startswith("/") or vol.guest == "/":
                raise UsageError(f"volume target must be an absolute path below /: {vol.guest}")
            if vol.guest in KARN_MOUNTS:
                raise UsageError(f"volume target {vol.guest}: karn's own {KARN_MOUNTS[vol.guest]} "
                                 "is mounted there; choose another path")
            if vol.guest in targets or vol.guest in self.tmpfs:
                raise UsageError(f"volume target {vol.guest} is given twice")
            targets.add(vol.guest)
        if self.root is not None and not os.path.isdir(self.root):
            raise UsageError(f"--root {self.root} is not a directory")
        if self.debug is not None:
            self.debug.validate()
        self.net_policy()

    def net_policy(self) -> NetPolicy:
        """The network policy (docs/networking.md); UsageError for a bad spec."""
        from karn.kernel.net.policy import NetPolicy, PolicyError

        try:
            return NetPolicy.parse(self.network, self.publish)
        except PolicyError as err:
            raise UsageError(str(err)) from None


class Choices:
    """What the user set on the command line: each of these wins over an image's setting.
    None: not given (a RunConfig holds karn's default for it until an image sets it)."""

    __slots__ = ("memory", "cpus", "workdir", "network", "entrypoint", "policy",
                 "trust_image_policy", "publish_all")

    def __init__(self, memory: int | None = None, cpus: int | None = None,
                 workdir: str | None = None, network: str | None = None,
                 entrypoint: str | None = None, policy: dict[str, Any] | None = None,
                 trust_image_policy: bool = False, publish_all: bool = False) -> None:
        self.memory = memory
        self.cpus = cpus
        self.workdir = workdir
        self.network = network
        self.entrypoint = entrypoint  # with an image: run this instead of its entrypoint
        self.policy = {k: v for k, v in (policy or {}).items() if v is not None}  # Policy keys
        self.trust_image_policy = trust_image_policy  # accept an image's looser settings
        self.publish_all = publish_all  # -P: the image's ports, to free host ports

    def given(self) -> set[str]:
        """The policy keys, and memory/cpus/network, the command line set."""
        top = {"memory": self.memory, "cpus": self.cpus, "network": self.network}
        return set(self.policy) | {key for key, value in top.items() if value is not None}


def resolve(config: RunConfig, choices: Choices) -> RunConfig:
    """`config` (the command line's options, karn's defaults for the rest) with the
    image's settings and policy merged in when config.program names an image, and the
    command line's policy over both; UsageError for anything wrong, before any VM exists."""
    Policy().update(choices.policy, "command line")  # a bad option fails before any pull
    _choose_host_ports(config, [p for p in config.publish if needs_host_port(p)])
    config.validate()
    run = None
    if config.root is None and not ("/" in config.program and os.path.exists(config.program)):
        from karn.run.image import is_image, open_image

        if is_image(config.program):
            run = open_image(config.program, config.args, choices.entrypoint, choices.workdir)
    if choices.entrypoint is not None and run is None:
        raise UsageError("--entrypoint applies only to images")
    name = config.program  # the image's name, if it is one
    asks = _apply_image(config, choices, run) if run is not None else None
    if choices.publish_all:
        if run is None:
            raise UsageError("-P/--publish-all applies only to images (their declared ports)")
        _choose_host_ports(config, [port.removesuffix("/tcp") for port in run.ports])
    config.policy.update(choices.policy, "command line")
    if config.network is None:
        config.network = config.policy.network
    if asks is not None:
        if not choices.trust_image_policy:
            given = choices.given()
            _refuse_loosening(name, {k: v for k, v in asks.items() if k not in given},
                              config.memory)
        config.validate()  # what the image set
    return config


def _choose_host_ports(config: RunConfig, specs: list[str]) -> None:
    """Publish these GUESTPORT[/udp] specs at free host ports (recorded in chosen_ports)."""
    for spec in specs:
        full = with_free_host_port(spec)
        if spec in config.publish:
            config.publish.remove(spec)
        config.publish.append(full)
        config.chosen_ports.append(full)


def _apply_image(config: RunConfig, choices: Choices, run: ImageRun) -> dict[str, Any]:
    """Fill config from the image; returns what the image asks for: its policy keys
    (checked), memory and cpus."""
    name = config.program
    config.root = run.root
    config.image_tmp = True
    config.program = run.program
    config.argv0 = run.argv[0]
    config.args = run.argv[1:]
    config.env = [*run.env, *config.env]
    config.workdir = run.workdir
    if choices.memory is None and run.memory:
        config.memory = run.memory
    if choices.cpus is None and run.cpus:
        config.cpus = run.cpus
    config.policy.update(run.policy, f"image {name}")
    return {"memory": run.memory, "cpus": run.cpus,
            **{key: getattr(config.policy, key) for key in run.policy}}


def _refuse_loosening(image: str, asks: dict[str, Any], memory: int) -> None:
    """An image may tighten karn's default policy by itself, never loosen it: that takes
    the user's consent, --trust-image-policy or the same option on the command line."""
    looser = loosenings(asks, memory, DEFAULT_MEMORY)
    if not looser:
        return
    options = [
        OVERRIDE_OPTIONS[key]
        for key in asks
        if key in OVERRIDE_OPTIONS and any(item.startswith(key + "=") for item in looser)
    ]
    other = f", or give {', '.join(options)} yourself" if options else ""
    raise UsageError(
        f"image {image} asks for a looser policy than karn's default "
        f"({', '.join(looser)}): pass --trust-image-policy to accept it{other}"
    )


def read_env_file(path: str) -> list[str]:
    """`--env-file`: KEY=VALUE or KEY (the host's value) per line; '#' lines and blank
    lines skipped; the value is taken as it is (no quotes removed), as docker does."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--env-file {path}: {getattr(err, 'strerror', None) or err}"
                         ) from None
    items = []
    for number, line in enumerate(lines, 1):
        text = line.lstrip()
        if not text or text.startswith("#"):
            continue
        key = text.partition("=")[0]
        if not key or any(c.isspace() for c in key):
            raise UsageError(f"--env-file {path}:{number}: not KEY=VALUE: {line!r}")
        items.append(text)
    return items


def guest_environment(extra: list[str]) -> list[bytes]:
    """The guest's environment: karn's defaults, then `extra` (KEY alone: the host's)."""
    env: dict[str, str] = {}
    for item in (*DEFAULT_ENV, *extra):
        key, sep, value = item.partition("=")
        if not sep:  # -e KEY takes the host's value, as docker does
            if key not in os.environ:
                continue
            value = os.environ[key]
        env[key] = value
    return [f"{k}={v}".encode() for k, v in env.items()]
