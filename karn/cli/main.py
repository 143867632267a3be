"""The `karn` command line: parsing (karn/cli/parser.py), dispatch to a command, and errors
as one line. Each command's options and work live in its own module (`run` in
karn/cli/run.py)."""

from __future__ import annotations

import atexit
import gc
import os
import sys

from karn import log
from karn.cli import entry, run
from karn.cli.interrupt import quiet_interrupts
from karn.errors import KarnError, UsageError
from karn.hints import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import argparse
    import signal
    from collections.abc import Callable
    from types import SimpleNamespace
else:  # the C module: `signal` makes enums of its names at import, ~0.5 ms of start-up
    import _signal as signal


def _leave(status: int, leaving: Callable[[int], None] | None) -> NoReturn:
    """End a run here, at once: guest threads may remain (blocked in host calls after
    exit_group), and the interpreter's own shutdown would spend ~14 ms tearing down the
    modules of a run, a third of a hello's start-up cost. Exit handlers still run; the
    run's own files were closed by its plug-ins."""
    atexit._run_exitfuncs()  # e.g. log lines held for the end of a guest's line
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # as main() ends any command whose reader went away
        status = 128 + signal.SIGPIPE
    except (OSError, ValueError):
        pass  # a closed stream must not keep us alive
    if leaving is not None:
        leaving(status)
    os._exit(status)


def main(argv: list[str] | None = None,
         vet: Callable[[argparse.Namespace | SimpleNamespace], None] | None = None,
         leaving: Callable[[int], None] | None = None) -> int:
    """`karn ARGV`. For the daemon's runs: `vet` sees the parsed command line before
    anything runs (the run may be declined there), `leaving` the status of a run that
    ends the process, before the process's own teardown."""
    quiet_interrupts()  # (the `karn` script imports this module first)
    # Start-up makes no garbage cycles worth collecting, yet the collector would walk every
    # object of the ~120 modules it imports several times (~5 ms): a run turns it back on
    # once its guest is built (karn/run/runner.py), any other command after parsing.
    gc.disable()
    try:
        status = _main(argv, vet, leaving)
        sys.stdout.flush()  # here, not at interpreter exit, where an error is a traceback
        sys.stderr.flush()
        return status
    except BrokenPipeError:
        # the reader went away (`karn system logs | head`): end as a program SIGPIPE killed
        # would, with nothing more to say and nothing left to flush
        _discard_output()
        return 128 + signal.SIGPIPE
    finally:
        gc.enable()


def _discard_output() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (sys.stdout.fileno(), sys.stderr.fileno()):
        os.dup2(devnull, fd)
    os.close(devnull)


def _parse(argv: list[str]) -> argparse.Namespace | SimpleNamespace | None:
    """The command line's namespace; None, the help printed, for no command (a usage
    error or --help ends karn in argparse)."""
    plain = run.plain_run(argv)  # `karn run PROGRAM [ARGS]`: no parser needed
    if plain is not None:
        return plain
    from karn.cli.parser import build_parser

    command = entry.command(argv)
    parser, run_parser = build_parser(with_images=command != "run")
    if command == "run":
        at = argv.index("run") + 1
        argv = argv[:at] + run.rewrite_trace(argv[at:], run_parser)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return None
    return args


def _main(argv: list[str] | None,
          vet: Callable[[argparse.Namespace | SimpleNamespace], None] | None,
          leaving: Callable[[int], None] | None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args is None:
        return 125
    if vet is not None:
        vet(args)
    if args.command not in ("run", "policy"):  # they run a guest: the runner turns it on
        gc.enable()
    log.set_level("debug" if args.debug else args.log_level)
    try:
        if args.command in ("run", "policy"):  # they run a guest
            _leave(args.func(args), leaving)
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
