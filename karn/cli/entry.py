"""The `karn` command's first step: a `karn run` goes to a running `karn daemon` when
its socket exists (karn/cli/daemon_client.py, C modules only), anything else to karn's
command line (karn/cli/main.py), loaded through karn's bytecode finder."""

from __future__ import annotations

import os
import sys

from karn.cli.interrupt import quiet_interrupts
from karn.instance.paths import daemon_socket


def main() -> int:
    quiet_interrupts()  # Ctrl-C while karn is still starting: exit 130, no traceback
    argv = sys.argv[1:]
    if wanted(argv) and os.path.exists(path := daemon_socket()):
        from karn.cli import daemon_client

        status = daemon_client.run(argv, path)
        if status is not None:
            return status
    from karn.cli import bytecode

    bytecode.install(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from karn.cli.main import main as run_here

    return run_here(argv)


def wanted(argv: list[str]) -> bool:
    """A `karn run`, and KARN_DAEMON not set to 0/off/no."""
    if os.environ.get("KARN_DAEMON", "").lower() in ("0", "off", "no"):
        return False
    return command(argv) == "run"


def command(argv: list[str]) -> str | None:
    """The subcommand word in argv (skipping karn's own options)."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None
