"""A new user's first hour (issue 16): things that should just work, or fail in one line.

Each test runs karn as a user would (`python -m karn ...`) and checks what they see: the
output, the exit status, and no Python traceback.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import karn_run, native_run
from helpers import REPO, karn_in
from test_errors import assert_one_error_line

PYTHON = "/usr/bin/python3"


def _no_traceback(stderr: bytes) -> None:
    assert b"Traceback" not in stderr, stderr.decode(errors="replace")


# ---- runtimes that just run -------------------------------------------------------------

PYTHON_SCRIPT = textwrap.dedent("""
    import json, sqlite3, ssl, hashlib
    db = sqlite3.connect(":memory:")
    db.execute("create table t (k text)")
    db.execute("insert into t values ('karn')")
    print(json.dumps(db.execute("select k from t").fetchall()), sqlite3.sqlite_version)
    print(ssl.OPENSSL_VERSION, ssl.create_default_context().protocol)
    print(hashlib.sha256(b"karn").hexdigest())
""")


def test_python_runs_with_no_volumes() -> None:
    """The interpreter's standard library and its extension modules' libraries (libsqlite3,
    libssl) come with it: the same output as the host's own run."""
    native = native_run(PYTHON, "-c", PYTHON_SCRIPT)
    assert native.returncode == 0, native.stderr
    guest = karn_run(PYTHON, "-c", PYTHON_SCRIPT)
    assert guest.returncode == 0, guest.stderr.decode(errors="replace")
    assert guest.stdout == native.stdout


def test_python_found_in_path_by_bare_name() -> None:
    path = {"PATH": "/usr/bin:/bin"}
    guest = karn_run("python3", "-c", "import sys; print(sys.prefix)", extra_env=path)
    assert guest.returncode == 0, guest.stderr.decode(errors="replace")
    native = native_run("python3", "-c", "import sys; print(sys.prefix)", extra_env=path)
    assert guest.stdout == native.stdout


