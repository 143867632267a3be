"""podman runs Debian images of python3 and nginx with `--runtime karn-oci`, beside runc.

No registry is reachable from these machines, so the images are made here from this
machine's Debian files, as a Debian image holds them: the program, its shared libraries
(ldd's paths), Debian python3's standard library, nginx with a minimal configuration. They are
imported once per module and shared by the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from helpers import free_port
from test_oci import karn_oci, podman, runc_options, wait_for  # noqa: F401 - karn_oci: a fixture

PYTHON = os.path.realpath("/usr/bin/python3")  # Debian's, not this test's interpreter
PYTHON_NAME = os.path.basename(PYTHON)  # python3.X: its standard library's directory
NGINX = "/usr/sbin/nginx"
PYTHON_IMAGE = "localhost/karn-test-python:1"
NGINX_IMAGE = "localhost/karn-test-nginx:1"
# Parts of the standard library no test here needs (tests, GUIs, bundled wheels).
STDLIB_LEFT_OUT = ("test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
                   "pydoc_data", "site-packages", "dist-packages")
# A page of nginx's welcome page's size (612 bytes), its text computed, not copied.
PAGE = ("<!DOCTYPE html>\n<title>karn</title>\n<p>served by nginx in a karn unikernel</p>\n"
        ).ljust(611, "-") + "\n"
NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid /run/nginx.pid;
error_log stderr;
events { worker_connections 64; }
http {
    access_log off;
    server {
        listen 80;
        root /www;
    }
}
"""

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="an OCI runtime runs as root"),
              pytest.mark.slow]


def shared_libraries(*programs: str) -> set[str]:
    """The paths ldd resolves for `programs`: their ELF interpreter and libraries."""
    found: set[str] = set()
    for program in programs:
        out = subprocess.run(["ldd", program], capture_output=True, text=True,
                             check=True).stdout
        for line in out.splitlines():
            words = line.split()
            path = words[2] if "=>" in words and len(words) > 2 else words[0]
            if path.startswith("/"):
                found.add(path)
    return found


def copy_into(root: Path, *paths: str) -> None:
    for path in paths:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(path), target)


def base_root(root: Path) -> None:
    for directory in ("tmp", "run", "proc", "dev", "sys", "etc", "www"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    # nginx run by root looks its default user up (Debian builds it with nobody:nogroup)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                         "nobody:x:65534:65534:nobody:/:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "www" / "index.html").write_text(PAGE)


def python_root(root: Path) -> None:
    base_root(root)
    stdlib = Path(PYTHON).parent.parent / "lib" / PYTHON_NAME
    shutil.copytree(stdlib, root / "usr" / "lib" / PYTHON_NAME, symlinks=True,
                    ignore=lambda directory, names: [
                        n for n in names if n in STDLIB_LEFT_OUT or n.startswith("config-")])
    modules = [str(p) for p in (stdlib / "lib-dynload").glob("*.so")]
    copy_into(root, PYTHON, *shared_libraries(PYTHON, *modules))
    (root / "usr" / "bin" / "python3").symlink_to(PYTHON_NAME)


def nginx_root(root: Path) -> None:
    base_root(root)
    copy_into(root, NGINX, *shared_libraries(NGINX))
    (root / "etc" / "nginx").mkdir()
    (root / "etc" / "nginx" / "nginx.conf").write_text(NGINX_CONF)
    (root / "var" / "lib" / "nginx").mkdir(parents=True)  # its temporary directories
    (root / "var" / "log" / "nginx").mkdir(parents=True)


def import_image(root: Path, name: str, command: str) -> str:
    archive = root.parent / (root.name + ".tar")
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".")
    podman("import", "--quiet", "--change", "ENV PATH=/usr/sbin:/usr/bin",
           "--change", f"CMD {command}", str(archive), name)
    return name


@pytest.fixture(scope="module")
def python_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    assert shutil.which("podman"), "podman is needed (apt-get install podman)"
    root = tmp_path_factory.mktemp("python") / "root"
    python_root(root)
    return import_image(root, PYTHON_IMAGE, '["python3"]')


@pytest.fixture(scope="module")
def nginx_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    assert shutil.which("podman"), "podman is needed (apt-get install podman)"
    root = tmp_path_factory.mktemp("nginx") / "root"
    nginx_root(root)
    return import_image(root, NGINX_IMAGE, '["nginx"]')


def run_both(karn: str, *args: str) -> dict[str, tuple[int, str]]:
    results = {}
    for name, runtime in (("karn", ["--runtime", karn]), ("runc", runc_options())):
        done = podman("run", "--rm", *runtime, *args, check=False)
        results[name] = (done.returncode, done.stdout)
    return results


