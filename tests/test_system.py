"""Partitioned systems (docs/systems.md): real partitions (karn monitors running real guest
programs in KVM) joined by ports, diodes and guards; schedules; the health monitor.

The guest side is tests/programs/sys_ports.c (one tool, several roles) and spin.c.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Builder
from helpers import REPO, SystemUp, channel, karn_system, wait_for
from helpers import system_logs as logs
from helpers import system_status as status

LAST_CPU = (os.cpu_count() or 1) - 1  # partitions measured against each other share it


@pytest.fixture(scope="module")
def tool(build: Builder) -> Path:
    return build("sys_ports")


@pytest.fixture(scope="module")
def spin(build: Builder) -> Path:
    return build("spin")


def write(tmp_path: Path, text: str, name: str = "system.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def partition(st: dict, name: str) -> dict:
    return next(p for p in st["partitions"] if p["name"] == name)



# ---- karn system check --------------------------------------------------------------

GOOD = """
name = "{name}"
acyclic = true
[partitions.a]
program = "{tool}"
args = ["idle"]
[partitions.a.ports.out]
direction = "out"
max_size = 64
[partitions.b]
program = "{tool}"
args = ["idle"]
[partitions.b.ports.in]
direction = "in"
max_size = 64
[[channels]]
from = "a.out"
to = "b.in"
diode = true
"""


@pytest.mark.parametrize("change, error", [
    (('to = "b.in"', 'to = "c.in"'), "channel 1: to: unknown partition 'c'"),
    (('from = "a.out"\nto = "b.in"', 'from = "b.in"\nto = "a.out"'),
     'channel b.in -> a.out: port direction mismatch: b.in is an "in" port and cannot send'),
    (('diode = true', 'diode = true\nmax_size = 32'),
     "channel a.out -> b.in: message size over the channel's limit: a.out allows 64 bytes, "
     "the channel 32"),
    (('diode = true', 'diode = true\n[schedule]\npolicy = "cyclic"\nmajor_frame = "100ms"\n'
      'windows = [{partition = "a", start = 0, duration = 60}, '
      '{partition = "b", start = "50ms", duration = "50ms"}]'),
     "schedule: windows overlap: a 0-60ms and b 50-100ms"),
    (('diode = true', 'diode = true\n[schedule]\npolicy = "cyclic"\nmajor_frame = "100ms"\n'
      'windows = [{partition = "a", start = 0, duration = 60}, '
      '{partition = "b", start = "60ms", duration = "50ms"}]'),
     "schedule window 2: window 60-110ms exceeds the major frame of 100ms"),
    (('diode = true', 'diode = true\n[partitions.b.ports.back]\ndirection = "out"\n'
      'max_size = 64\n[partitions.a.ports.back]\ndirection = "in"\nmax_size = 64\n'
      '[[channels]]\nfrom = "b.back"\nto = "a.back"'),
     "channel a.out->b.in: cycle through a diode in a system declared acyclic: "
     "back via b.back->a.back"),
    (('max_size = 64\n[partitions.b]', 'max_size = 64\nkind = "sampling"\n[partitions.b]'),
     "channel a.out -> b.in: port kind mismatch: a.out is sampling, b.in is queuing"),
])
def test_check_reports_one_precise_error(tmp_path: Path, state_env: dict[str, str],
                                         tool: Path, change: tuple[str, str],
                                         error: str) -> None:
    text = GOOD.format(name="checked", tool=tool)
    assert change[0] in text
    path = write(tmp_path, text.replace(change[0], change[1], 1))
    proc = karn_system(state_env, "check", str(path))
    assert proc.returncode == 125
    assert proc.stderr == f"karn: {path}: {error}\n"


def test_check_accepts_a_good_description_and_graph_draws_it(
        tmp_path: Path, state_env: dict[str, str], tool: Path) -> None:
    path = write(tmp_path, GOOD.format(name="good", tool=tool))
    proc = karn_system(state_env, "check", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ("good: ok: 2 partitions, 2 ports, 1 channel (1 diode, "
                           "0 guarded), fair schedule\n")
    svg = tmp_path / "good.svg"
    proc = karn_system(state_env, "graph", "-o", str(svg), str(path))
    assert proc.returncode == 0, proc.stderr
    text = svg.read_text()
    assert text.startswith("<?xml") and "<svg" in text
    for label in ("out", "in", "diode", "queuing, 64 B"):
        assert label in text


# ---- the pipeline: sensor -> guard -> diode -> detector -> queuing port -> logger -------

PIPELINE = """
name = "pipeline"
acyclic = true