@pytest.fixture
def var_tmp() -> Iterator[Path]:
    """A directory outside /tmp (the guest's /tmp is its own tmpfs)."""
    path = Path(tempfile.mkdtemp(prefix="karn-ux-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_runtime_tree_outside_the_standard_places_needs_collect(var_tmp: Path) -> None:
    """An interpreter installed under a home directory: its library tree is not taken
    unless the user shares it (--collect TREE), and the warning says so."""
    version = os.path.basename(os.path.realpath(PYTHON))  # python3.X
    stdlib = native_run(PYTHON, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))")
    prefix = var_tmp / "opt"
    (prefix / "bin").mkdir(parents=True)
    shutil.copy2(os.path.realpath(PYTHON), prefix / "bin" / version)
    tree = prefix / "lib" / version
    shutil.copytree(stdlib.stdout.decode().strip(), tree, symlinks=True,
                    ignore=shutil.ignore_patterns("test", "idlelib", "tkinter", "ensurepip"))
    script = "import json, sqlite3; print(json.dumps([sqlite3.sqlite_version]))"
    refused = karn_run(prefix / "bin" / version, "-c", script)
    assert refused.returncode != 0
    assert f"--collect {tree}".encode() in refused.stderr
    shared = karn_run("--collect", tree, prefix / "bin" / version, "-c", script)
    assert shared.returncode == 0, shared.stderr.decode(errors="replace")
    assert shared.stdout == native_run(PYTHON, "-c", script).stdout


def test_perl_runs_with_its_modules() -> None:
    perl = shutil.which("perl")
    if perl is None:
        pytest.skip("perl is not installed")
    script = 'use POSIX qw(floor); use List::Util qw(sum); print floor(7/2), " ", sum(1..10), "\\n"'
    native = native_run(perl, "-e", script)
    guest = karn_run(perl, "-e", script)
    assert guest.returncode == 0, guest.stderr.decode(errors="replace")
    assert guest.stdout == native.stdout


@pytest.fixture(scope="module")
def python_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A KARN_HOME holding `py:bare`, built from the interpreter alone (no --add)."""
    home = tmp_path_factory.mktemp("karn-home")
    built = karn_in(home, "build", "-t", "py:bare", PYTHON, timeout=300)
    assert built.returncode == 0, built.stderr.decode(errors="replace")
    return home


def test_python_image_built_from_the_interpreter_alone(python_image: Path) -> None:
    """`karn build python3` makes an image that imports sqlite3 with no --add."""
    script = "import sqlite3; print(sqlite3.sqlite_version)"
    ran = karn_in(python_image, "run", "py:bare", "-c", script)
    assert ran.returncode == 0, ran.stderr.decode(errors="replace")
    assert ran.stdout == native_run(PYTHON, "-c", script).stdout


# ---- one root filesystem model ----------------------------------------------------------

ETC_SCRIPT = """
import pwd, grp, socket
print(pwd.getpwnam("nobody").pw_uid, grp.getgrgid(0).gr_name, socket.gethostbyname("localhost"))
print(open("/etc/nsswitch.conf").read().split()[:2], open("/etc/hosts").read().count("localhost"))
print(socket.getservbyname("http", "tcp"), socket.getprotobyname("udp"))
"""


def test_image_gets_the_generated_etc_files(python_image: Path) -> None:
    """An image with no /etc gets what `karn run PROGRAM` generates: getpwnam("nobody")
    (nginx's user), the group file, /etc/hosts, nsswitch.conf, and the host's service
    and protocol tables (getservbyname, getaddrinfo with a service name)."""
    from_image = karn_in(python_image, "run", "py:bare", "-c", ETC_SCRIPT)
    assert from_image.returncode == 0, from_image.stderr.decode(errors="replace")
    collected = karn_run(PYTHON, "-c", ETC_SCRIPT)
    assert collected.returncode == 0, collected.stderr.decode(errors="replace")
    assert from_image.stdout == collected.stdout
    assert from_image.stdout.startswith(b"65534 root 127.0.0.1\n")
    names = native_run(PYTHON, "-c", "import socket; print(socket.getservbyname('http', "
                       "'tcp'), socket.getprotobyname('udp'))")
    assert from_image.stdout.splitlines()[2] == names.stdout.strip()  # the host's tables


def test_root_keeps_its_own_etc_files(var_tmp: Path) -> None:
    """--root DIR with its own /etc/passwd: that one is used, the missing ones generated."""
    root = var_tmp / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "nobody:x:4242:4242:nobody:/:/bin/false\n")
    script = ("import pwd, os; print(pwd.getpwnam('nobody').pw_uid, "
              "os.path.exists('/etc/group'), os.path.exists('/etc/hosts'))")
    ran = karn_run("--root", root, "-v", "/usr:/usr:ro", "-v", "/lib:/lib:ro",
                   "-v", "/lib64:/lib64:ro", "/usr/bin/python3", "-c", script)
    assert ran.returncode == 0, ran.stderr.decode(errors="replace")
    assert ran.stdout == b"4242 True True\n"


def test_etc_hostname_names_the_guest() -> None:
    """/etc/hostname says what `hostname` says, --hostname or the default, as in a
    container."""
    for args in ([], ["--hostname", "box-7"]):
        ran = karn_run(*args, BUSYBOX, "sh", "-c", "cat /etc/hostname; hostname")
        assert ran.returncode == 0, ran.stderr.decode(errors="replace")
        file_name, told = ran.stdout.decode().splitlines()
        assert file_name == told == (args[1] if args else "karn")


# ---- volumes ----------------------------------------------------------------------------


def test_single_file_volume(var_tmp: Path) -> None:
    """`-v ./app.conf:/etc/app.conf:ro` mounts one file: readable, not writable; a rw one
    is written through to the host file."""
    conf = var_tmp / "app.conf"
    conf.write_text("worker_processes 1;\n")
    log = var_tmp / "app.log"
    log.write_text("")
    script = ("read line < /etc/app/app.conf; echo \"$line\"; "
              "echo changed > /etc/app/app.conf || echo refused; echo logged >> /var/log/app.log")
    ran = karn_run("-v", f"{conf}:/etc/app/app.conf:ro", "-v", f"{log}:/var/log/app.log",
                   "/bin/sh", "-c", script)
    assert ran.returncode == 0, ran.stderr.decode(errors="replace")
    assert ran.stdout == b"worker_processes 1;\nrefused\n"
    assert b"Read-only file system" in ran.stderr
    assert conf.read_text() == "worker_processes 1;\n"
    assert log.read_text() == "logged\n"


def test_volume_over_tmp_replaces_the_tmpfs(var_tmp: Path) -> None:
    (var_tmp / "seen").write_text("from the host\n")
    ran = karn_run("-v", f"{var_tmp}:/tmp", "/bin/sh", "-c",
                   "read x < /tmp/seen; echo \"$x\"; echo guest > /tmp/made")
    assert ran.returncode == 0, ran.stderr.decode(errors="replace")
    _no_traceback(ran.stderr)
    assert ran.stdout == b"from the host\n"
    assert (var_tmp / "made").read_text() == "guest\n"


@pytest.mark.parametrize("target", ["/proc", "/dev"])
def test_volume_over_karn_own_mount_is_one_line(var_tmp: Path, target: str) -> None:
    ran = karn_run("-v", f"{var_tmp}:{target}", "/bin/true")
    assert ran.returncode == 125
    _no_traceback(ran.stderr)
    assert ran.stderr.decode().count("\n") == 1 and target in ran.stderr.decode()


# ---- datagrams to a closed guest port ---------------------------------------------------

UDP_REFUSED = """
import errno, select, socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", 9))
s.send(b"query")
start = time.monotonic()
readable = select.select([s], [], [], 20)[0]
try:
    s.recv(100)
    print("received")
except OSError as e:
    print(errno.errorcode[e.errno])
print("woke", bool(readable), time.monotonic() - start < 10)
s.send(b"again")
time.sleep(0.2)
print("so_error", errno.errorcode.get(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), 0))
s.send(b"third")
time.sleep(0.2)
try:
    s.send(b"fourth")
    print("sent")
except OSError as e:
    print("send", errno.errorcode[e.errno])
"""


def test_datagram_to_closed_guest_port_is_refused_at_once() -> None:
    """A connected UDP socket whose datagram finds no guest listener: poll wakes and the
    next call fails with ECONNREFUSED, as Linux's ICMP port unreachable makes it."""
    native = native_run(PYTHON, "-c", UDP_REFUSED)  # nothing listens on the host's port 9
    assert native.returncode == 0, native.stderr
    guest = karn_run(PYTHON, "-c", UDP_REFUSED)
    assert guest.returncode == 0, guest.stderr.decode(errors="replace")
    assert guest.stdout == native.stdout


def test_name_lookup_without_name_server_fails_fast() -> None:
    """--network none lists no name server, so glibc asks 127.0.0.1:53, a closed guest
    port: the lookup fails at once, not after the resolver's 5 s timeouts."""
    script = ("import socket, time\nstart = time.monotonic()\n"
              "try:\n    socket.getaddrinfo('karn-test.invalid', 80)\nexcept OSError as e:\n"
              "    print(type(e).__name__)\nprint(time.monotonic() - start < 4)\n")
    guest = karn_run(PYTHON, "-c", script)
    assert guest.returncode == 0, guest.stderr.decode(errors="replace")
    assert guest.stdout == b"gaierror\nTrue\n"


# ---- karn's output in files ---------------------------------------------------------------


def _run_to_files(argv: list[str], out: Path, err: Path) -> int:
    with open(out, "ab") as stdout, open(err, "ab") as stderr:  # (shared offsets aside)
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, cwd="/",
                              timeout=120).returncode


