"""Where karn keeps the records of running instances and systems."""

from __future__ import annotations

import os


def state_dir() -> str:
    """$KARN_STATE_DIR, else /run/karn (root) or $XDG_RUNTIME_DIR/karn or /tmp/karn-UID."""
    configured = os.environ.get("KARN_STATE_DIR")
    if configured:
        return configured
    if os.geteuid() == 0:
        return "/run/karn"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "karn") if runtime else f"/tmp/karn-{os.getuid()}"


def daemon_socket() -> str:
    """Where a `karn daemon` of this state dir listens (karn/cli/daemon.py)."""
    return os.path.join(state_dir(), "daemon.sock")


def instances_dir() -> str:
    return os.path.join(state_dir(), "instances")
