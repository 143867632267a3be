"""Partitioned systems against a hostile partition or host-local client (issue 12: V6, R4,
R10 and the refused configurations): real systems of real KVM partitions, the guest side
compiled at test time (tests/programs/guard_hostile.c).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import Builder
from helpers import REPO, SystemUp, channel, free_port, karn_system, wait_for
from helpers import system_logs as logs
from helpers import system_status as status


@pytest.fixture(scope="module")
def tool(build: Builder) -> Path:
    return build("guard_hostile")



def received(env: dict[str, str], name: str, part: str) -> list[bytes]:
    """The messages a `recv` partition printed (one hex line each)."""
    return [bytes.fromhex(line) for line in logs(env, name, part).split()]


# ---- V6: guards and ambiguous JSON ----------------------------------------------------

GUARDS = """
name = "{name}"
[partitions.s]
program = "{tool}"
args = {schema_msgs}
[partitions.s.ports.out]
direction = "out"
max_size = 256
[partitions.r]
program = "{tool}"
args = ["recv", "in"]
[partitions.r.ports.in]
direction = "in"
max_size = 256
depth = 64
[partitions.t]
program = "{tool}"
args = {text_msgs}
[partitions.t.ports.out]
direction = "out"
max_size = 256
[partitions.u]
program = "{tool}"
args = ["recv", "in"]
[partitions.u.ports.in]
direction = "in"
max_size = 256
depth = 64
[[channels]]
from = "s.out"
to = "r.in"
guard = "json"
[[channels]]
from = "t.out"
to = "u.in"
guard = "text"
[guards.json]
max_size = 200
allow = '^\\{{.*\\}}$'
deny = ["drop table", "rm -rf"]
schema = {{ type = "object", required = ["id", "value"], properties = {{ id = {{ type = "integer" }}, value = {{ type = "number", minimum = 0, maximum = 100 }} }} }}
[guards.text]
deny = ["drop table", "rm -rf"]
"""  # noqa: E501

# Each is a message a receiver's JSON parser could read differently from the guard, or
# that hides a denied phrase from a check of the raw text; with the reason the guard logs.
AMBIGUOUS = {
    b'{"id":4,"value":NaN}': "NaN is not a JSON number",
    b'{"id":5,"value":Infinity}': "Infinity is not a JSON number",
    b'{"id":5,"value":-Infinity}': "-Infinity is not a JSON number",
    b'{"id":6,"value":1e400}': "out of range",
    b'{"id":7,"value":-1e400}': "out of range",
    b'{"id":8,"value":1000,"value":50}': "duplicate key 'value'",
    b'{"id":9,"value":50,"x":{"a":1,"a":2}}': "duplicate key 'a'",
    b'{"id":10,"value":50,"cmd":"drop t\\u0061ble users"}': "denied word 'drop table'",
    b'{"id":11,"value":50,"cmd":"rm \\u002drf /"}': "denied word 'rm -rf'",
    b'{"id":12,"value":50,"cmd":"drop\\ttable"}': "denied word 'drop table'",
    b'{"id":13,"value":50,"cmd":"drop\\u00a0table"}': "denied word 'drop table'",
    b'{"id":14,"value":50,"cmd":"dr\\u200bop table"}': "denied word 'drop table'",
    b'{"id":15,"value":50,"DROP\\u0020TABLE":1}': "denied word 'drop table'",
    b'{"id":16,"value":50,"cmd":"\\ud800"}': "lone surrogate U+D800",
    b'{"id":17,"value":50,"cmd":"\\udc00x"}': "lone surrogate U+DC00",
    b'{"id":18,"value":50,"cmd":"\\ud800\\u0041"}': "lone surrogate U+D800",
    b'{"id":19,"value":50,"cmd":"\xed\xa0\x80"}': "not UTF-8",
    b'{"id":20,"value":50}\xff': "not UTF-8",
    b'{"id":21,"value":50}\n{"id":22,"value":900}': "not JSON: Extra data",
    b'{"id":9007199254740993,"value":50}': "beyond",
    b'\xef\xbb\xbf{"id":23,"value":50}': "does not match the allow-list pattern",
}
# Well-formed controls: each must arrive, as its canonical form.
CONTROLS = [
    b'{"id":1,"value":50}',
    b'{ "id" : 2, "value": 1e1, "note": "caf\\u00e9 \\"ok\\"" }',
    b'{"id":3,"value":100.000000000000000001}',
    b'{"id":4,"value":0.5,"cmd":"select * from t"}',
]
# For the text guard: JSON to its receiver, hiding denied phrases from the raw text.
TEXT_HIDDEN = {
    b'{"cmd":"drop t\\u0061ble"}': "denied word 'drop table'",
    b'{"cmd":"ok","cmd":"rm -\\u0072f /"}': "denied word 'rm -rf'",
    b'["x",{"k":"DROP\\u00a0TABLE"}]': "denied word 'drop table'",
    b"plain DROP   Table text": "denied word 'drop table'",
}
TEXT_CONTROLS = [b"plain text", b'{"cmd":"drop","what":"table"}', b"caf\xc3\xa9 \\u0041"]


def interleave(bad: list[bytes], good: list[bytes]) -> list[bytes]:
    """bad messages with the controls spread among them, the last control last."""
    out, step = [], max(1, len(bad) // len(good))
    for i, control in enumerate(good):
        out += [*bad[i * step : (i + 1) * step], control]
    out[-1:-1] = bad[len(good) * step :]
    return out


def test_guard_rejects_ambiguous_json_and_forwards_canonical(
    tmp_path: Path, state_env: dict[str, str], tool: Path
) -> None:
    schema_msgs = interleave(list(AMBIGUOUS), CONTROLS)
    text_msgs = interleave(list(TEXT_HIDDEN), TEXT_CONTROLS)
    path = tmp_path / "guards.toml"
    path.write_text(
        GUARDS.format(
            name="guards",
            tool=tool,
            schema_msgs=json.dumps(["send", "out", *(m.hex() for m in schema_msgs)]),
            text_msgs=json.dumps(["send", "out", *(m.hex() for m in text_msgs)]),
        )
    )
    with SystemUp(state_env, path, "guards"):
        wait_for(
            lambda: len(received(state_env, "guards", "r")) >= len(CONTROLS),
            what="the schema guard's receiver",
        )
        wait_for(
            lambda: len(received(state_env, "guards", "u")) >= len(TEXT_CONTROLS),
            what="the text guard's receiver",
        )
        st = status(state_env, "guards")
        events = logs(state_env, "guards")
    # The receiver gets exactly the controls, each as the canonical JSON of what the guard
    # validated: compact, UTF-8, keys in order.
    got = received(state_env, "guards", "r")
    assert got == [
        json.dumps(json.loads(c), ensure_ascii=False, separators=(",", ":")).encode()
        for c in CONTROLS
    ]
    assert got[1] == '{"id":2,"value":10.0,"note":"café \\"ok\\""}'.encode()
    assert received(state_env, "guards", "u") == TEXT_CONTROLS  # text: the exact bytes
    for name, sent, bad in (
        ("s.out->r.in", schema_msgs, AMBIGUOUS),
        ("t.out->u.in", text_msgs, TEXT_HIDDEN),
    ):
        counters = channel(st, name)
        assert (counters["sent"], counters["rejected"]) == (len(sent), len(bad)), counters
        for number, message in enumerate(sent, start=1):
            if message in bad:
                line = f"channel {name}: rejected message {number} ({len(message)} bytes): "
                found = [e for e in events.splitlines() if line in e]
                assert found, f"no rejection logged for {message!r}"
                assert bad[message] in found[0], found[0]


# ---- R4: a partition cannot grow the event log or its own log without bound -------------

FLOOD = """
name = "flood"
[partitions.f]
program = "{tool}"
args = ["flood", "out", "{count}", "not json"]
[partitions.f.ports.out]
direction = "out"
max_size = 64
[partitions.g]
program = "{tool}"
args = ["spew", "{mib}"]
[partitions.g.ports.in]
direction = "in"
max_size = 64
[[channels]]
from = "f.out"
to = "g.in"
guard = "json"
[guards.json]
allow = '^\\{{.*\\}}$'
"""
EVENTS_MAX = 1 << 20  # docs/systems.md
PARTITION_LOG_MAX = 8 << 20


def rejections_logged(events: str) -> int:
    """Rejections the event log accounts for: one line each, plus the summed-up ones."""
    count = 0
    for line in events.splitlines():
        if "f.out->g.in: rejected message " in line:
            count += 1
        elif "more rejected messages in the last" in line:
            count += int(line.split("f.out->g.in: ")[1].split()[0])
    return count


@pytest.mark.slow
def test_rejection_flood_and_chatty_partition_keep_logs_bounded(
    tmp_path: Path, state_env: dict[str, str], tool: Path
) -> None:
    count, mib = 20000, 20
    path = tmp_path / "flood.toml"
    path.write_text(FLOOD.format(tool=tool, count=count, mib=mib))
    directory = Path(state_env["KARN_STATE_DIR"]) / "systems" / "flood"
    with SystemUp(state_env, path, "flood"):
        wait_for(
            lambda: f"flooded {count}" in logs(state_env, "flood", "f"),
            what="the flooding sender",
            timeout=180,
        )
        wait_for(
            lambda: f"spewed {mib}" in logs(state_env, "flood", "g"),
            what="the chatty partition",
            timeout=180,
        )
        # Every rejection is accounted for, most in summary lines once their second is over.
        logged: list[int] = []
        try:
            wait_for(
                lambda: logged.append(rejections_logged(logs(state_env, "flood")))
                or logged[-1] == count,
                what="the event log to account for every rejection",
                timeout=180,
            )
        except pytest.fail.Exception:
            pytest.fail(f"the event log accounts for {logged[-1]} of {count} rejections; "
                        f"status: {channel(status(state_env, 'flood'), 'f.out->g.in')}",
                        pytrace=False)
        counters = channel(status(state_env, "flood"), "f.out->g.in")
    assert (counters["sent"], counters["rejected"], counters["received"]) == (count, count, 0)
    events = (directory / "events.log").read_bytes()
    assert len(events) < EVENTS_MAX
    assert events.count(b"rejected message ") < count // 10  # not one line each
    assert b"does not match the allow-list pattern" in events
    # The partition's own log rotated: one old part, at most twice the limit on disk, and
    # `logs` still shows the end of what it wrote.
    part = directory / "logs" / "g.log"
    old = directory / "logs" / "g.log.1"
    assert part.stat().st_size <= PARTITION_LOG_MAX
    assert old.stat().st_size <= PARTITION_LOG_MAX
    assert sorted(p.name for p in part.parent.iterdir()) == ["f.log", "g.log", "g.log.1"]
    tail = logs(state_env, "flood", "g")
    assert tail.endswith(f"spewed {mib}\n")
    assert len(tail) > PARTITION_LOG_MAX  # both parts


# ---- R10: idle clients cannot take the --metrics endpoint down ------------------------


def _connect(port: int) -> socket.socket | None:
    """A connection to the endpoint, or None when it turned this one away (a loaded host's
    full backlog can reset a connect)."""
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=60)
    except OSError:
        return None


def scrape(port: int, timeout: float = 10.0) -> str | None:
    """GET /metrics; None if the endpoint does not answer (closed, reset, timed out)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    text = data.decode(errors="replace")
    return text if text.startswith("HTTP/1.0 200") else None


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("Threads:")[1].split()[0])


