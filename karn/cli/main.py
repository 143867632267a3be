"""The `karn` command line: parse, validate, run, and turn errors into one line."""

from __future__ import annotations

import argparse
import os
import sys
import threading

from karn import __version__, log
from karn.errors import KarnError, UsageError

SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str) -> int:
    value = text.strip().lower().removesuffix("ib").removesuffix("b") or text
    unit = value[-1] if value and value[-1] in SIZE_UNITS else ""
    number = value[: len(value) - len(unit)]
    try:
        size = int(float(number) * SIZE_UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (use e.g. 512m, 2g)") from None
    if size <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}")
    return size


def parse_volume(text: str):
    from karn.runtime import Volume

    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError(f"invalid volume {text!r} (use HOST:GUEST[:ro|rw])")
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise argparse.ArgumentTypeError(f"invalid volume mode {mode!r} (use ro or rw)")
    return Volume(os.path.abspath(parts[0]), os.path.normpath(parts[1]), mode == "ro")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 125 like docker
        sys.stderr.write(f"karn: {message} (see '{self.prog} --help')\n")
        raise SystemExit(125)


def build_parser(with_images: bool = True) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="karn",
        description="Run unmodified Linux programs as KVM unikernels.",
    )
    parser.add_argument("--version", action="version", version=f"karn {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="monitor log verbosity on stderr (default: warning)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
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
        "-v",
        "--volume",
        action="append",
        default=[],
        type=parse_volume,
        metavar="HOST:GUEST[:ro]",
        help="mount a host directory into the guest",
    )
    run.add_argument(
        "-w", "--workdir", help="guest working directory (default /, or the image's)"
    )
    run.add_argument("--hostname", default="karn", help="guest hostname (default karn)")
    run.add_argument("--cpus", type=int,
                     help="guest threads that may run at once, one vCPU each "
                     "(default 1, or the image's)")
    run.add_argument(
        "--root",
        metavar="DIR",
        help="use a host directory as the read-only root filesystem; "
        "PROGRAM is then a path inside it",
    )
    run.add_argument(
        "--entrypoint",
        metavar="PROGRAM",
        help="with an image: run PROGRAM instead of its entrypoint",
    )
    run.add_argument("program", metavar="PROGRAM|IMAGE", help="host program, or image NAME[:TAG]")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")
    # ---- image commands: build, images, inspect, tag, rm, prune, push, pull, login, logout
    if with_images:  # ~4 ms of parsers that `karn run` does not need
        from karn.cli import images

        images.register(sub, parse_size)
    return parser


def _command(argv: list[str]) -> str | None:
    """The subcommand word in argv (skipping karn's own options)."""
    it = iter(argv)
    for word in it:
        if word == "--log-level":
            next(it, None)
        elif not word.startswith("-"):
            return word
    return None


def cmd_run(args: argparse.Namespace) -> int:
    from karn.runtime import DEFAULT_MEMORY, RunConfig, Unikernel

    config = RunConfig(
        program=args.program,
        args=args.args,
        memory=args.memory or DEFAULT_MEMORY,
        env=args.env,
        volumes=args.volume,
        workdir=args.workdir or "/",
        hostname=args.hostname,
        root=args.root,
        cpus=1 if args.cpus is None else args.cpus,
    )
    host_path = "/" in args.program and os.path.exists(args.program)  # never an image
    if args.root is None and not host_path:
        from karn.cli import images

        if images.is_image(args.program):  # root, program, argv, env, workdir from the image
            images.apply_image(config, args)
            return Unikernel(config).run()
    if args.entrypoint is not None:
        raise UsageError("--entrypoint applies only to images")
    return Unikernel(config).run()


def _leave(status: int) -> int:
    """Exit now if guest threads remain (blocked in host calls after exit_group)."""
    if threading.active_count() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(with_images=_command(argv) != "run")
    args = parser.parse_args(argv)
    log.set_level("debug" if args.debug else args.log_level)
    if args.command is None:
        parser.print_help()
        return 125
    try:
        if args.command == "run":
            return _leave(cmd_run(args))
        if hasattr(args, "func"):  # the image commands (karn/cli/images.py)
            return args.func(args)
        raise UsageError(f"unknown command {args.command}")
    except KarnError as err:
        if args.debug:
            raise
        sys.stderr.write(f"karn: {err}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("karn: interrupted\n")
        return 130