def test_dev_stdout_and_stderr_open_when_output_is_a_file(var_tmp: Path) -> None:
    """`karn run ... >out.log 2>err.log`: the guest's /dev/stdout and /dev/stderr are those
    files (nginx's `error_log /dev/stderr`), as they would be natively."""
    script = "echo one >> /dev/stdout; echo two >> /dev/stderr; echo three; echo four >&2"
    results = []
    for name, argv in (("native", ["/bin/sh", "-c", script]),
                       ("karn", [sys.executable, "-m", "karn", "run", "/bin/sh", "-c", script])):
        out, err = var_tmp / f"{name}.out", var_tmp / f"{name}.err"
        status = _run_to_files(argv, out, err)
        results.append((status, out.read_bytes(), err.read_bytes()))
    assert results[1] == results[0] == (0, b"one\nthree\n", b"two\nfour\n")


def test_policy_suggest_to_stderr() -> None:
    """Without -o the suggestion goes to stderr and karn exits with the program's status
    (it used to close its own stderr and abort)."""
    for program, status in (("/bin/true", 0), ("/bin/false", 1)):
        proc = subprocess.run([sys.executable, "-m", "karn", "policy", "suggest", program],
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
        assert proc.returncode == status, proc.stderr.decode(errors="replace")
        assert b"[policy]\nsyscalls = [" in proc.stderr
        assert b"exit_group" in proc.stderr
        assert b"lost sys.stderr" not in proc.stderr


def test_ctrl_c_while_karn_starts_exits_130_quietly() -> None:
    """SIGINT at any moment of karn's start (imports, parsing, set-up): status 130 (or
    killed by SIGINT, before Python's handler exists: 130 to a shell), and no traceback
    through karn's code. (python -S: the host's .pth files are not karn's start-up; what
    runpy imports before karn's first line is Python's.)"""
    import signal
    import site
    import time

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *site.getsitepackages()])}
    for step in range(12):
        proc = subprocess.Popen([sys.executable, "-S", "-m", "karn", "run", "/bin/sleep", "30"],
                                stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        time.sleep(step * 0.02)
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"karn did not end after SIGINT at {step * 0.02:.2f} s", pytrace=False)
        text = err.decode(errors="replace")
        if "Traceback" in text:  # Python's own start (runpy's imports), before karn's code
            assert f"{os.sep}karn{os.sep}" not in text, text
        else:
            assert proc.returncode in (130, -signal.SIGINT), text