[partitions.sensor]
program = "{tool}"
args = {readings}
[partitions.sensor.ports.readings]
direction = "out"
max_size = 256

[partitions.detector]
program = "{tool}"
args = ["detector", "readings", "alerts", "{limit}"]
[partitions.detector.ports.readings]
direction = "in"
max_size = 256
depth = 64
[partitions.detector.ports.alerts]
direction = "out"
max_size = 128

[partitions.logger]
program = "{tool}"
args = ["logger", "alerts", "{alerts}"]
[partitions.logger.ports.alerts]
direction = "in"
max_size = 128

[[channels]]
from = "sensor.readings"
to = "detector.readings"
diode = true
guard = "readings"

[[channels]]
from = "detector.alerts"
to = "logger.alerts"

[guards.readings]
max_size = 100
deny = ["drop table"]
allow = '^\\{{.*\\}}$'
schema = {{ type = "object", required = ["id", "value"], properties = {{ id = {{ type = "integer" }}, value = {{ type = "number" }} }} }}
"""  # noqa: E501

WELL_FORMED = [{"id": i, "value": v} for i, v in
               enumerate([10, 70, 90, 55, 20, 99, 51, 80, 5, 65], start=1)]
MALFORMED = {
    '{"id": 91, "value": "high"}': "schema: value: 'high' is not of type 'number'",
    '{"id": 92, "value": 95, "note": "DROP TABLE readings"}': "contains denied word",
    '{"id": 93, "value": 20': "does not match the allow-list pattern",
    '{"id": 94, "value": ' + "9" * 100 + "}": "over the guard's limit of 100",
    '{"value": 99}': "schema: (root): 'id' is a required property",
    '["id", 95]': "does not match the allow-list pattern",
}
LIMIT = 50


def test_pipeline_guard_diode_queuing(tmp_path: Path, state_env: dict[str, str],
                                      tool: Path) -> None:
    messages = []
    bad = iter(MALFORMED)
    for reading in WELL_FORMED:  # malformed readings between well-formed ones
        messages.append(json.dumps(reading))
        messages.extend([next(bad)] if reading["id"] % 2 == 0 else [])
    messages.extend(bad)
    expected = [f"ALERT id={r['id']} value={r['value']}" for r in WELL_FORMED
                if r["value"] > LIMIT]
    path = write(tmp_path, PIPELINE.format(
        tool=tool, limit=LIMIT, alerts=len(expected),
        readings=json.dumps(["sensor", "readings", *messages])))
    with SystemUp(state_env, path, "pipeline"):
        wait_for(lambda: "logger done" in logs(state_env, "pipeline", "logger"),
                 what="the logger")
        st = status(state_env, "pipeline")
        events = karn_system(state_env, "logs", "-s", "pipeline").stdout
    lines = logs(state_env, "pipeline", "logger").splitlines()
    assert lines == [*expected, "logger done"]
    assert logs(state_env, "pipeline", "sensor") == f"sensor sent {len(messages)}\n"
    readings = channel(st, "sensor.readings->detector.readings")
    assert readings["sent"] == len(messages)
    assert readings["rejected"] == len(MALFORMED)
    assert readings["received"] == len(WELL_FORMED)
    assert readings["dropped"] == 0
    alerts = channel(st, "detector.alerts->logger.alerts")
    assert (alerts["sent"], alerts["received"], alerts["rejected"]) == (
        len(expected), len(expected), 0)
    for reason in MALFORMED.values():
        assert reason in events
    assert partition(st, "sensor")["state"] == "halted"
    assert partition(st, "detector")["state"] == "running"


# ---- no back-channel through a diode --------------------------------------------------

DIODE = """
name = "{name}"
[partitions.sender]
program = "{tool}"
args = ["sender", "out", "{count}", "0"]
[partitions.sender.ports.out]
direction = "out"
max_size = 64
[partitions.receiver]
program = "{tool}"
args = {receiver}
[partitions.receiver.ports.in]
direction = "in"
max_size = 64
depth = 8
[[channels]]
from = "sender.out"
to = "receiver.in"
diode = true
"""
RECEIVERS = {"running": ["drain", "in"], "stalled": ["idle"], "dead": ["exit", "3"]}


@pytest.mark.slow
def test_diode_sender_cannot_tell_receiver_state(tmp_path: Path, state_env: dict[str, str],
                                                 tool: Path) -> None:
    count = 300
    seen = {}
    for state, receiver in RECEIVERS.items():
        name = f"diode-{state}"
        path = write(tmp_path, DIODE.format(name=name, tool=tool, count=count,
                                            receiver=json.dumps(receiver)), f"{name}.toml")
        with SystemUp(state_env, path, name):
            wait_for(lambda n=name: "slowest_us" in logs(state_env, n, "sender"),
                     what=f"the sender ({state} receiver)")
            st = status(state_env, name)
        out = logs(state_env, name, "sender").splitlines()
        seen[state] = out[:-1]  # everything but the slowest write's exact time
        slowest = int(out[-1].split()[1])
        assert slowest < 1_000_000, f"{state}: a write took {slowest} us"
        counters = channel(st, "sender.out->receiver.in")
        assert counters["sent"] == count
        # Overflow is counted on the receiving side, never reported to the sender.
        assert counters["received"] + counters["dropped"] + counters["queued"] == count
        if state != "running":
            assert counters["dropped"] >= count - 8
    assert seen["running"] == [f"sent {count} ok {count} fast {count}"]
    assert seen["stalled"] == seen["running"]
    assert seen["dead"] == seen["running"]


def test_ordinary_queuing_channel_holds_the_sender_back(
        tmp_path: Path, state_env: dict[str, str], tool: Path) -> None:
    """Unlike a diode: with the receiver not reading, the queue fills and the sender is
    held back; nothing is dropped."""
    text = DIODE.format(name="backpressure", tool=tool, count=300,
                        receiver=json.dumps(["idle"])).replace("diode = true", "")
    path = write(tmp_path, text)
    with SystemUp(state_env, path, "backpressure"):
        wait_for(lambda: channel(status(state_env, "backpressure"),
                                 "sender.out->receiver.in")["queued"] == 8,
                 what="the queue to fill")
        time.sleep(1.0)
        counters = channel(status(state_env, "backpressure"), "sender.out->receiver.in")
        sender_log = logs(state_env, "backpressure", "sender")
    assert sender_log == ""  # still blocked in a write: it never got to print
    assert (counters["queued"], counters["dropped"], counters["received"]) == (8, 0, 0)
    assert counters["sent"] == 8  # the supervisor stopped reading the sender when full


RATE = """
name = "rate"
[partitions.sensor]
program = "{tool}"
args = {messages}
[partitions.sensor.ports.out]
direction = "out"
max_size = 64
[partitions.sink]
program = "{tool}"
args = ["drain", "in"]
[partitions.sink.ports.in]
direction = "in"
max_size = 64
depth = 64
[[channels]]
from = "sensor.out"
to = "sink.in"
guard = "slow"
[guards.slow]
rate = 2
burst = 5
"""


def test_guard_rate_limit_rejects_a_burst(tmp_path: Path, state_env: dict[str, str],
                                          tool: Path) -> None:
    count = 20
    messages = ["sensor", "out", *(f"reading {i}" for i in range(count))]
    path = write(tmp_path, RATE.format(tool=tool, messages=json.dumps(messages)))
    with SystemUp(state_env, path, "rate"):
        wait_for(lambda: "sensor sent" in logs(state_env, "rate", "sensor"), what="sensor")
        wait_for(lambda: channel(status(state_env, "rate"), "sensor.out->sink.in")["sent"]
                 == count, what="the supervisor")
        counters = channel(status(state_env, "rate"), "sensor.out->sink.in")
        events = karn_system(state_env, "logs", "-s", "rate").stdout
    # The burst of 5 passes (the whole write burst takes far less than the 0.5 s a
    # token needs to refill); the rest is rejected and logged.
    assert counters["rejected"] in (count - 5, count - 6), counters
    assert counters["received"] + counters["queued"] == count - counters["rejected"]
    assert events.count("over the rate limit of 2 messages/s") == counters["rejected"]


WRONG_WAY = """
name = "wrongway"
[partitions.a]
image = "sysports:test"
args = ["probe", "out"]
[partitions.a.ports.out]
direction = "out"
max_size = 64
[partitions.b]
program = "{tool}"
args = ["probe", "in"]
[partitions.b.ports.in]
direction = "in"
max_size = 64
[[channels]]
from = "a.out"
to = "b.in"
diode = true
"""


def test_ports_are_one_way(tmp_path: Path, state_env: dict[str, str], tool: Path) -> None:
    """Also: a partition from an image."""
    built = subprocess.run([sys.executable, "-m", "karn", "build", "-t", "sysports:test",
                            "--entrypoint", str(tool), str(tool)], env=state_env, cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    path = write(tmp_path, WRONG_WAY.format(tool=tool))
    proc = karn_system(state_env, "up", str(path))
    assert proc.returncode == 0, proc.stderr
    assert logs(state_env, "wrongway", "a") == (
        "open rdwr: Permission denied\nopen rdonly: Permission denied\n"
        "open wronly: ok; read: Bad file descriptor\n")
    assert logs(state_env, "wrongway", "b") == (
        "open rdwr: Permission denied\nopen rdonly: ok; write: Bad file descriptor\n"
        "open wronly: Permission denied\n")


SAMPLING = """
name = "sampling"
[partitions.producer]
program = "{tool}"
args = ["sender", "value", "150", "20"]
[partitions.producer.ports.value]
direction = "out"
kind = "sampling"
max_size = 64
[partitions.consumer]
program = "{tool}"
args = [{how}"sampler", "value", "1500", "5000"]
[partitions.consumer.ports.value]
direction = "in"
kind = "sampling"
max_size = 64
refresh = "200ms"
[[channels]]
from = "producer.value"
to = "consumer.value"
"""


@pytest.mark.parametrize("mapped", [False, True])  # read(), or karn_port_latest()
def test_sampling_port_latest_message_and_validity(tmp_path: Path,
                                                   state_env: dict[str, str],
                                                   tool: Path, mapped: bool) -> None:
    path = write(tmp_path, SAMPLING.format(tool=tool, how='"mapped", ' if mapped else ""))
    proc = karn_system(state_env, "up", str(path))
    assert proc.returncode == 0, proc.stderr
    out = logs(state_env, "sampling", "consumer").splitlines()
    first, second = out.index(next(x for x in out if x.startswith("read"))), None
    second = max(i for i, x in enumerate(out) if x.startswith("read"))
    # While the producer writes every ~20 ms, a read gives a fresh message: valid.
    assert out[first].startswith("read message ")
    assert "valid 1" in out[first:second]
    # After it stopped (150 messages), the read still gives the last one, now too old.
    assert out[second] == "read message 149"
    assert "valid 0" in out[second:]
    assert "refresh_ms 200" in out


# ---- schedules --------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CYCLIC = """
name = "cyclic"
[partitions.a]
program = "{spin}"
cpu_affinity = [{cpu}]
[partitions.b]
program = "{spin}"
cpu_affinity = [{cpu}]
[schedule]
policy = "cyclic"
major_frame = "100ms"
windows = [{{ partition = "a", start = "0ms", duration = "60ms" }},
           {{ partition = "b", start = "60ms", duration = "40ms" }}]
