"""The `karn` command's first step: a `karn run` goes to a running `karn daemon` when
there is one (karn/cli/daemon_client.py, C modules only), anything else to karn's command
line (karn/cli/main.py)."""

from __future__ import annotations

import sys

from karn.cli.interrupt import quiet_interrupts


def main() -> int:
    quiet_interrupts()  # Ctrl-C while karn is still starting: exit 130, no traceback
    argv = sys.argv[1:]
    from karn.cli import daemon_client

    if daemon_client.wanted(argv):
        status = daemon_client.run(argv)
        if status is not None:
            return status
    from karn.cli.main import main as run_here

    return run_here(argv)
