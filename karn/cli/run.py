"""`karn run`: its options, and the one RunConfig they make with an image's settings and
the policy (docs/security.md)."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

from karn.errors import UsageError
from karn.hints import TYPE_CHECKING, Any
from karn.sizes import parse_size as size_of

if TYPE_CHECKING:
    import argparse

    from karn.debug.options import DebugOptions
    from karn.run.config import RunConfig, Volume


def parse_size(text: str) -> int:
    import argparse  # (these run within argparse: imported by then)

    try:
        return size_of(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (use e.g. 512m, 2g)") from None


def parse_volume(text: str) -> Volume:
    import argparse

    from karn.run.config import Volume

    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError(f"invalid volume {text!r} (use HOST:GUEST[:ro|rw])")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise argparse.ArgumentTypeError(f"invalid volume mode {mode!r} (use ro or rw)")
    return Volume(os.path.abspath(parts[0]), os.path.normpath(parts[1]), mode == "ro")


def parse_user(text: str) -> tuple[int, int]:
    import argparse

    uid, sep, gid = text.partition(":")
    if not uid.isdigit() or (sep and not gid.isdigit()):
        raise argparse.ArgumentTypeError(f"invalid user {text!r} (use numeric UID[:GID])")
    return int(uid), int(gid) if sep else int(uid)


def parse_port(text: str):  # noqa: ANN201 - a PortSpec (karn/kernel/fs/ports.py)
    import argparse

    from karn.kernel.fs.ports import PortSpec

    try:
        return PortSpec.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def register(sub: Any) -> argparse.ArgumentParser:
    """Add `run` to the top-level subcommands; returns its parser. (Its defaults are
    plain_run's too: tests/test_cli_plain_run.py holds the two to the same namespace.)"""
    import argparse

    run = sub.add_parser(
        "run",
        help="run a program in its own unikernel VM",
        description="Run PROGRAM (a host path or a name on $PATH) in its own KVM virtual "
        "machine. karn collects the program, its ELF interpreter and its shared libraries "
        "into a read-only root; nothing else of the host is visible unless mounted.",
    )
    run.add_argument(
        "-m", "--memory", type=parse_size, help="guest memory limit (default 512m, or the image's)"
    )
    run.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="KEY[=VALUE]",
        help="set a guest environment variable (KEY alone copies the host's)",
    )
    run.add_argument(
        "--env-file",
        action="append",
        default=[],
        metavar="FILE",
        help="read guest environment variables from FILE: KEY=VALUE or KEY lines, '#' "
        "comments (before -e, which wins)",
    )
    run.add_argument(
        "-u",
        "--user",
        type=parse_user,
        metavar="UID[:GID]",
        help="run as this numeric user and group (default 0:0; GID defaults to UID)",
    )
    run.add_argument(
        "-v",
        "--volume",
        action="append",
        default=[],
        type=parse_volume,
        metavar="HOST:GUEST[:ro]",
        help="mount a host directory into the guest",
    )
    run.add_argument(
        "-t",
        "--tty",
        action="store_true",
        help="give the guest a pseudo-terminal for its stdio, as its controlling terminal "
        "(job control, Ctrl-C to its foreground process group, window size)",
    )
    run.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="keep stdin open (always so without -t); with -t, what you type goes to the "
        "guest's terminal, yours in raw mode until the run ends",
    )
    run.add_argument("-w", "--workdir", help="guest working directory (default /, or the image's)")
    run.add_argument("--hostname", default="karn", help="guest hostname (default karn)")
    run.add_argument(
        "--cpus",
        type=int,
        help="guest threads that may run at once, one vCPU each (default 1, or the image's)",
    )
    run.add_argument(
        "--root",
        metavar="DIR",
        help="use a host directory as the read-only root filesystem; "
        "PROGRAM is then a path inside it",
    )
    run.add_argument(
        "--collect",
        action="append",
        default=[],
        metavar="HOSTPATH",
        help="let karn put this host file (or the files under this directory) in the root "
        "when the program's ELF names ask for it: absolute library names, RPATH/RUNPATH "
        "and interpreters outside the standard library directories and the program's own "
        "directory are refused without it (repeatable; docs/images.md)",
    )
    run.add_argument(
        "--entrypoint",
        metavar="PROGRAM",
        help="with an image: run PROGRAM instead of its entrypoint",
    )
    run.add_argument(
        "-p",
        "--publish",
        action="append",
        default=[],
        metavar="[[HOSTIP:]HOSTPORT:]GUESTPORT[/udp]",
        help="expose a guest listener on the host (default host IP 127.0.0.1; without "
        "HOSTPORT, a free host port, shown by ps and inspect)",
    )
    run.add_argument(
        "-P",
        "--publish-all",
        action="store_true",
        help="publish every port the image declares (Karnfile ports) to free host ports",
    )
    run.add_argument(
        "--network",
        metavar="none|host|egress=CIDR[:PORTS],...",
        help="outbound network policy (default none: the guest's own loopback only)",
    )
    run.add_argument(
        "--port", action="append", default=[], type=parse_port, help=argparse.SUPPRESS
    )  # a partition's port, from `karn system up`
    run.add_argument(
        "--no-sandbox",
        action="store_true",
        help="do not confine the monitor process (seccomp, Landlock, "
        "namespaces); for debugging karn itself (docs/security.md)",
    )
    run.add_argument(
        "--syscall-transport",
        choices=("exit", "fast"),
        default=os.environ.get("KARN_SYSCALL_TRANSPORT", "fast"),
        help="fast (default; KARN_SYSCALL_TRANSPORT sets another): a syscall site is "
        "patched at its first call and later calls go to a server thread through "
        "shared memory (docs/design/fast-syscalls.md); exit: every syscall is a VM exit",
    )
    _add_instance_options(run)
    _add_policy_options(run)
    _add_debug_options(run)
    run.add_argument("program", metavar="PROGRAM|IMAGE", help="host program, or image NAME[:TAG]")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")
    run.set_defaults(func=cmd_run)
    return run