def test_ctrl_c_landing_in_a_finaliser_still_ends_karn_130() -> None:
    """A Ctrl-C that lands while Python runs a __del__ (or a gc/weakref callback) cannot
    propagate: Python would print "Exception ignored" with a traceback and go on, the
    Ctrl-C lost. karn's hook ends with 130 and one line instead."""
    code = ("from karn.cli.interrupt import quiet_interrupts\n"
            "quiet_interrupts()\n"
            "class Finalised:\n"
            "    def __del__(self):\n"
            "        raise KeyboardInterrupt\n"
            "Finalised()\n"
            "print('went on')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (130, "", "karn: interrupted\n")


# ---- a consistent command line (docs/cli.md) ----------------------------------------------


@pytest.mark.parametrize("args", [
    ["rm", "nosuch"], ["inspect", "nosuch"], ["push", "nosuch:1"], ["tag", "nosuch", "x"],
    ["build", "-t", "x", "--from", "nosuch:1"], ["logs", "nosuch"], ["stop", "nosuch"],
    ["kill", "nosuch"], ["system", "status", "nosuch"], ["system", "logs", "nosuch"],
])
def test_not_found_exits_1(home: Path, state_env: dict[str, str], args: list[str]) -> None:
    """docs/cli.md: every command says "not found" with status 1, as docker does."""
    proc = karn_in(home, *args, env={"KARN_STATE_DIR": state_env["KARN_STATE_DIR"]})
    assert_one_error_line(proc, 1)
    said = (b"not found", b"no such", b"no system", b"unknown system")
    assert any(word in proc.stderr for word in said), proc.stderr


def test_system_down_of_a_stopped_system_succeeds(tmp_path: Path,
                                                  state_env: dict[str, str]) -> None:
    system = tmp_path / "idle.toml"
    system.write_text('name = "ux-idle"\n[partitions.a]\nprogram = "/bin/sleep"\n'
                      'args = ["60"]\n')
    up = subprocess.run([sys.executable, "-m", "karn", "system", "up", "-d", str(system)],
                        env=state_env, capture_output=True, timeout=120)
    assert up.returncode == 0, up.stderr.decode(errors="replace")
    for _ in range(2):
        down = subprocess.run([sys.executable, "-m", "karn", "system", "down", "ux-idle"],
                              env=state_env, capture_output=True, timeout=60)
        assert (down.returncode, down.stdout, down.stderr) == (0, b"ux-idle\n", b"")


def test_images_created_id_and_json(home: Path) -> None:
    """CREATED is the config's `created` (the build time), IMAGE ID the config's digest
    (as podman), and --format json gives the same facts unabbreviated."""
    import json
    import time

    before = time.time()
    digest = karn_in(home, "build", "-t", "when:1", "/bin/true").stdout.decode().strip()
    listed = json.loads(karn_in(home, "images", "--format", "json").stdout)
    assert [i["RepoTags"] for i in listed] == [["when:1"]]
    image = listed[0]
    assert image["Digest"] == digest
    manifest = json.loads((home / "oci" / "blobs" / "sha256" / digest[7:]).read_bytes())
    assert image["ConfigDigest"] == manifest["config"]["digest"]
    assert image["Id"] == image["ConfigDigest"][7:19]
    created = time.mktime(time.strptime(image["Created"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before - 2 <= created <= time.time() + 2
    table = karn_in(home, "images").stdout.decode().splitlines()
    assert table[1].split()[:3] == ["when", "1", image["Id"]]
    assert image["Created"][:10] in table[1]


def test_ps_json_and_inspect_of_an_instance(state_env: dict[str, str]) -> None:
    """`ps --format json`; inspect: each fact once, RFC 3339 times, rounded CPU seconds."""
    import json
    import re

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([sys.executable, "-m", "karn", *args], env=state_env,
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=120)

    started = cli("run", "-d", "/bin/sleep", "60")
    assert started.returncode == 0, started.stderr.decode(errors="replace")
    ident = started.stdout.decode().strip()
    try:
        rows = json.loads(cli("ps", "--format", "json").stdout)
        assert [r["Id"] for r in rows] == [ident]
        assert rows[0]["Command"] == ["/bin/sleep", "60"] and rows[0]["State"] == "running"
        info = json.loads(cli("inspect", ident).stdout)[0]
        rfc3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
        assert re.fullmatch(rfc3339, info["Created"])
        lowered = [k.lower() for k in info]
        assert len(lowered) == len(set(lowered)), sorted(info)
        cpu = info["stats"]["cpu_seconds"]
        assert cpu == round(cpu, 3)
    finally:
        cli("kill", ident)


# ---- the install step -----------------------------------------------------------------------


@pytest.mark.slow
def test_make_example_installs_a_karn_command(tmp_path: Path) -> None:
    """`make example` on Debian's own python3 (PEP 668: no system-wide pip) makes a venv in
    the checkout, installs a `karn` command there and runs the example with it; a second
    run reuses them."""
    python = "/usr/bin/python3"
    if not os.path.exists(python):
        pytest.fail(f"{python} missing (apt-get install python3)", pytrace=False)
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    checkout = tmp_path / "karn"
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, checkout / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for attempt in range(2):
        made = subprocess.run(["make", "example", f"PYTHON={python}"], cwd=checkout, env=env,
                              capture_output=True, timeout=600, stdin=subprocess.DEVNULL)
        out = made.stdout.decode(errors="replace")
        assert made.returncode == 0, out + made.stderr.decode(errors="replace")
        karn = checkout / ".venv" / "bin" / "karn"
        assert f"{karn} run examples/hello" in out
        assert "Hello from hello" in out
        assert ("-m venv" in out) == (attempt == 0)  # made once, then reused


# ---- docker's common run flags ----------------------------------------------------------

BUSYBOX = "/bin/busybox"


def numeric_ids(id_output: bytes) -> list[bytes]:
    """uid=N and gid=N of `id`'s output, without the names in brackets."""
    return [re.sub(rb"\(.*\)", b"", field) for field in id_output.split()[:2]]


def test_user_flag_sets_the_guest_credentials() -> None:
    """-u UID[:GID]: what `id` says is what it says natively under those credentials."""
    for user, native_ids in (("1000:1001", ["--reuid=1000", "--regid=1001"]),
                             ("1234", ["--reuid=1234", "--regid=1234"])):
        guest = karn_run("-u", user, BUSYBOX, "id")
        native = native_run("setpriv", *native_ids, "--clear-groups", BUSYBOX, "id")
        assert guest.returncode == native.returncode == 0, guest.stderr
        # Numbers only: the host may name the uid (its /etc/passwd), the guest's does not.
        assert numeric_ids(guest.stdout) == numeric_ids(native.stdout)
    bad = karn_run("-u", "nobody", BUSYBOX, "id")
    assert_one_error_line(bad, 125)
    assert b"numeric UID[:GID]" in bad.stderr


def test_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("# settings\nGREETING=hello world\n\nQUOTED=\"kept as is\"\n"
                        "FROM_HOST\nOVERRIDDEN=file\n")
    ran = karn_run("--env-file", env_file, "-e", "OVERRIDDEN=option", BUSYBOX, "env",
                   extra_env={"FROM_HOST": "host value"})
    assert ran.returncode == 0, ran.stderr
    lines = ran.stdout.decode().splitlines()
    for want in ("GREETING=hello world", 'QUOTED="kept as is"', "FROM_HOST=host value",
                 "OVERRIDDEN=option"):
        assert want in lines, lines
    assert "OVERRIDDEN=file" not in lines
    env_file.write_text("=no key\n")
    assert_one_error_line(karn_run("--env-file", env_file, BUSYBOX, "env"), 125)
    assert_one_error_line(karn_run("--env-file", tmp_path / "none", BUSYBOX, "env"), 125)


def test_publish_all_ports_the_image_declares(home: Path, tmp_path: Path,
                                              state_env: dict[str, str]) -> None:
    """-P publishes each Karnfile port to a free host port, shown by inspect."""
    import json
    import socket

    from helpers import wait_for

    (tmp_path / "Karnfile").write_text(
        f'name = "listener:1"\nprogram = "{BUSYBOX}"\n'
        f'entrypoint = ["{BUSYBOX}", "nc", "-l", "-p", "7001"]\nports = ["7001"]\n')
    env = {"KARN_STATE_DIR": state_env["KARN_STATE_DIR"]}
    assert karn_in(home, "build", tmp_path, env=env).returncode == 0
    started = karn_in(home, "run", "-d", "-P", "listener:1", env=env)
    assert started.returncode == 0, started.stderr
    ident = started.stdout.decode().strip()
    try:
        (ports,) = (json.loads(karn_in(home, "inspect", ident, env=env).stdout)[0]["Ports"],)
        assert len(ports) == 1 and ports[0].endswith("->7001/tcp"), ports
        assert started.stderr.decode() == f"karn: published {ports[0]}\n"
        port = int(ports[0].split("->")[0].rsplit(":", 1)[1])

        def send() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                    conn.sendall(b"via -P\n")
                return True
            except OSError:
                return False

        wait_for(send, "the image's port to be published")
        assert karn_in(home, "wait", ident, env=env).stdout == b"0\n"
        assert karn_in(home, "logs", ident, env=env).stdout == b"via -P\n"
    finally:
        karn_in(home, "kill", ident, env=env)
    refused = karn_in(home, "run", "-P", BUSYBOX, "true", env=env)
    assert_one_error_line(refused, 125)


@pytest.mark.parametrize("words", [["ps", "--bogus"], ["run", "--bogus", "/bin/true"],
                                   ["system", "status", "--bogus"], ["images", "-z"]])
def test_unknown_option_points_at_the_subcommand_help(words: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "karn", *words], capture_output=True,
                          timeout=60)
    assert_one_error_line(proc, 125)
    command = " ".join(w for w in words if not w.startswith("-"))
    if words[0] == "run":
        command = "run"
    assert proc.stderr.decode().rstrip().endswith(f"(see 'karn {command} --help')")


def test_inspect_and_system_status_formats(home: Path, tmp_path: Path,
                                           state_env: dict[str, str]) -> None:
    """--format json|table on inspect (image and instance) and system status; RFC 3339."""
    import json
    import re

    rfc3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"
    env = {"KARN_STATE_DIR": state_env["KARN_STATE_DIR"]}
    assert karn_in(home, "build", "-t", "fmt:1", BUSYBOX).returncode == 0
    as_json = json.loads(karn_in(home, "inspect", "fmt:1", "--format", "json").stdout)
    assert as_json == json.loads(karn_in(home, "inspect", "fmt:1").stdout)
    assert re.fullmatch(rfc3339, as_json[0]["Created"])
    table = karn_in(home, "inspect", "--format", "table", "fmt:1").stdout.decode()
    fields = dict(line.split(None, 1) for line in table.splitlines())
    assert fields["Id"] == as_json[0]["Id"] and fields["RepoTags"] == '["fmt:1"]'
    assert json.loads(fields["Config"]) == as_json[0]["Config"]

    ident = karn_in(home, "run", "-d", BUSYBOX, "sh", "-c", "exit 5", env=env)
    ident = ident.stdout.decode().strip()
    assert karn_in(home, "wait", ident, env=env).stdout == b"5\n"
    table = karn_in(home, "inspect", "--format", "table", ident, env=env).stdout.decode()
    fields = dict(line.split(None, 1) for line in table.splitlines())
    assert (fields["ExitCode"], fields["State"]) == ("5", "exited")
    assert re.fullmatch(rfc3339, fields["Finished"])

    system = tmp_path / "fmt.toml"
    system.write_text('name = "ux-fmt"\n[partitions.a]\nprogram = "/bin/busybox"\n'
                      'args = ["sleep", "60"]\n')
    full_env = {**state_env}
    up = subprocess.run([sys.executable, "-m", "karn", "system", "up", "-d", str(system)],
                        env=full_env, capture_output=True, timeout=120)
    assert up.returncode == 0, up.stderr.decode(errors="replace")
    try:
        def status(*flags: str) -> str:
            got = subprocess.run([sys.executable, "-m", "karn", "system", "status", *flags,
                                  "ux-fmt"], env=full_env, capture_output=True, timeout=60)
            assert got.returncode == 0, got.stderr.decode(errors="replace")
            return got.stdout.decode()

        from helpers import wait_for

        st = wait_for(lambda: (s := json.loads(status("--format", "json")))["partitions"][0]
                      ["state"] == "running" and s, "the partition to run")
        assert re.fullmatch(rfc3339, st["partitions"][0]["started"])
        assert st["uptime"] == round(st["uptime"], 3)
        assert json.loads(status("--json"))["name"] == "ux-fmt"
        assert status("--format", "table").startswith("system ux-fmt: running")
    finally:
        subprocess.run([sys.executable, "-m", "karn", "system", "down", "ux-fmt"],
                       env=full_env, capture_output=True, timeout=60)


# ---- progress of long operations ----------------------------------------------------------


@pytest.mark.slow
def test_build_progress_in_plain_lines_when_not_a_terminal(home: Path) -> None:
    """A build that takes seconds says so as it goes: lines, no terminal escapes."""
    built = karn_in(home, "build", "-t", "slowpy:1", PYTHON, timeout=300)
    assert built.returncode == 0, built.stderr
    said = built.stderr.decode()
    assert "\x1b" not in said and "\r" not in said
    lines = said.splitlines()
    assert lines[0].startswith(f"collected {PYTHON}: ") and lines[0].endswith(
        " files with its interpreter and libraries")
    assert lines[1].startswith("layer  writing ") and lines[1].endswith(" MiB")
    assert any(line.startswith("layer  ") and "% " in line for line in lines[2:]), lines
    assert lines[-2].startswith("layer  done: ") and lines[-1].startswith("built slowpy:1: ")


def test_build_progress_as_a_bar_on_a_terminal(home: Path) -> None:
    import pty

    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "karn", "build", "-t", "tty:1", BUSYBOX],
                              stdout=subprocess.PIPE, stderr=terminal, stdin=subprocess.DEVNULL,
                              env={**os.environ, "KARN_HOME": str(home)}, timeout=120)
        os.close(terminal)
        terminal = -1
        said = b""
        while True:
            try:
                chunk = os.read(controller, 1 << 16)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not chunk:
                break
            said += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert proc.returncode == 0
    text = said.decode()
    assert "\r\x1b[2Klayer  done: " in text, text  # redrawn in place, not a line per step
    assert "layer  writing" not in text and "built tty:1: " in text


# ---- docs drift -----------------------------------------------------------------------------

TRACED = ("import os, fcntl, termios\n"
          "os.access('/', os.R_OK | os.X_OK); os.access('/', os.F_OK)\n"
          "os.access('/', os.W_OK)\n"
          "for request in (termios.TIOCSPGRP, termios.TIOCGWINSZ, termios.FIONREAD):\n"
          "    try: fcntl.ioctl(0, request, b'\\0' * 8)\n"
          "    except OSError: pass\n")


def test_trace_names_access_modes_and_ioctls_as_strace_does(tmp_path: Path) -> None:
    """access(..., R_OK|X_OK) and ioctl(0, TIOCSPGRP, ...): the names strace prints."""
    import re

    def calls(text: str) -> list[str]:  # the call and its first two arguments
        return re.findall(r"\b((?:access\(\"/\"|ioctl\(0), [A-Z_|]+)", text)

    log = tmp_path / "strace.log"
    native = subprocess.run(["strace", "-o", str(log), "-e", "trace=access,ioctl", PYTHON,
                             "-c", TRACED], capture_output=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert native.returncode == 0, native.stderr
    want = calls(log.read_text())
    names = {c.rsplit(", ", 1)[1] for c in want}
    assert {"R_OK|X_OK", "F_OK", "W_OK", "TIOCSPGRP", "TIOCGWINSZ", "FIONREAD"} <= names, want
    guest = karn_run("--trace=access,ioctl", PYTHON, "-c", TRACED)
    assert guest.returncode == 0, guest.stderr
    assert calls(guest.stderr.decode()) == want


def test_docs_drift_fixed() -> None:
    """The --core-dump help names the file it writes; images.md knows karn has a network;
    `system check` counts in words that agree with the numbers."""
    help_text = subprocess.run([sys.executable, "-m", "karn", "run", "--help"],
                               capture_output=True, text=True, timeout=60).stdout
    assert "core.PROGRAM.PID" in " ".join(help_text.split())
    assert "karn has no network" not in (REPO / "docs" / "images.md").read_text()