@pytest.mark.slow
def test_metrics_endpoint_survives_idle_and_slow_clients(tool: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "karn", "run", "--metrics", f"127.0.0.1:{port}", str(tool), "idle"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    idle: list[socket.socket] = []
    try:
        wait_for(lambda: scrape(port) is not None, what="the metrics endpoint")
        # A client that trickles its request a byte at a time is cut off.
        with wait_for(lambda: _connect(port), what="a connection") as trickler:
            started, closed = time.monotonic(), False
            request = iter(b"GET /metrics HTTP/1.0\r\nX-Slow: " + b"y" * 1000)
            while not closed and time.monotonic() - started < 45:
                try:
                    trickler.sendall(bytes([next(request)]))
                except OSError:
                    closed = True
                time.sleep(0.5)
        assert closed, "a client trickling its request kept its connection for 45 s"
        # Idle clients: with all of them still connected, scrapes are answered again (the
        # endpoint drops idle clients after a few seconds and turns away the ones over its
        # limit), and the monitor did not start a thread per client.
        before = threads(proc.pid)
        for _ in range(300):
            try:
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=60))
            except OSError:  # turned away (a full backlog can reset a connect): fine too
                pass
        deadline = time.monotonic() + 60
        while (body := scrape(port)) is None and time.monotonic() < deadline:
            assert proc.poll() is None, "karn ended"
            time.sleep(0.2)
        assert body is not None, "the metrics endpoint stopped answering"
        assert "karn_guest_threads 1" in body
        assert threads(proc.pid) < before + 50
        assert proc.poll() is None
    finally:
        for s in idle:
            s.close()
        proc.kill()
        _, err = proc.communicate(timeout=30)
    assert b"Traceback" not in err, err.decode(errors="replace")