def plain_run(argv: list[str]) -> SimpleNamespace | None:
    """`karn run PROGRAM [ARGS...]`, no option before PROGRAM (the common form), as the
    namespace argparse makes of it, without argparse: its import and the run parser are
    ~3 ms of a run's start-up. None for any other command line, which argparse parses
    (its help, its errors): here nothing can be wrong, as argparse takes every word
    after PROGRAM as the program's, whatever it looks like, except a `--` (which it
    drops right after PROGRAM)."""
    if len(argv) < 2 or argv[0] != "run" or argv[1].startswith("-") or "--" in argv:
        return None
    return SimpleNamespace(
        debug=False, log_level="warning", command="run", func=cmd_run,
        program=argv[1], args=argv[2:],
        memory=None, env=[], env_file=[], user=None, volume=[], tty=False,
        interactive=False, workdir=None, hostname="karn", cpus=None, root=None, collect=[],
        entrypoint=None, publish=[], publish_all=False, network=None, port=[],
        no_sandbox=False,
        syscall_transport=os.environ.get("KARN_SYSCALL_TRANSPORT", "fast"),
        # instances
        detach=False, name=None, rm=False, metrics=None,
        # policy
        syscalls=None, on_denied=None, pids_limit=None, ulimit=[], tmpfs_size=None,
        no_aslr=False, no_vdso=False, trust_image_policy=False,
        # observability and debugging
        trace=False, trace_filter=None, trace_file=None, trace_summary=False, gdb=None,
        core_dump=None, crash_history=False,
    )