"""


@pytest.mark.slow
@pytest.mark.serial
def test_cyclic_schedule_shares_the_cpu_by_windows(tmp_path: Path, state_env: dict[str, str],
                                                   spin: Path) -> None:
    path = write(tmp_path, CYCLIC.format(spin=spin, cpu=LAST_CPU))
    with SystemUp(state_env, path, "cyclic"):
        # start-up done: each monitor starts within its own windows on one shared CPU,
        # which a loaded host makes slow (60 s was not enough at load 9)
        wait_for(lambda: all("spinning" in logs(state_env, "cyclic", n) for n in "ab"),
                 what="both guests to spin", timeout=240)
        pids = {p["name"]: p["pid"] for p in status(state_env, "cyclic")["partitions"]}
        t0, before = time.monotonic(), {n: cpu_seconds(p) for n, p in pids.items()}
        time.sleep(10)
        t1, after = time.monotonic(), {n: cpu_seconds(p) for n, p in pids.items()}
        cyclic = status(state_env, "cyclic")["cyclic"]
    share = {n: 100 * (after[n] - before[n]) / (t1 - t0) for n in pids}
    print(f"\ncyclic 60/40: measured CPU share a {share['a']:.1f}%, b {share['b']:.1f}%; "
          f"window-start lateness {cyclic['lateness_us']}")
    assert abs(share["a"] - 60) <= 5, share
    assert abs(share["b"] - 40) <= 5, share


PRIORITY = """
name = "priority"
[schedule]
policy = "priority"
[partitions.high]
program = "{tool}"
args = ["wakeup", "300", "2000"]
cpu_affinity = [{cpu}]
priority = 50
[partitions.low]
program = "{spin}"
cpu_affinity = [{cpu}]
priority = 10
"""


@pytest.mark.serial
def test_priority_schedule_high_partition_wakes_promptly(
        tmp_path: Path, state_env: dict[str, str], tool: Path, spin: Path) -> None:
    path = write(tmp_path, PRIORITY.format(tool=tool, spin=spin, cpu=LAST_CPU))
    with SystemUp(state_env, path, "priority"):
        wait_for(lambda: "wakeup_us" in logs(state_env, "priority", "high"),
                 what="the high-priority partition")
        st = status(state_env, "priority")
    assert partition(st, "low")["state"] == "running"  # it spun the whole time
    words = logs(state_env, "priority", "high").split()
    pct = {words[i]: int(words[i + 1]) for i in range(1, len(words) - 1, 2)}
    print(f"\npriority: wake-up latency beside a spinning low-priority partition on the "
          f"same CPU (us): {pct}")
    assert pct["p50"] < 1000 and pct["p90"] < 2000, pct


def test_priority_schedule_needs_the_right(tmp_path: Path, state_env: dict[str, str],
                                           tool: Path, spin: Path) -> None:
    path = write(tmp_path, PRIORITY.format(tool=tool, spin=spin, cpu=LAST_CPU))
    # Without CAP_SYS_NICE (as root, setpriv drops it from every set) `up` refuses.
    drop = (["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice", "--"]
            if os.geteuid() == 0 else [])
    proc = subprocess.run([*drop, sys.executable, "-m", "karn", "system", "up", str(path)],
                          env=state_env, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 125
    assert proc.stderr == ("karn: the priority schedule needs root or CAP_SYS_NICE "
                           "(sched_setscheduler SCHED_FIFO: permission denied)\n")


# ---- health monitor -----------------------------------------------------------------

HEALTH = """
name = "health"
[partitions.steady]
program = "{tool}"
args = ["idle"]
[partitions.flaky]
program = "{tool}"
args = ["exit", "3"]
health = {{ on_error = "restart", max_restarts = 1, backoff = "20ms", then = "halt" }}
[partitions.fatal]
program = "{tool}"
args = ["exit", "4"]
health = {{ on_error = "restart", max_restarts = 2, backoff = "400ms", then = "stop" }}
"""


def test_health_monitor_restarts_then_applies_final_action(
        tmp_path: Path, state_env: dict[str, str], tool: Path) -> None:
    path = write(tmp_path, HEALTH.format(tool=tool))
    proc = karn_system(state_env, "up", str(path), timeout=60)
    assert proc.returncode == 1, proc.stderr  # the health monitor stopped the system
    st = status(state_env, "health")
    assert st["state"] == "stopped"
    flaky, fatal = partition(st, "flaky"), partition(st, "fatal")
    assert (flaky["state"], flaky["restarts"], flaky["last_exit"]) == ("halted", 1, 3)
    assert (fatal["restarts"], fatal["last_exit"]) == (2, 4)
    assert partition(st, "steady")["state"] == "stopped"
    events = [line.removeprefix("events | ").split(" ", 1)[1] for line in
              karn_system(state_env, "logs", "-s", "health").stdout.splitlines()
              if line.startswith("events | ")]
    assert events.count("partition fatal exited with status 4; restart 1/2 in 400 ms: "
                        "restart") == 1
    assert "partition fatal exited with status 4; restart 2/2 in 800 ms: restart" in events
    assert ("partition fatal exited with status 4; restart limit of 2 reached: stop"
            in events)
    assert "partition flaky exited with status 3; restart limit of 1 reached: halt" in events
    assert logs(state_env, "health", "fatal") == "exiting with 4\n" * 3


def test_down_stops_a_detached_system(tmp_path: Path, state_env: dict[str, str],
                                      tool: Path) -> None:
    path = write(tmp_path, GOOD.format(name="idle", tool=tool))
    with SystemUp(state_env, path, "idle"):
        pids = [p["pid"] for p in status(state_env, "idle")["partitions"]]
        again = karn_system(state_env, "up", "-d", str(path))
        assert (again.returncode, again.stderr) == (125, "karn: system idle is already "
                                                         "running\n")
        proc = karn_system(state_env, "down", "idle")
        assert (proc.returncode, proc.stdout) == (0, "idle\n")
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert status(state_env, "idle")["state"] == "stopped"
