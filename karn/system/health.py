"""The health monitor's decision when a partition's process ends (docs/systems.md)."""

from __future__ import annotations

from karn.hints import NamedTuple
from karn.system.description import Health


class Decision(NamedTuple):
    action: str  # "restart", "halt" or "stop" (the whole system)
    delay_ms: float  # before a restart
    reason: str  # for the event log


def describe_exit(status: int) -> str:
    """A monitor's exit status as the event log says it (karn run: 128+n for signal n)."""
    if status < 0:
        return f"killed by signal {-status}"
    if status > 128:
        return f"exited with status {status} (signal {status - 128})"
    return f"exited with status {status}"


def decide(health: Health, status: int, restarts: int) -> Decision:
    """What to do after an exit with `status`, given the restarts made so far."""
    how = describe_exit(status)
    action = health.on_exit if status == 0 else health.on_error
    if action != "restart":
        return Decision(action, 0.0, how)
    if restarts >= health.max_restarts:
        return Decision(health.then, 0.0,
                        f"{how}; restart limit of {health.max_restarts} reached")
    delay = health.backoff_ms * (2 ** restarts)
    return Decision("restart", delay,
                    f"{how}; restart {restarts + 1}/{health.max_restarts} in {delay:g} ms")
