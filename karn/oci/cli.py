"""`karn-oci` (also `karn oci`): runc's command line, as podman, conmon, CRI-O and
containerd's runc shim call it.

Global options come before the command (`--root`, `--log`, `--log-format text|json`,
`--debug`, `--systemd-cgroup`, and runc's others, accepted and unused). An error is
one line on stderr (`karn: ...`), also written to --log in its format, and exit status
1, as runc's; a command's own status otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from karn import log
from karn.errors import KarnError
from karn.hints import NoReturn
from karn.oci import commands
from karn.oci.state import DEFAULT_ROOT


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"karn: {message}\n")
        raise SystemExit(1)


def build_parser(prog: str = "karn-oci") -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description="karn as an OCI runtime: runc's command line, "
                     "each container a karn unikernel (docs/oci-runtime.md)")
    parser.add_argument("--version", action="version", version=_version())
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    register_commands(sub)
    return parser


def register(sub: argparse._SubParsersAction) -> None:
    """`karn oci ...`: the same command line under karn's."""
    parser = sub.add_parser("oci", help="karn as an OCI runtime (runc's command line)",
                            description="karn as an OCI runtime: runc's command line "
                            "(docs/oci-runtime.md); `karn-oci` is the same")
    add_global_options(parser)
    inner = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    register_commands(inner)
    parser.set_defaults(func=run_command)


def _version() -> str:
    from karn import __version__
    from karn.oci.state import OCI_VERSION

    return f"karn-oci version {__version__}\nspec: {OCI_VERSION}"


def add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=DEFAULT_ROOT, help="state directory")
    parser.add_argument("--log", help="append errors to this file")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--debug", action="store_true", help="debug logs on stderr")
    parser.add_argument("--systemd-cgroup", action="store_true",
                        help="accepted: karn places no process in a cgroup")
    parser.add_argument("--criu", help=argparse.SUPPRESS)
    parser.add_argument("--rootless", help=argparse.SUPPRESS)


def register_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("create", help="create a container from a bundle; it waits for start")
    p.add_argument("--bundle", "-b", default=".")
    p.add_argument("--pid-file")
    p.add_argument("--console-socket")
    p.add_argument("--preserve-fds", type=int, default=0)
    p.add_argument("--no-pivot", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-new-keyring", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("id")
    p.set_defaults(op=commands.create)
    p = sub.add_parser("start", help="run a created container's program")
    p.add_argument("id")
    p.set_defaults(op=commands.start)
    p = sub.add_parser("state", help="print a container's state as JSON")
    p.add_argument("id")
    p.set_defaults(op=commands.state)
    p = sub.add_parser("kill", help="send a signal (default TERM) to a container")
    p.add_argument("--all", "-a", action="store_true", help="the same: one process")
    p.add_argument("id")
    p.add_argument("signal", nargs="?", default="TERM")
    p.set_defaults(op=commands.kill)
    p = sub.add_parser("delete", help="delete a stopped (or, with --force, any) container")
    p.add_argument("--force", "-f", action="store_true")
    p.add_argument("id")
    p.set_defaults(op=commands.delete)
    p = sub.add_parser("list", help="list the containers")
    p.add_argument("--format", "-f", choices=("table", "json"), default="table")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(op=commands.list_containers)
    p = sub.add_parser("ps", help="the container's host processes")
    p.add_argument("--format", "-f", choices=("table", "json"), default="table")
    p.add_argument("id")
    p.add_argument("ps_args", nargs=argparse.REMAINDER)
    p.set_defaults(op=commands.ps)
    p = sub.add_parser("features", help="what this runtime supports, as JSON")
    p.set_defaults(op=commands.features)
    p = sub.add_parser("exec", help="not supported yet")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(op=commands.exec_)


def run_command(args: argparse.Namespace) -> int:
    """Dispatch a parsed command line; errors as runc reports them."""
    log.set_level("debug" if args.debug else "warning")
    if args.command is None:
        sys.stderr.write("karn: a command is needed (see --help)\n")
        return 1
    try:
        return args.op(args)
    except KarnError as err:
        if args.debug:
            raise
        _report(args, str(err))
        return 1
    except OSError as err:
        _report(args, f"{err.strerror or err}" + (f": {err.filename}" if err.filename else ""))
        return 1


def _report(args: argparse.Namespace, message: str) -> None:
    sys.stderr.write(f"karn: {message}\n")
    if not args.log:
        return
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.log_format == "json":
        line = json.dumps({"level": "error", "msg": message, "time": now})
    else:
        line = f'time="{now}" level=error msg={json.dumps(message)}'
    try:
        with open(args.log, "a") as f:
            f.write(line + "\n")
    except OSError as err:
        sys.stderr.write(f"karn: --log {args.log}: {err.strerror}\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return run_command(args)
