"""A partition's ARINC 653 configuration in a system file (docs/apex.md):

    [partitions.sensor.apex]
    period = "100ms"      # the partition's period ...
    duration = "40ms"     # ... and the processor time it must get in each one

`check` verifies the period and duration against the cyclic schedule (the major frame is a
whole number of periods, and the partition's windows give it `duration` in every one of
them) and that its port names fit APEX's 30-character names. The partition's guest gets
what libapex checks CREATE_*_PORT and GET_PARTITION_STATUS against, as environment
variables: its identifier, period and duration, and its queuing ports' depths."""

from __future__ import annotations

from collections.abc import Callable

from karn.hints import Any, NamedTuple
from karn.system.units import duration_ms

MAX_NAME_LENGTH = 30  # APEX NAME_TYPE
EPSILON_MS = 1e-6


class ApexConfig(NamedTuple):
    identifier: int
    period_ms: float | None  # None: not declared (GET_PARTITION_STATUS says infinite)
    duration_ms: float | None


Fail = Callable[[str, str], Exception]


def configure(system: Any, tables: dict[str, Any], fail: Fail) -> None:
    """Parse every partition's `apex` table, check it against the system, and give the
    partition's guest its configuration; system.apex maps partition name -> ApexConfig."""
    for identifier, (name, part) in enumerate(system.partitions.items(), start=1):
        table = tables[name].get("apex")
        if table is None:
            continue
        where = f"partition {name} apex"
        config = _parse(where, identifier, table, fail)
        _check_ports(name, part, fail)
        if config.period_ms is not None:
            _check_schedule(where, name, config, system.schedule, fail)
        system.apex[name] = config
        part.env += _environment(config, part)


def _parse(where: str, identifier: int, table: Any, fail: Fail) -> ApexConfig:
    if not isinstance(table, dict):
        raise fail(where, "must be a table")
    for key in table:
        if key not in ("period", "duration"):
            raise fail(where, f"unknown key {key!r} (expected one of: duration, period)")
    if ("period" in table) != ("duration" in table):
        raise fail(where, "give both period and duration, or neither")
    if "period" not in table:
        return ApexConfig(identifier, None, None)
    values = {}
    for key in ("period", "duration"):
        try:
            values[key] = duration_ms(table[key])
        except ValueError as err:
            raise fail(where, f"{key}: {err}") from None
        if values[key] <= 0:
            raise fail(where, f"{key} must be positive")
    if values["duration"] > values["period"] + EPSILON_MS:
        raise fail(where, f"duration {values['duration']:g}ms is longer than the period "
                          f"{values['period']:g}ms")
    return ApexConfig(identifier, values["period"], values["duration"])


def _check_ports(name: str, part: Any, fail: Fail) -> None:
    for port in part.ports.values():
        if len(port.name) > MAX_NAME_LENGTH:
            raise fail(f"port {name}.{port.name}", f"an APEX port name has at most "
                                                   f"{MAX_NAME_LENGTH} characters")


def _check_schedule(where: str, name: str, config: ApexConfig, schedule: Any,
                    fail: Fail) -> None:
    period, duration = config.period_ms, config.duration_ms
    assert period is not None and duration is not None
    if schedule.policy != "cyclic":
        raise fail(where, f"period and duration need the cyclic schedule (this system's is "
                          f"{schedule.policy})")
    frame = schedule.major_frame_ms
    periods = round(frame / period)
    if periods < 1 or abs(periods * period - frame) > EPSILON_MS * max(1.0, frame):
        raise fail(where, f"the major frame of {frame:g}ms is not a whole number of periods "
                          f"of {period:g}ms")
    windows = [w for w in schedule.windows if w.partition == name]
    for k in range(periods):
        start, end = k * period, (k + 1) * period
        given = sum(max(0.0, min(end, w.start_ms + w.duration_ms) - max(start, w.start_ms))
                    for w in windows)
        if given + EPSILON_MS < duration:
            raise fail(where, f"duration {duration:g}ms is not given in period {k + 1} "
                              f"({start:g}-{end:g}ms): its windows there give {given:g}ms")


def _environment(config: ApexConfig, part: Any) -> list[str]:
    env = [f"KARN_APEX_PARTITION_ID={config.identifier}"]
    if config.period_ms is not None and config.duration_ms is not None:
        env += [f"KARN_APEX_PERIOD_NS={round(config.period_ms * 1e6)}",
                f"KARN_APEX_DURATION_NS={round(config.duration_ms * 1e6)}"]
    depths = ",".join(f"{p.name}={p.depth}" for p in part.ports.values() if p.kind == "queuing")
    env.append(f"KARN_APEX_QUEUE_DEPTHS={depths}")
    return env
