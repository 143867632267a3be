"""How `karn run` registers its instance (-d/--detach, --name, --metrics, --rm); cheap to import,
and importing nothing of the monitor's side (monitor.py)."""

from __future__ import annotations

from collections.abc import Callable


class InstanceOptions:
    """How `karn run` registers: -d/--detach, --name, --metrics, --rm."""

    __slots__ = ("name", "detached", "instance_id", "metrics", "on_started", "remove")

    def __init__(self, name: str | None = None, detached: bool = False,
                 instance_id: str | None = None, metrics: str | None = None,
                 on_started: Callable[[], None] | None = None, remove: bool = False) -> None:
        self.name = name
        self.detached = detached
        self.instance_id = instance_id  # chosen by the parent of a detached run
        self.metrics = metrics
        self.on_started = on_started  # a detached run tells its parent it is up
        self.remove = remove  # --rm: no record left when it ends