# ---- configurations refused: ReDoS-prone patterns, remote $ref, an unsandboxed partition --

PAIR = """
name = "{name}"
{top}
[partitions.s]
program = "{tool}"
args = {sender}
{options}
[partitions.s.ports.out]
direction = "out"
max_size = 256
[partitions.r]
program = "{tool}"
args = ["recv", "in"]
[partitions.r.ports.in]
direction = "in"
max_size = 256
[[channels]]
from = "s.out"
to = "r.in"
guard = "g"
[guards.g]
{guard}
"""


def pair(
    tmp_path: Path,
    tool: Path,
    name: str,
    guard: str,
    messages: list[bytes] = (),
    options: str = "",
    top: str = "",
) -> Path:
    path = tmp_path / f"{name}.toml"
    sender = ["send", "out", *(m.hex() for m in messages)] if messages else ["idle"]
    path.write_text(
        PAIR.format(
            name=name, tool=tool, sender=json.dumps(sender), guard=guard, options=options, top=top
        )
    )
    return path


def refused(env: dict[str, str], path: Path, error: str) -> None:
    """`check` and `up` both refuse the file with one `karn:` line, and nothing starts."""
    for command in (["check"], ["up", "-d"]):
        proc = karn_system(env, *command, str(path))
        assert proc.returncode == 125, (command, proc.stdout, proc.stderr)
        assert proc.stderr == f"karn: {path}: {error}\n"
    assert not (Path(env["KARN_STATE_DIR"]) / "systems" / path.stem / "meta.json").exists()