def curl(port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-s", "--max-time", "5", f"http://127.0.0.1:{port}/"],
                          capture_output=True, text=True, timeout=30)


def serve_and_fetch(runtime: list[str], image: str, guest_port: int, *command: str
                    ) -> tuple[str, str]:
    """Run a server detached with a published port; the page curl gets from it and the
    exit code `podman stop` ends it with."""
    port = free_port()
    cid = podman("run", "-d", *runtime, "-p", f"127.0.0.1:{port}:{guest_port}", image,
                 *command).stdout.strip()
    try:
        wait_for(lambda: curl(port).returncode == 0, f"the server on port {port}")
        page = curl(port).stdout
        podman("stop", "-t", "2", cid)
        code = podman("inspect", cid, "--format", "{{.State.ExitCode}}").stdout.strip()
        return page, code
    finally:
        podman("rm", "-f", cid, check=False)


PYTHON_CASES = {
    "print": ["python3", "-c", "print('hello', 6 * 7)"],
    "exit3": ["python3", "-c", "import sys; print('bye'); sys.exit(3)"],
    "raise": ["python3", "-c", "raise SystemExit('boom')"],
    "killed": ["python3", "-c", "import os; os.kill(os.getpid(), 9)"],
    "stdlib": ["python3", "-c", "import hashlib, json, sqlite3, zlib; print(json.dumps("
               "[hashlib.sha256(b'k').hexdigest(), zlib.crc32(b'k'), sqlite3.connect("
               "':memory:').execute('select 6*7').fetchone()]))"],
    "missing": ["python3", "/nosuch.py"],
}


@pytest.mark.parametrize("case", PYTHON_CASES.values(), ids=PYTHON_CASES.keys())
def test_python_output_and_exit_code_match_runc(karn_oci: str, python_image: str,  # noqa: F811 - the fixture
                                                case: list[str]) -> None:
    results = run_both(karn_oci, python_image, *case)
    assert results["karn"] == results["runc"]


def test_python_with_env_workdir_volume_and_read_only_root(karn_oci: str, python_image: str,  # noqa: F811 - the fixture
                                                           tmp_path: Path) -> None:
    (tmp_path / "f").write_text("from the host")
    program = ("import os\n"
               "print(os.environ['GREETING'], os.getcwd(), open('/data/f').read())\n"
               "for path in ('/new', '/tmp/new'):\n"
               "    try:\n"
               "        open(path, 'w').close(); print(path, 'written')\n"
               "    except OSError as e:\n"
               "        print(path, os.strerror(e.errno))\n")
    results = run_both(karn_oci, "-e", "GREETING=hi there", "-w", "/www", "-v",
                       f"{tmp_path}:/data:ro", "--read-only", python_image,
                       "python3", "-c", program)
    assert results["karn"] == results["runc"]
    assert "/new Read-only file system" in results["karn"][1]  # a check that can fail


def test_python_http_server_serves_a_published_port(karn_oci: str, python_image: str  # noqa: F811 - the fixture
                                                    ) -> None:
    results = {name: serve_and_fetch(runtime, python_image, 8000, "python3", "-m",
                                     "http.server", "--directory", "/www", "8000")
               for name, runtime in (("karn", ["--runtime", karn_oci]),
                                     ("runc", runc_options()))}
    assert results["karn"] == results["runc"]
    assert results["karn"][0] == PAGE


def test_nginx_serves_a_published_port(karn_oci: str, nginx_image: str) -> None:  # noqa: F811 - the fixture
    results = {name: serve_and_fetch(runtime, nginx_image, 80, "nginx")
               for name, runtime in (("karn", ["--runtime", karn_oci]),
                                     ("runc", runc_options()))}
    assert results["karn"] == results["runc"]
    assert results["karn"][0] == PAGE and len(PAGE) == 612


# Threads that wait until all are started: past --pids-limit, creating one fails.
THREADS = """
import threading
release = threading.Event()
started = 0
try:
    for _ in range(20):
        threading.Thread(target=release.wait).start()
        started += 1
except RuntimeError as e:
    print("after", started, "threads:", e)
release.set()
"""


@pytest.mark.parametrize("limit", [8, 100])
def test_pids_limit_stops_threads_as_runc(karn_oci: str, python_image: str,  # noqa: F811 - the fixture
                                          limit: int) -> None:
    results = run_both(karn_oci, "--pids-limit", str(limit), python_image,
                       "python3", "-c", THREADS)
    assert results["karn"] == results["runc"]
    assert ("can't start new thread" in results["karn"][1]) == (limit == 8)
