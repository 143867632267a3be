"""`karn policy suggest`: run a program once and print the syscall allow-list it needed."""

from __future__ import annotations

import argparse
import sys

from karn.cli.run import rewrite_trace, run_config
from karn.errors import UsageError
from karn.hints import Any


def register(sub: Any, run_parser: argparse.ArgumentParser) -> None:
    p = sub.add_parser("policy", help="work out a policy for a program",
                       description="Policy helpers (docs/security.md).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = actions.add_parser(
        "suggest", help="run a program and print the syscalls it used, as an allow-list",
        description="Run the program as `karn run` would (same options), count the syscalls "
        "it makes, and print them as a Karnfile [policy] table and a --syscalls value. "
        "Exercise everything the program does in this run: a call it did not make is not "
        "in the list.")
    s.add_argument("-o", "--output", metavar="FILE",
                   help="write the suggestion to FILE (default: stderr, after the run)")
    s.add_argument("run_args", nargs=argparse.REMAINDER, metavar="[RUN OPTIONS] PROGRAM ...",
                   help="what you would give `karn run`")
    s.set_defaults(func=cmd_suggest, run_parser=run_parser)


def cmd_suggest(args: argparse.Namespace) -> int:
    from karn.abi.syscalls import SYSCALL_NAMES
    from karn.run.builder import build
    from karn.run.runner import run

    if not args.run_args:
        raise UsageError("policy suggest: give the program to run, as for `karn run`")
    run_args = args.run_parser.parse_args(rewrite_trace(args.run_args, args.run_parser))
    if run_args.detach:
        raise UsageError("policy suggest runs the program in the foreground: drop -d")
    config = run_config(run_args)
    config.policy.syscalls = None  # everything is allowed while we watch
    guest = build(config)
    try:  # opened first: the monitor confines itself while the guest runs (karn/sandbox)
        out = open(args.output, "w") if args.output else sys.stderr
    except OSError as err:
        raise UsageError(f"policy suggest: {args.output}: {err.strerror}") from None
    try:
        status = run(guest)
        counts = guest.process.syscall_counts
        used = sorted(SYSCALL_NAMES[nr] for nr, n in enumerate(counts)
                      if n and nr in SYSCALL_NAMES)
        out.write(render(used, " ".join(args.run_args), status))
    finally:
        if out is not sys.stderr:  # karn's own stderr stays open for its exit
            out.close()
    return status


def render(used: list[str], command: str, status: int) -> str:
    quoted = ", ".join(f'"{name}"' for name in used)
    return (f"# karn policy suggest: {len(used)} syscalls used by `{command}` "
            f"(exit status {status})\n"
            f"[policy]\nsyscalls = [{quoted}]\n"
            f"# or: karn run --syscalls {','.join(used)} ...\n")