def supervisor_pid(env: dict[str, str], name: str) -> int | None:
    meta = Path(env["KARN_STATE_DIR"]) / "systems" / name / "meta.json"
    return json.loads(meta.read_text())["pid"] if meta.exists() else None


@pytest.mark.parametrize(
    "pattern, error",
    [
        (r"^(a)\1$", "invalid escape sequence: \\1"),
        (r"^(?=a).*$", "invalid perl operator: (?="),
        (r"^(?<!a)b$", "invalid perl operator: (?<!"),
    ],
)
def test_check_refuses_patterns_without_a_linear_time_match(
    tmp_path: Path, state_env: dict[str, str], tool: Path, pattern: str, error: str
) -> None:
    path = pair(tmp_path, tool, "backref", f"allow = '{pattern}'")
    refused(state_env, path, f"guard g: allow: not a pattern RE2 accepts: {error}")


def test_catastrophic_pattern_does_not_stall_the_supervisor(
    tmp_path: Path, state_env: dict[str, str], tool: Path
) -> None:
    """'^(a+)+$' against 'aaa...ab' backtracks 2^40 times in a backtracking engine."""
    evil = b"a" * 40 + b"b"
    path = pair(tmp_path, tool, "redos", "allow = '^(a+)+$'", [evil, b"aaaa"])
    try:
        with SystemUp(state_env, path, "redos"):
            wait_for(
                lambda: received(state_env, "redos", "r") == [b"aaaa"],
                what="the message after the evil one",
            )
            counters = channel(status(state_env, "redos"), "s.out->r.in")
        assert (counters["sent"], counters["rejected"]) == (2, 1)
    finally:
        pid = supervisor_pid(state_env, "redos")  # a stalled supervisor ignores `down`
        if pid is not None and os.path.exists(f"/proc/{pid}"):
            cmdline = Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
            if "karn\0system\0up" in cmdline:
                os.kill(pid, 9)


