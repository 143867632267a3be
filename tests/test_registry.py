"""push/pull against a real registry: Debian's docker-registry (distribution 2.8) started
on 127.0.0.1 by the fixtures below, plain, behind htpasswd basic auth, and behind a bearer
token service (a small real JWT issuer in this file). skopeo moves images between the
registry and OCI directories; karn must still run what it gets back."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import BUSYBOX, native_run
from helpers import free_port, karn_in
from test_errors import assert_one_error_line
from test_images import ok, store_snapshot

pytestmark = pytest.mark.breadth  # make test-quick leaves these out

USER, PASSWORD = "alice", "s3cret"


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    data: Path  # the registry's storage directory
    log: Path

    def requests(self, method: str) -> int:
        """How many requests of a method the registry has served (from its access log)."""
        return sum(f'"{method} /v2/' in line for line in self.log.read_text().splitlines())


def start_registry(base: Path, auth: str = "") -> Iterator[Registry]:
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (base / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {base / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: karn-tests\n" + auth
    )
    log = base / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(base / "config.yml")], stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # 401: up, wants auth
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"docker-registry did not start:\n{log.read_text()}")
                time.sleep(0.05)
        yield Registry(f"127.0.0.1:{port}", base / "data", log)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[Registry]:
    if shutil.which("docker-registry") is None:
        pytest.fail("docker-registry not found (apt-get install docker-registry)", pytrace=False)
    yield from start_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory) -> Iterator[Registry]:
    base = tmp_path_factory.mktemp("auth-registry")
    htpasswd = subprocess.run(
        ["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True
    ).stdout
    (base / "htpasswd").write_text(htpasswd)
    auth = f"auth:\n  htpasswd:\n    realm: karn-tests\n    path: {base / 'htpasswd'}\n"
    yield from start_registry(base, auth)


@pytest.fixture(scope="session")
def dyn_program(build: object) -> Path:
    return build("files", "dynamic")  # type: ignore[operator]


# ---- plain registry


def test_push_rm_pull_run_identical(registry: Registry, home: Path, dyn_program: Path) -> None:
    bb = f"{registry.host}/tests/busybox:1"
    prog = f"{registry.host}/tests/files:dyn"
    ok(karn_in(home, "build", "-t", bb, BUSYBOX))
    ok(karn_in(home, "build", "-t", prog, dyn_program))
    before = {name: karn_in(home, "run", name, *args) for name, args in
              ((bb, ["sha256sum", "/bin/busybox"]), (prog, []))}  # fmt: skip
    pushed = {name: ok(karn_in(home, "push", name)).strip() for name in (bb, prog)}
    ok(karn_in(home, "rm", bb, prog))
    assert ok(karn_in(home, "images", "-q")) == ""
    for name in (bb, prog):
        assert ok(karn_in(home, "pull", name)).strip() == pushed[name]  # same digest back
    got = karn_in(home, "run", bb, "sha256sum", "/bin/busybox")
    assert got.stdout == native_run(BUSYBOX, "sha256sum", "/bin/busybox").stdout
    assert got.stdout == before[bb].stdout
    got = karn_in(home, "run", prog)
    want = native_run(dyn_program)
    assert (got.returncode, got.stdout) == (want.returncode, want.stdout)
    assert (got.returncode, got.stdout) == (before[prog].returncode, before[prog].stdout)


def test_run_pulls_a_missing_image(registry: Registry, home: Path, tmp_path: Path) -> None:
    name = f"{registry.host}/tests/autopull:1"
    ok(karn_in(tmp_path / "other", "build", "-t", name, BUSYBOX))
    ok(karn_in(tmp_path / "other", "push", name))
    ran = karn_in(home, "run", name, "echo", "pulled on run")
    assert ok(ran) == "pulled on run\n"
    said = ran.stderr.decode().splitlines()  # the implicit pull is not silent
    assert said[0] == f"pulling {name} from {registry.host}", said
    assert any(line.startswith("layer 1/1 ") and "done" in line for line in said), said


def test_chunked_upload_and_existing_blobs_skipped(registry: Registry, home: Path) -> None:
    name = f"{registry.host}/tests/chunked:1"
    ok(karn_in(home, "build", "-t", name, BUSYBOX))
    patches = registry.requests("PATCH")
    ok(karn_in(home, "push", "--chunk-size", "64k", name))
    assert registry.requests("PATCH") - patches >= 10  # ~1 MB layer in 64 KiB chunks
    puts = registry.requests("PUT")
    ok(karn_in(home, "push", name))  # everything is there: only HEADs and the manifest
    assert registry.requests("PUT") - puts == 1
    other = home.parent / "other"
    ok(karn_in(other, "pull", name))
    assert ok(karn_in(other, "run", name, "echo", "ok")) == "ok\n"


def test_skopeo_copies_karn_images(registry: Registry, home: Path, tmp_path: Path) -> None:
    """registry -> OCI dir (skopeo) -> karn; and OCI dir -> registry (skopeo) -> karn pull."""
    name = f"{registry.host}/tests/skopeo:1"
    ok(karn_in(home, "build", "-t", name, "--cmd", "uname", BUSYBOX))
    digest = ok(karn_in(home, "push", name)).strip()
    layout = tmp_path / "layout"
    skopeo = ["skopeo", "--insecure-policy"]
    subprocess.run([*skopeo, "copy", "--src-tls-verify=false", f"docker://{name}",
                    f"oci:{layout}:one"], check=True, capture_output=True)  # fmt: skip
    other = tmp_path / "home2"
    imported = ok(karn_in(other, "build", "-t", "fromdir", "--from", f"oci:{layout}:one"))
    assert imported.strip() == digest  # copied untouched: the same manifest
    assert ok(karn_in(other, "run", "fromdir")) == "Linux\n"
    copy = f"{registry.host}/tests/skopeo-copy:2"
    subprocess.run([*skopeo, "copy", "--dest-tls-verify=false", f"oci:{layout}:one",
                    f"docker://{copy}"], check=True, capture_output=True)  # fmt: skip
    third = tmp_path / "home3"
    ok(karn_in(third, "pull", copy))
    assert ok(karn_in(third, "run", copy, "echo", "via skopeo")) == "via skopeo\n"


def test_corrupted_blob_is_refused(registry: Registry, home: Path, tmp_path: Path) -> None:
    name = f"{registry.host}/tests/corrupt:1"
    src = tmp_path / "src"
    ok(karn_in(src, "build", "-t", name, "--add", f"{BUSYBOX}:/extra", BUSYBOX))
    ok(karn_in(src, "push", name))
    (info,) = json.loads(ok(karn_in(src, "inspect", name)))
    layer = info["Manifest"]["layers"][0]["digest"][7:]
    blob = registry.data / "docker/registry/v2/blobs/sha256" / layer[:2] / layer / "data"
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF  # same size, different content
    blob.write_bytes(bytes(data))
    ok(karn_in(home, "build", "-t", "keep", BUSYBOX))
    before = store_snapshot(home)
    assert_one_error_line(karn_in(home, "pull", name), None, "digest mismatch")
    after = store_snapshot(home)
    assert after["oci/index.json"] == before["oci/index.json"]
    assert f"oci/blobs/sha256/{layer}" not in after  # the bad layer was not stored
    for path, data in after.items():  # and every stored blob is whole (a verified config
        if "/blobs/" in path:  # may remain until `karn prune`)
            assert hashlib.sha256(data).hexdigest() == path.rsplit("/", 1)[1]
    assert list((home / "tmp").iterdir()) == []


def test_registry_down(home: Path) -> None:
    port = free_port()  # nothing listens there
    proc = karn_in(home, "pull", f"127.0.0.1:{port}/x:1")
    assert_one_error_line(proc, None, "not reachable")


def test_unknown_image_in_registry(registry: Registry, home: Path) -> None:
    assert_one_error_line(karn_in(home, "pull", f"{registry.host}/no/such:1"), 1, "not found")


# ---- htpasswd basic auth


def test_basic_auth(auth_registry: Registry, home: Path, tmp_path: Path) -> None:
    name = f"{auth_registry.host}/private/bb:1"
    ok(karn_in(home, "build", "-t", name, BUSYBOX))
    assert_one_error_line(karn_in(home, "push", name), None, "karn login")
    bad = karn_in(home, "login", "-u", USER, "--password-stdin", auth_registry.host,
                  input=b"wrong\n")  # fmt: skip
    assert_one_error_line(bad, None, "wrong user name or password")
    assert not (home / "auth.json").exists()
    login = karn_in(home, "login", "-u", USER, "--password-stdin", auth_registry.host,
                    input=PASSWORD.encode() + b"\n")  # fmt: skip
    assert "Login Succeeded" in ok(login)
    assert oct((home / "auth.json").stat().st_mode & 0o777) == "0o600"
    digest = ok(karn_in(home, "push", name)).strip()
    # credentials from a docker config file work too
    other = tmp_path / "other"
    docker_dir = tmp_path / "docker"
    docker_dir.mkdir()
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    (docker_dir / "config.json").write_text(
        json.dumps({"auths": {auth_registry.host: {"auth": token}}})
    )
    assert (
        ok(karn_in(other, "pull", name, env={"DOCKER_CONFIG": str(docker_dir)})).strip() == digest
    )
    assert ok(karn_in(other, "run", name, "echo", "authed")) == "authed\n"
    ok(karn_in(home, "logout", auth_registry.host))
    assert_one_error_line(karn_in(tmp_path / "third", "pull", name), None, "karn login")


# ---- bearer tokens


def _token_service(tmp: Path, service: str, issuer: str) -> tuple[ThreadingHTTPServer, Path]:
    """A real token service: checks basic credentials, returns an RS256 JWT with x5c."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "karn-test-token")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    bundle = tmp / "token-ca.pem"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            from urllib.parse import parse_qs, urlsplit

            query = parse_qs(urlsplit(self.path).query)
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
            access = []
            for scope in query.get("scope", []):
                kind, name, actions = scope.split(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
            t = int(time.time())
            claims = {
                "iss": issuer,
                "sub": USER,
                "aud": service,
                "exp": t + 300,
                "nbf": t - 10,
                "iat": t,
                "jti": os.urandom(8).hex(),
                "access": access,
            }
            header = {"alg": "RS256", "typ": "JWT", "x5c": [x5c]}
            signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
            sig = key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
            body = json.dumps({"token": f"{signing}.{b64(sig)}"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, bundle


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory) -> Iterator[Registry]:
    base = tmp_path_factory.mktemp("token-registry")
    server, bundle = _token_service(base, "karn-registry", "karn-token-issuer")
    realm = f"http://127.0.0.1:{server.server_address[1]}/token"
    auth = (f"auth:\n  token:\n    realm: {realm}\n    service: karn-registry\n"
            f"    issuer: karn-token-issuer\n    rootcertbundle: {bundle}\n")  # fmt: skip
    try:
        yield from start_registry(base, auth)
    finally:
        server.shutdown()


def test_bearer_token_auth(token_registry: Registry, home: Path, tmp_path: Path) -> None:
    name = f"{token_registry.host}/tok/bb:1"
    ok(karn_in(home, "build", "-t", name, BUSYBOX))
    assert_one_error_line(karn_in(home, "push", name), None, "karn login")
    bad = karn_in(home, "login", "-u", USER, "-p", "nope", token_registry.host)
    assert_one_error_line(bad, None, "wrong user name or password")
    ok(karn_in(home, "login", "-u", USER, "-p", PASSWORD, token_registry.host))
    digest = ok(karn_in(home, "push", name)).strip()
    ok(karn_in(home, "rm", name))
    assert ok(karn_in(home, "pull", name)).strip() == digest
    assert ok(karn_in(home, "run", name, "echo", "bearer")) == "bearer\n"
