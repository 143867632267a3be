"""Instance commands: ps, logs, stop, kill, wait, stats, and the instance side of inspect
and rm."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from karn.cli.output import add_format, print_json, rfc3339
from karn.errors import KarnError, UsageError
from karn.hints import Any
from karn.instance import logs, registry
from karn.instance.registry import Instance

POLL = 0.05
KILL_GRACE = 3.0  # after SIGKILL to the guest, before the monitor itself is killed


def register(sub: Any) -> None:
    p = sub.add_parser("ps", help="list running instances",
                       description="List running instances (with -a, exited ones too).")
    p.add_argument("-a", "--all", action="store_true", help="also show exited instances")
    p.add_argument("-q", "--quiet", action="store_true", help="print instance IDs only")
    p.add_argument("-f", "--filter", action="append", default=[], type=parse_filter,
                   metavar="KEY=VALUE", help="only instances whose name contains VALUE "
                   "(name=), whose ID begins with VALUE (id=) or in this state (status=running"
                   "|exited|dead; with status=, exited ones are listed without -a); the same "
                   "key again widens, another key narrows")
    p.add_argument("--no-trunc", action="store_true", help="do not shorten the command")
    add_format(p)
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser("logs", help="show a detached instance's output",
                       description="Print the stdout and stderr of a detached instance.")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing new output until the instance exits")
    p.add_argument("-n", "--tail", metavar="N", default="all",
                   help="only the last N lines (default all)")
    p.add_argument("-t", "--timestamps", action="store_true",
                   help="put the time each line arrived (RFC 3339, UTC) before it")
    p.add_argument("instance", metavar="INSTANCE", help="ID, ID prefix or name")
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser("stop", help="stop instances (SIGTERM, then SIGKILL)",
                       description="Send SIGTERM to each guest; after the timeout, SIGKILL.")
    p.add_argument("-t", "--time", type=float, default=10.0, metavar="SECONDS",
                   help="seconds to wait before killing (default 10)")
    p.add_argument("instances", nargs="+", metavar="INSTANCE")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("kill", help="send a signal to instances (default SIGKILL)",
                       description="Send a signal to each instance's guest process.")
    p.add_argument("-s", "--signal", default="KILL", help="signal name or number (default KILL)")
    p.add_argument("instances", nargs="+", metavar="INSTANCE")
    p.set_defaults(func=cmd_kill)

    p = sub.add_parser("wait", help="wait for instances to end; print their exit codes",
                       description="Block until each instance ends, then print its exit "
                       "code, one line per instance.")
    p.add_argument("instances", nargs="+", metavar="INSTANCE")
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("stats", help="live CPU, memory and syscall rates of instances",
                       description="Show each running instance's CPU use, guest memory and "
                       "syscalls per second, measured over one second, refreshed until "
                       "Ctrl-C (default: every running instance).")
    p.add_argument("--no-stream", action="store_true", help="print one measurement and exit")
    add_format(p)
    p.add_argument("instances", nargs="*", metavar="INSTANCE")
    p.set_defaults(func=cmd_stats)


def ask(inst: Instance, op: str, **fields: object) -> dict:
    """One control-socket request; a one-line error when the monitor does not answer."""
    from karn.debug.control import CLIENT_TIMEOUT, request

    if not inst.alive():
        raise UsageError(f"instance {inst.id} is not running ({inst.describe_state()})")
    try:
        answer = request(inst.socket_path, op, CLIENT_TIMEOUT, **fields)
    except OSError as err:
        raise KarnError(f"instance {inst.id} does not answer on its control socket: "
                        f"{err.strerror or err}") from None
    if not answer.get("ok"):
        raise KarnError(f"instance {inst.id}: {answer.get('error')}")
    return answer


# -- ps -----------------------------------------------------------------------------------

FILTER_KEYS = ("name", "id", "status")
STATES = ("running", "exited", "dead")


def parse_filter(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or key not in FILTER_KEYS:
        raise argparse.ArgumentTypeError(f"invalid filter {text!r} (use name=, id= or status=)")
    if key == "status" and value not in STATES:
        raise argparse.ArgumentTypeError(f"invalid status {value!r} ({', '.join(STATES)})")
    return key, value


def _selected(inst: Instance, state: str, filters: list[tuple[str, str]]) -> bool:
    """Filters of one key: any may match; of different keys: each must (docker's rule)."""
    facts = {"name": lambda v: v in inst.name, "id": inst.id.startswith,
             "status": lambda v: v == state}
    keys = {key for key, _ in filters}
    return all(any(facts[key](v) for k, v in filters if k == key) for key in keys)


def cmd_ps(args: argparse.Namespace) -> int:
    rows = []
    objects = []
    every_state = args.all or any(key == "status" for key, _ in args.filter)
    for inst in registry.all_instances():
        state = inst.state()
        if state != "running" and not every_state or not _selected(inst, state, args.filter):
            continue
        if args.quiet:
            print(inst.id)
            continue
        stats = _stats(inst) if state == "running" else None
        if args.format == "json":
            objects.append(_ps_object(inst, state, stats))
            continue
        rows.append([
            inst.id, inst.name or "-", _command_line(inst.meta, not args.no_trunc),
            inst.describe_state(),
            _duration(stats["uptime"]) if stats else "-",
            f"{_size(stats['guest_resident'])} / {_size(stats['memory_limit'])}" if stats
            else "-",
            f"{stats['cpu_seconds']:.2f}s" if stats else "-",
            ", ".join(_ports(inst)) or "-",
        ])
    if args.quiet:
        return 0
    if args.format == "json":
        print_json(objects)
    else:
        _table(["INSTANCE ID", "NAME", "COMMAND", "STATE", "UPTIME", "MEMORY", "CPU", "PORTS"],
               rows)
    return 0



def _ps_object(inst: Instance, state: str, stats: dict | None) -> dict:
    """One `ps --format json` row: the table's columns, unabbreviated and in units."""
    row: dict[str, Any] = {
        "Id": inst.id, "Name": inst.name, "Command": [inst.meta["program"], *inst.meta["args"]],
        "State": state, "Status": inst.describe_state(), "Created": rfc3339(inst.meta["created"]),
        "Ports": _ports(inst),
    }
    if stats is not None:
        row.update(UptimeSeconds=round(stats["uptime"], 3),
                   MemoryBytes=stats["guest_resident"], MemoryLimitBytes=stats["memory_limit"],
                   CpuSeconds=round(stats["cpu_seconds"], 3))
    if inst.status is not None:
        row["ExitCode"] = inst.status["exit_code"]
    return row


def _ports(inst: Instance) -> list[str]:
    from karn.run.publish import describe  # socket: only when there is a port to show

    return [describe(spec) for spec in inst.ports]


def _stats(inst: Instance) -> dict | None:
    try:
        return ask(inst, "stats")
    except KarnError:
        return None  # exited meanwhile, or hung: ps still lists it


def _command_line(meta: dict, shorten: bool = True) -> str:
    text = " ".join([meta["program"], *meta["args"]])
    return text if len(text) <= 30 or not shorten else text[:29] + "…"


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def _size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(value)


# -- logs ---------------------------------------------------------------------------------

def cmd_logs(args: argparse.Namespace) -> int:
    inst = registry.find(args.instance)
    if not inst.detached:
        raise UsageError(f"instance {inst.id} runs in the foreground: its output goes to "
                         "the terminal that started it")
    tail = _tail_lines(args.tail)
    try:
        log = open(inst.log_path, "rb")
    except FileNotFoundError:
        raise UsageError(f"instance {inst.id} has no log") from None
    out = sys.stdout.buffer
    offset = 0 if tail is None else logs.tail_offset(inst.log_path, tail)
    line_start = True
    times = logs.Times(inst.log_path) if args.timestamps else None
    with log:
        log.seek(offset)
        while True:
            alive = inst.refresh().alive()  # checked before the read
            if not alive:
                logs.wait_for_writer(inst.log_path)  # the last output is in the log
            # without -f: what the log holds now, though the instance may write on
            end = None if args.follow and alive else os.fstat(log.fileno()).st_size
            while end is None or offset < end:
                chunk = log.read(1 << 16 if end is None else min(1 << 16, end - offset))
                if not chunk:
                    break
                if times is not None:
                    if times.ends_before(offset + len(chunk)):  # output newer than we read
                        times = logs.Times(inst.log_path)
                    text, line_start = logs.stamped(chunk, offset, times, line_start)
                    out.write(text)
                else:
                    out.write(chunk)
                out.flush()
                offset += len(chunk)
            if end is not None:
                return 0
            time.sleep(0.1)


def _tail_lines(text: str) -> int | None:
    if text == "all":
        return None
    if not text.isdigit():
        raise UsageError(f"--tail {text!r}: give a number of lines or 'all'")
    return int(text)


# -- stop, kill ---------------------------------------------------------------------------

def cmd_stop(args: argparse.Namespace) -> int:
    if args.time < 0:
        raise UsageError("--time must not be negative")
    for ref in args.instances:
        inst = registry.find(ref)
        if inst.alive():
            ask(inst, "signal", signal=signal.SIGTERM)
            if not _wait_exit(inst, args.time):
                _kill_hard(inst, ref)
        print(ref)
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    sig = parse_signal(args.signal)
    for ref in args.instances:
        inst = registry.find(ref)
        ask(inst, "signal", signal=sig)
        if sig == signal.SIGKILL and not _wait_exit(inst, KILL_GRACE):
            _kill_monitor(inst)
        print(ref)
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    for ref in args.instances:
        inst = registry.find(ref)
        while inst.alive():
            time.sleep(POLL)
            inst = inst.refresh()
        if inst.status is None:
            if not os.path.exists(os.path.join(inst.directory, registry.META)):
                raise KarnError(f"instance {ref} ended and its record was removed (--rm, or "
                                "a foreground run): no exit code to show")
            raise KarnError(f"instance {ref} is dead: its monitor was killed, no exit code")
        print(inst.status["exit_code"], flush=True)
    return 0


# -- stats --------------------------------------------------------------------------------

STATS_INTERVAL = 1.0


def cmd_stats(args: argparse.Namespace) -> int:
    chosen = [registry.find(ref) for ref in args.instances]
    while True:
        instances = chosen or [i for i in registry.all_instances() if i.alive()]
        first = {inst.id: _stats(inst) for inst in instances}
        time.sleep(STATS_INTERVAL)
        rates = [_rates(inst, first[inst.id], _stats(inst)) for inst in instances]
        _print_stats(args.format, [r for r in rates if r is not None])
        if args.no_stream:
            return 0


def _rates(inst: Instance, before: dict | None, after: dict | None) -> dict | None:
    """CPU share and syscalls per second between two samples of the control socket."""
    if before is None or after is None:
        return None  # ended meanwhile
    elapsed = max(after["uptime"] - before["uptime"], 1e-6)
    return {"Id": inst.id, "Name": inst.name,
            "CpuPercent": round(100 * (after["cpu_seconds"] - before["cpu_seconds"])
                                / elapsed, 1),
            "MemoryBytes": after["guest_resident"], "MemoryLimitBytes": after["memory_limit"],
            "SyscallsPerSecond": round((after["syscalls"] - before["syscalls"]) / elapsed),
            "Threads": after["threads"]}


def _print_stats(form: str, rows: list[dict]) -> None:
    if form == "json":
        print_json(rows)
        return
    if sys.stdout.isatty():
        sys.stdout.write("\x1b[H\x1b[2J")  # redraw in place, as docker stats does
    _table(["INSTANCE ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "SYSCALLS/S",
            "THREADS"],
           [[r["Id"], r["Name"] or "-", f"{r['CpuPercent']:.1f}%",
             f"{_size(r['MemoryBytes'])} / {_size(r['MemoryLimitBytes'])}",
             f"{100 * r['MemoryBytes'] / max(r['MemoryLimitBytes'], 1):.1f}%",
             str(r["SyscallsPerSecond"]), str(r["Threads"])] for r in rows])
    sys.stdout.flush()


def parse_signal(text: str) -> int:
    name = text.upper()
    if name.isdigit():
        number = int(name)
    else:
        try:
            number = signal.Signals["SIG" + name.removeprefix("SIG")].value
        except KeyError:
            raise UsageError(f"unknown signal {text!r}") from None
    if not 1 <= number < 65:
        raise UsageError(f"invalid signal number {number}")
    return number


def _wait_exit(inst: Instance, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while inst.refresh().alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def _kill_hard(inst: Instance, ref: str) -> None:
    """SIGKILL to the guest; if the monitor does not end either, to the monitor; an error
    if even that does not end it."""
    try:
        ask(inst, "signal", signal=signal.SIGKILL)
    except KarnError:
        pass
    if not _wait_exit(inst, KILL_GRACE):
        _kill_monitor(inst)
        if not _wait_exit(inst, KILL_GRACE):
            raise KarnError(f"instance {ref} did not end after SIGKILL (its monitor, pid "
                            f"{inst.pid}, may be stuck in the host kernel)")


def _kill_monitor(inst: Instance) -> None:
    try:
        os.kill(inst.pid, signal.SIGKILL)
    except ProcessLookupError:  # it ended meanwhile
        pass


# -- inspect, rm: instances first, then images (karn/cli/images.py) ---------------------

def inspect(inst: Instance) -> dict:
    info: dict = {"Id": inst.id, "Name": inst.name, "State": inst.state(),
                  "Pid": inst.pid, "Created": rfc3339(inst.meta["created"]),
                  "Program": inst.meta["program"], "Args": inst.meta["args"],
                  "Detached": inst.detached, "Ports": _ports(inst)}
    if inst.status is not None:
        info["ExitCode"] = inst.status["exit_code"]
        info["Finished"] = rfc3339(inst.status["finished"])
    elif inst.alive():
        live = ask(inst, "inspect")
        for said_above in ("ok", "program"):
            live.pop(said_above, None)
        if "argv" in live:
            info["Argv"] = live.pop("argv")  # argv[0] as the guest sees it
        stats = live.get("stats") or {}
        for key in ("uptime", "cpu_seconds"):  # float sums: 0.39999999999999997
            if isinstance(stats.get(key), float):
                stats[key] = round(stats[key], 3)
        info.update(live)
    return info


def remove(inst: Instance, ref: str, force: bool = False) -> None:
    """Remove a stopped instance's record, a running one killed first when forced; print
    the name or id as given (docker's rm)."""
    if inst.alive():
        if not force:
            raise UsageError(f"instance {ref} is running: stop it first (karn stop {ref}), "
                             "or remove it with -f")
        _kill_hard(inst, ref)
    registry.remove(inst)
    print(ref)