class SchemaServer:
    """A local HTTP server that counts requests: a guard must never make one."""

    def __init__(self) -> None:
        outer = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                outer.requests += 1
                body = b'{"type": "object"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/schema+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def schema_server() -> Iterator[SchemaServer]:
    server = SchemaServer()
    yield server
    server.close()


@pytest.mark.slow
def test_guard_schema_never_refers_outside_itself(
    tmp_path: Path, state_env: dict[str, str], tool: Path, schema_server: SchemaServer
) -> None:
    url = f"{schema_server.url}/s.json"
    base = schema_server.url
    cases = [  # (guard, the reference check names)
        (f'schema = {{ "$ref" = "{url}" }}', f"$ref '{url}'"),
        (
            f'schema = {{ type = "object", properties = {{ a = {{ "$ref" = "{url}#/x" }} }} }}',
            f"$ref '{url}#/x'",
        ),
        (f'schema = {{ "$id" = "{base}/", items = {{ "$ref" = "b.json" }} }}', "$ref 'b.json'"),
        ('schema = { "$dynamicRef" = "file:///etc/passwd" }', "$dynamicRef 'file:///etc/passwd'"),
    ]
    for guard, ref in cases:
        path = pair(tmp_path, tool, "remoteref", guard)
        refused(
            state_env,
            path,
            f"guard g: invalid JSON schema: {ref} is not local ('#/...'): "
            "a guard never fetches or reads schemas",
        )
    # Local references still work, and a remote $schema or $id is never fetched.
    guard = (
        f'schema = {{ "$schema" = "{url}", "$id" = "{schema_server.url}/root", '
        'type = "object", properties = { v = { "$ref" = "#/$defs/n" } }, '
        '"$defs" = { n = { type = "integer" } } }'
    )
    path = pair(tmp_path, tool, "localref", guard, [b'{"v":"x"}', b'{"v":1}'])
    with SystemUp(state_env, path, "localref"):
        wait_for(
            lambda: received(state_env, "localref", "r") == [b'{"v":1}'], what="the valid message"
        )
        counters = channel(status(state_env, "localref"), "s.out->r.in")
    assert (counters["sent"], counters["rejected"]) == (2, 1)
    assert schema_server.requests == 0


@pytest.mark.parametrize("option", ["--no-sandbox", "--no-s", "--no-sandbox=1"])
def test_unsandboxed_partition_needs_the_top_level_opt_in(
    tmp_path: Path, state_env: dict[str, str], tool: Path, option: str
) -> None:
    path = pair(tmp_path, tool, "nosandbox", "max_size = 64", options=f'options = ["{option}"]')
    refused(
        state_env,
        path,
        f"partition s: options: {option!r} runs the partition's monitor "
        "unconfined; allow it with allow_unsandboxed = true at the top "
        "of the system file",
    )
    path = pair(
        tmp_path,
        tool,
        "nosandbox",
        "max_size = 64",
        options='options = ["--no-sandbox"]',
        top="allow_unsandboxed = true",
    )
    proc = karn_system(state_env, "check", str(path))
    assert proc.returncode == 0, proc.stderr


def test_rejection_reason_quoting_the_message_is_cut(
    tmp_path: Path, state_env: dict[str, str], tool: Path
) -> None:
    """A schema error quotes the message: the log keeps only the start of it."""
    long = json.dumps("x" * 240).encode()
    path = pair(tmp_path, tool, "longreason", 'schema = { type = "integer" }', [long, b"7"])
    with SystemUp(state_env, path, "longreason"):
        wait_for(lambda: received(state_env, "longreason", "r") == [b"7"], what="the control")
        events = logs(state_env, "longreason")
        last = channel(status(state_env, "longreason"), "s.out->r.in")["last_rejection"]
    line = next(e for e in events.splitlines() if "rejected message 1 " in e)
    assert "schema: (root): 'xxxxxxxx" in line
    assert line.endswith("...") and len(line) < 400, line
    assert last.endswith("...") and len(last) < 210
