"""`karn system check|up|down|status|logs|graph`: partitioned systems (docs/systems.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from karn.cli.output import add_format, rfc3339
from karn.errors import KarnError, NotFoundError, UsageError
from karn.hints import Any

DOWN_WAIT = 15.0  # seconds `down` waits for the supervisor to finish


def register(sub: Any) -> None:
    system = sub.add_parser(
        "system", help="run partitioned systems (ports, diodes, guards, schedules)",
        description="Several unikernels joined by ports, one-way data diodes and guards, "
        "described in one TOML file (docs/systems.md).")
    cmds = system.add_subparsers(dest="system_command", metavar="COMMAND",
                                 parser_class=type(system))
    system.set_defaults(func=lambda args: _usage(system))

    p = cmds.add_parser("check", help="validate a system description",
                        description="Validate FILE; print a summary or one precise error.")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_check)

    p = cmds.add_parser("up", help="start a system",
                        description="Start every partition of FILE and run the channels, "
                        "schedule and health monitor until `karn system down` or Ctrl-C.")
    p.add_argument("-d", "--detach", action="store_true",
                   help="run the supervisor in the background")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_up)

    p = cmds.add_parser("down", help="stop a running system",
                        description="Stop every partition of SYSTEM (name or FILE; default: "
                        "the only running system).")
    p.add_argument("system", nargs="?", metavar="SYSTEM")
    p.set_defaults(func=cmd_down)

    p = cmds.add_parser("status", help="partitions, restarts and channel counters",
                        description="Show SYSTEM's partitions and channel counters (the "
                        "final ones once it has stopped).")
    add_format(p, json_help="the status as one JSON object")
    p.add_argument("--json", dest="format", action="store_const", const="json",
                   help=argparse.SUPPRESS)  # the older spelling of --format json
    p.add_argument("system", nargs="?", metavar="SYSTEM")
    p.set_defaults(func=cmd_status)

    p = cmds.add_parser("logs", help="show partition output and system events",
                        description="Print PARTITION's output, or the system's event log "
                        "and every partition's output.")
    p.add_argument("-s", "--system", metavar="SYSTEM", help="name or FILE (default: the "
                   "only running system)")
    p.add_argument("partition", nargs="?", metavar="PARTITION")
    p.set_defaults(func=cmd_logs)

    p = cmds.add_parser("graph", help="draw a system as SVG (graphviz)",
                        description="Write an SVG of FILE's partitions, ports, channels, "
                        "diodes and guards.")
    p.add_argument("-o", "--output", metavar="SVG", help="default: FILE with .svg")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_graph)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 125


def cmd_check(args: argparse.Namespace) -> int:
    from karn.system.description import load

    system = load(args.file)
    nports = len(system.ports())
    diodes = sum(1 for c in system.channels if c.diode)
    guarded = sum(1 for c in system.channels if c.guard is not None)
    print(f"{system.name}: ok: {_count(len(system.partitions), 'partition')}, "
          f"{_count(nports, 'port')}, {_count(len(system.channels), 'channel')} "
          f"({_count(diodes, 'diode')}, {guarded} guarded), {system.schedule.policy} schedule"
          + (f", {_count(len(system.apex), 'APEX partition')}" if system.apex else ""))
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def cmd_up(args: argparse.Namespace) -> int:
    from karn.system import state
    from karn.system.description import load
    from karn.system.supervisor import serve

    system = load(args.file)
    if state.is_running(system.name):
        raise UsageError(f"system {system.name} is already running")
    if not args.detach:
        return serve(system, echo=True)
    return _up_detached(system)


def _up_detached(system: Any) -> int:
    """The supervisor in its own session; print the name once it is up."""
    from karn.instance.detach import start_in_background
    from karn.system import state
    from karn.system.supervisor import serve

    directory = state.system_dir(system.name)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    status = start_in_background(os.path.join(directory, "supervisor.log"),
                                 lambda ready: serve(system, echo=False, on_ready=ready))
    if status is None:
        print(system.name)
        return 0
    return status


def cmd_down(args: argparse.Namespace) -> int:
    from karn.system import state

    name = state.resolve(args.system)
    if not state.is_running(name):  # already down: done, as `docker stop` of a stopped one
        print(name)
        return 0
    state.request(name, "down")
    deadline = time.monotonic() + DOWN_WAIT
    while state.is_running(name):
        if time.monotonic() > deadline:
            raise KarnError(f"system {name} did not stop within {DOWN_WAIT:g} s")
        time.sleep(0.05)
    print(name)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from karn.system import state

    name = state.resolve(args.system)
    if state.is_running(name):
        status = state.request(name, "status")
    else:
        saved = state.read_json(os.path.join(state.system_dir(name), state.STATUS))
        if saved is None:
            raise KarnError(f"system {name} is not running and left no status")
        status = saved
    if args.format == "json":
        print(json.dumps(_dated(status), indent=2))
        return 0
    _print_status(status)
    return 0


def _dated(status: dict) -> dict:
    """The status with RFC 3339 times and rounded seconds (docs/cli.md)."""
    out = dict(status)
    if isinstance(out.get("uptime"), float):
        out["uptime"] = round(out["uptime"], 3)
    out["partitions"] = [
        {**p, "started": rfc3339(p["started"]) if isinstance(p.get("started"), (int, float))
         else p.get("started")} for p in status.get("partitions", [])]
    return out


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _print_status(status: dict) -> None:
    print(f"system {status['name']}: {status['state']}, {status['schedule']} schedule, "
          f"up {status['uptime']:.0f} s")
    rows = [["PARTITION", "STATE", "PID", "RESTARTS", "LAST EXIT"]]
    for p in status["partitions"]:
        rows.append([p["name"], p["state"], str(p["pid"] or "-"), str(p["restarts"]),
                     "-" if p["last_exit"] is None else str(p["last_exit"])])
    _table(rows)
    if status["channels"]:
        print()
        rows = [["CHANNEL", "KIND", "SENT", "RECEIVED", "DROPPED", "REJECTED", "QUEUED"]]
        for c in status["channels"]:
            kind = c["kind"] + (" diode" if c["diode"] else "") + (
                f" guard={c['guard']}" if c["guard"] else "")
            rows.append([c["name"], kind, *(str(c[k]) for k in ("sent", "received",
                                                                 "dropped", "rejected",
                                                                 "queued"))])
        _table(rows)
    cyclic = status.get("cyclic")
    if cyclic and "lateness_us" in cyclic:
        late = cyclic["lateness_us"]
        print(f"\ncyclic: {cyclic['frames']} frames, window start lateness p50 "
              f"{late['p50']} us, p99 {late['p99']} us, max {late['max']} us")


def cmd_logs(args: argparse.Namespace) -> int:
    from karn.system import state

    name = state.resolve(args.system)
    directory = state.system_dir(name)
    if args.partition is not None:
        path = os.path.join(directory, state.LOGS, f"{args.partition}.log")
        if not os.path.exists(path):
            raise NotFoundError(f"system {name} has no partition {args.partition!r}")
        _copy(state.log_parts(path), prefix=None)
        return 0
    _copy(state.log_parts(os.path.join(directory, state.EVENTS)), prefix="events")
    logs = os.path.join(directory, state.LOGS)
    for entry in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
        if entry.endswith(".log"):
            path = os.path.join(logs, entry)
            _copy(state.log_parts(path), prefix=entry.removesuffix(".log"))
    return 0


def _copy(paths: list[str], prefix: str | None) -> None:
    """Print log files (a rotated log's older part first)."""
    out = sys.stdout.buffer
    for path in paths:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        if prefix is None:
            out.write(data)
        else:
            for line in data.splitlines():
                out.write(prefix.encode() + b" | " + line + b"\n")
    out.flush()


def cmd_graph(args: argparse.Namespace) -> int:
    from karn.system.description import load
    from karn.system.graph import render_svg

    system = load(args.file)
    out = args.output or os.path.splitext(args.file)[0] + ".svg"
    render_svg(system, out)
    print(out)
    return 0
