"""The `karn` command line's parsers (argparse): the top-level one and each command's.
Imported only where a command line needs parsing: the common `karn run PROGRAM [ARGS]`
goes without (karn/cli/run.py `plain_run`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from karn import __version__
from karn.cli import run
from karn.hints import NoReturn


class Parser(argparse.ArgumentParser):
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
    parser = Parser(
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    run_parser = run.register(sub)
    # ---- image commands: build, images, inspect, tag, rm, prune, push, pull, login, logout
    if with_images:  # ~4 ms of parsers that `karn run` does not need
        from karn.cli import images, instances, policy

        images.register(sub, run.parse_size)
        instances.register(sub)
        policy.register(sub, run_parser)
        from karn.cli import daemon, system

        system.register(sub)
        daemon.register(sub)
        __import__("karn.oci.cli", fromlist=["register"]).register(sub)  # `karn oci ...`
    return parser, run_parser