def _add_policy_options(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group("policy: override the image's (docs/security.md)")
    group.add_argument(
        "--syscalls",
        metavar="LIST",
        help="allow only these syscalls: names and classes (base, file, desc, "
        "net, memory, signal, process, time), comma-separated; 'all' (default) "
        "for every implemented call. See `karn policy suggest`",
    )
    group.add_argument(
        "--on-denied",
        choices=["eperm", "kill"],
        help="a call outside --syscalls fails with EPERM (default) or kills the guest with SIGSYS",
    )
    group.add_argument(
        "--pids-limit",
        type=int,
        metavar="N",
        help="most guest threads at once (default 1024): EAGAIN beyond",
    )
    group.add_argument(
        "--ulimit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="nofile=N (open files, default 1024), nproc=N, cpu=SECONDS "
        "(SIGXCPU, then SIGKILL), fsize=SIZE (largest tmpfs file: EFBIG)",
    )
    group.add_argument(
        "--tmpfs-size",
        metavar="SIZE",
        help="size of /tmp and /dev/shm each (default half of --memory); "
        "their data also counts against --memory",
    )
    group.add_argument(
        "--no-aslr",
        action="store_true",
        help="fixed addresses for the program, libraries, mmap and stack",
    )
    group.add_argument(
        "--no-vdso",
        action="store_true",
        help="no vDSO: every clock read is a system call (seen by --trace)",
    )
    group.add_argument(
        "--trust-image-policy",
        action="store_true",
        help="accept an image's settings that loosen karn's defaults (more "
        "memory, cpus, threads or files, a network, no ASLR); without it "
        "an image may only tighten them (docs/images.md)",
    )


def _add_instance_options(run: argparse.ArgumentParser) -> None:
    group = run.add_argument_group("instances (docs/instances.md)")
    group.add_argument(
        "-d",
        "--detach",
        action="store_true",
        help="run in the background and print the instance ID (see karn ps, logs, stop, inspect)",
    )
    group.add_argument("--name", help="a name for the instance, usable instead of its ID")
    group.add_argument(
        "--rm",
        action="store_true",
        help="with -d: remove the instance's record (status, log) when it ends",
    )
    group.add_argument(
        "--metrics",
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default host 127.0.0.1)",
    )


def _add_debug_options(run: argparse.ArgumentParser) -> None:
    import argparse

    group = run.add_argument_group("observability and debugging (docs/debugging.md)")
    group.add_argument(
        "--trace",
        action="store_true",
        help="--trace[=FILTER]: print each syscall, strace-style, on stderr; FILTER is a "
        "comma-separated list of syscall names and classes (file, desc, net, memory, "
        "signal, process, time)",
    )
    group.add_argument("--trace-filter", metavar="FILTER", help=argparse.SUPPRESS)
    group.add_argument("--trace-file", metavar="FILE", help="write the trace to FILE")
    group.add_argument(
        "--trace-summary",
        action="store_true",
        help="count calls, errors and time per syscall; print a table at exit",
    )
    group.add_argument(
        "--gdb",
        metavar="[HOST:]PORT",
        help="serve the GDB remote protocol; the guest waits for gdb to "
        "attach before its first instruction",
    )
    group.add_argument(
        "--core-dump",
        metavar="DIR",
        help="on a fatal fault, write an ELF core file (core.PROGRAM.PID, PROGRAM the "
        "program's file name) to DIR",
    )
    group.add_argument(
        "--crash-history",
        action="store_true",
        help="keep the last 20 syscalls for a crash report (on with any other debug option)",
    )


def rewrite_trace(words: list[str], run: argparse.ArgumentParser) -> list[str]:
    """`--trace=FILTER` -> `--trace-filter=FILTER` in the words after `run`, among karn's own
    options only (an argparse option cannot be both a flag and take an optional `=value`)."""
    takes_value = {o for a in run._actions if a.nargs != 0 for o in a.option_strings}
    out = list(words)
    i = 0
    while i < len(out):
        word = out[i]
        if word.startswith("--trace="):
            out[i] = "--trace-filter=" + word.removeprefix("--trace=")
        elif not word.startswith("-") or word == "--":
            break
        elif word in takes_value:
            i += 1
        i += 1
    return out


