"""The `karn` command line: the top-level parser, dispatch to a command, and errors as one
line. Each command's options and work live in its own module (`run` in karn/cli/run.py)."""

from __future__ import annotations

import argparse
import atexit
import gc
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from karn import __version__, log
from karn.cli import run
from karn.cli.interrupt import quiet_interrupts
from karn.errors import KarnError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 125 like docker
        sys.stderr.write(f"karn: {message} (see '{self.prog} --help')\n")
        raise SystemExit(125)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # refused here, not by the top-level parser: the message names this command's help
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        assert parsed is not None  # argparse made one, or filled the one given
        return parsed, extras


def _argparse_words_untranslated() -> None:
    """argparse passes its own words ("usage: ", "options", each option's help) through
    gettext, and every such call searches the locale directories for a catalogue and
    imports `locale` the first time: ~1.8 ms of every start-up. Where argparse's domain
    can have no catalogue (no locale directory, or none with one for the language), the
    words are used as they are, which is what gettext would return."""
    import gettext

    domain = gettext.textdomain()  # argparse's, unless someone chose another
    localedir = gettext.bindtextdomain(domain)  # where gettext would look for it
    if os.path.isdir(localedir) and gettext.find(domain, localedir) is not None:
        return
    setattr(argparse, "_", lambda message: message)  # noqa: B010 (a module's private name)
    setattr(argparse, "ngettext",  # noqa: B010
            lambda singular, plural, n: singular if n == 1 else plural)


def build_parser(
    with_images: bool = True,
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The top-level parser and its `run` parser."""
    _argparse_words_untranslated()
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
    run_parser = run.register(sub)
    # ---- image commands: build, images, inspect, tag, rm, prune, push, pull, login, logout
    if with_images:  # ~4 ms of parsers that `karn run` does not need
        from karn.cli import images, instances, policy

        images.register(sub, run.parse_size)
        instances.register(sub)
        policy.register(sub, run_parser)
        from karn.cli import system

        system.register(sub)
        __import__("karn.oci.cli", fromlist=["register"]).register(sub)  # `karn oci ...`
    return parser, run_parser


def _command(argv: list[str]) -> str | None:
    """The subcommand word in argv (skipping karn's own options)."""
    it = iter(argv)
    for word in it:
        if word == "--log-level":
            next(it, None)
        elif not word.startswith("-"):
            return word
    return None


def _leave(status: int) -> NoReturn:
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
    os._exit(status)


def main(argv: list[str] | None = None) -> int:
    quiet_interrupts()  # (the `karn` script imports this module first)
    # Start-up makes no garbage cycles worth collecting, yet the collector would walk every
    # object of the ~120 modules it imports several times (~5 ms): a run turns it back on
    # once its guest is built (karn/run/runner.py), any other command after parsing.
    gc.disable()
    try:
        status = _main(argv)
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


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = _command(argv)
    parser, run_parser = build_parser(with_images=command != "run")
    if command == "run":
        at = argv.index("run") + 1
        argv = argv[:at] + run.rewrite_trace(argv[at:], run_parser)
    args = parser.parse_args(argv)
    if args.command not in ("run", "policy"):  # they run a guest: the runner turns it on
        gc.enable()
    log.set_level("debug" if args.debug else args.log_level)
    if args.command is None:
        parser.print_help()
        return 125
    try:
        if args.command in ("run", "policy"):  # they run a guest
            _leave(args.func(args))
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