def cmd_run(args: argparse.Namespace) -> int:
    if args.detach and args.gdb:
        raise UsageError("--gdb needs a foreground run (the guest waits for gdb)")
    if args.detach and args.tty:
        raise UsageError("-t needs a foreground run (its terminal is yours)")
    config = run_config(args)
    if config.chosen_ports:
        from karn.run.publish import describe

        for spec in config.chosen_ports:
            sys.stderr.write(f"karn: published {describe(spec)}\n")
    if args.detach:
        from karn.instance.detach import run_detached

        assert config.instance is not None  # resolve() makes one for -d
        return run_detached(config.instance, lambda: start(config))
    if args.tty:
        from karn.run.terminal import run_in_terminal

        return run_in_terminal(args.interactive, lambda: start(config))
    return start(config)


def start(config: RunConfig) -> int:
    """Build the guest of a resolved config and run it (karn/run/)."""
    from karn.run.vmstart import PendingVm
    from karn.sandbox.privileges import ahead_of_time

    ahead = ahead_of_time(config)
    # made in a thread while the rest is imported and built
    vm = PendingVm(config.memory, ahead)
    from karn.run.builder import build
    from karn.run.runner import run

    return run(build(config, vm))


def run_config(args: argparse.Namespace) -> RunConfig:
    """The `karn run` options, the image's settings and policy, as one resolved RunConfig."""
    from karn.policy import parse_ulimit
    from karn.run.config import DEFAULT_MEMORY, Choices, RunConfig, read_env_file, resolve

    config = RunConfig(
        program=args.program,
        args=args.args,
        memory=args.memory or DEFAULT_MEMORY,
        env=[item for path in args.env_file for item in read_env_file(path)] + args.env,
        volumes=args.volume,
        workdir=args.workdir or "/",
        hostname=args.hostname,
        root=args.root,
        cpus=1 if args.cpus is None else args.cpus,
        debug=_debug_options(args),
        publish=args.publish,
        network=args.network,
        ports=args.port,
        sandbox=not args.no_sandbox,
        collect=args.collect,
        syscall_transport=args.syscall_transport,
        user=args.user,
    )
    if args.detach or args.name or args.metrics:
        from karn.instance.options import InstanceOptions

        config.instance = InstanceOptions(name=args.name, metrics=args.metrics,
                                          remove=args.rm)
    policy = {
        "syscalls": args.syscalls,
        "on_denied": args.on_denied,
        "threads": args.pids_limit,
        "tmpfs_size": args.tmpfs_size,
        "aslr": False if args.no_aslr else None,
        "vdso": False if args.no_vdso else None,
    }
    for spec in args.ulimit:
        policy.update(parse_ulimit(spec))
    choices = Choices(memory=args.memory, cpus=args.cpus, workdir=args.workdir,
                      network=args.network, entrypoint=args.entrypoint, policy=policy,
                      trust_image_policy=args.trust_image_policy,
                      publish_all=args.publish_all)
    return resolve(config, choices)


def _debug_options(args: argparse.Namespace) -> DebugOptions | None:
    if not (
        args.trace
        or args.trace_filter
        or args.trace_summary
        or args.gdb
        or args.core_dump
        or args.crash_history
    ):
        return None  # karn/debug is not even imported
    if args.trace_file and not (args.trace or args.trace_filter or args.trace_summary):
        raise UsageError("--trace-file needs --trace or --trace-summary")
    from karn.debug.options import DebugOptions

    return DebugOptions(
        trace=args.trace,
        trace_filter=args.trace_filter,
        trace_file=args.trace_file,
        trace_summary=args.trace_summary,
        gdb=args.gdb,
        core_dir=args.core_dump,
        history=args.crash_history,
    )
