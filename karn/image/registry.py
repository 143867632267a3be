"""A client for the OCI distribution API (push, pull, login) over http.client.

Auth: anonymous, HTTP basic, and bearer tokens (the WWW-Authenticate challenge names a
token service; karn asks it for a token, with basic credentials when it has some).
Uploads: HEAD first (an existing blob is skipped), then a monolithic PUT for small blobs
or PATCH chunks for large ones. Downloads stream into the store's BlobWriter, which
checks size and digest before the blob gets its name.

Transport: https, except plain http for loopback hosts (127.0.0.0/8, ::1, localhost)
and hosts listed in $KARN_INSECURE_REGISTRIES (comma-separated), as docker's
"insecure-registries".
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import IO, Any

from karn.errors import ImageError, KarnError, NotFoundError
from karn.image.auth import find_credentials
from karn.image.oci import (
    CONFIG_SCHEMA,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_SCHEMA,
    INDEX_TYPES,
    MANIFEST_SCHEMA,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Reference,
    check_digest,
    load_json,
    parse_reference,
    pick_platform,
    sha256_digest,
)
from karn.image.progress import Progress, note
from karn.image.store import Image, Store

ACCEPT = ", ".join((OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST))
DEFAULT_CHUNK = 8 << 20  # blobs above this are uploaded in PATCH chunks of this size
TIMEOUT = 60.0
MAX_MANIFEST = 4 << 20
USER_AGENT = "karn"


class RegistryError(KarnError):
    """The registry is unreachable, refused us, or answered something unusable."""


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: http.client.HTTPResponse

    def read(self) -> bytes:
        return self.body.read()

    def header(self, name: str) -> str:
        return self.headers.get(name, "") or ""


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
    if name == "localhost" or name == "::1":
        return True
    return bool(re.match(r"^127\.\d+\.\d+\.\d+$", name))


def uses_plain_http(registry: str) -> bool:
    insecure = {h.strip() for h in os.environ.get("KARN_INSECURE_REGISTRIES", "").split(",")}
    return _is_loopback(registry) or registry in insecure


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


def _registry_message(data: bytes) -> str:
    try:
        errors = json.loads(data).get("errors") or []
        first = errors[0]
        return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError, IndexError, TypeError):
        return data[:200].decode(errors="replace").strip()


class Registry:
    """One registry host and repository, with its auth state."""

    def __init__(self, store: Store, registry: str, repository: str, push: bool = False) -> None:
        self.store = store
        self.registry = registry
        self.repository = repository
        self.scheme = "http" if uses_plain_http(registry) else "https"
        self.actions = "pull,push" if push else "pull"
        self.creds = find_credentials(store.auth_path, registry)
        self.auth_header: str | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._conn_host: str | None = None

    # ---- transport
    def _connection(self, scheme: str, host: str) -> http.client.HTTPConnection:
        key = f"{scheme}://{host}"
        if self._conn is None or self._conn_host != key:
            if self._conn is not None:
                self._conn.close()
            if scheme == "https":
                self._conn = http.client.HTTPSConnection(
                    host, timeout=TIMEOUT, context=ssl.create_default_context()
                )
            else:
                self._conn = http.client.HTTPConnection(host, timeout=TIMEOUT)
            self._conn_host = key
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _send(
        self, method: str, url: str, headers: dict[str, str], body: Any = None
    ) -> http.client.HTTPResponse:
        parts = urllib.parse.urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        for attempt in (0, 1):  # a kept-alive connection may have been closed by the server
            conn = self._connection(parts.scheme, parts.netloc)
            try:
                if hasattr(body, "seek"):
                    body.seek(0)
                conn.request(method, target, body=body, headers=headers)
                return conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt:
                    raise
            except ssl.SSLError as err:
                self.close()
                raise RegistryError(
                    f"registry {self.registry}: TLS failed ({err.reason}); for a plain-http "
                    "registry set KARN_INSECURE_REGISTRIES"
                ) from None
            except (ConnectionRefusedError, socket.gaierror, TimeoutError, OSError) as err:
                self.close()
                reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
                raise RegistryError(
                    f"registry {self.registry} is not reachable: {reason}"
                ) from None
        raise AssertionError("unreachable")

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.registry}/v2/{path}"

    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: Any = None,
        ok: tuple[int, ...] = (200,),
        allow: tuple[int, ...] = (),
    ) -> Response:
        """Send with auth (answering one challenge), follow redirects, check the status."""
        headers = {"User-Agent": USER_AGENT, **(headers or {})}
        challenged = False
        redirects = 0
        while True:
            send = dict(headers)
            same_host = urllib.parse.urlsplit(url).netloc == self.registry
            if self.auth_header and same_host:
                send["Authorization"] = self.auth_header
            resp = self._send(method, url, send, body)
            if resp.status == 401 and not challenged and same_host:
                challenge = resp.getheader("WWW-Authenticate", "")
                resp.read()
                self._authenticate(challenge)
                challenged = True
                continue
            if resp.status in (301, 302, 303, 307, 308) and redirects < 5:
                location = resp.getheader("Location", "")
                resp.read()
                url = urllib.parse.urljoin(url, location)
                redirects += 1
                continue
            if resp.status in ok or resp.status in allow:
                return Response(resp.status, resp.headers, resp)
            data = resp.read()
            raise self._error(resp.status, data, method, url)

    def _error(self, status: int, data: bytes, method: str, url: str) -> RegistryError:
        detail = _registry_message(data)
        if status == 401:
            if self.creds:
                return RegistryError(
                    f"authentication to {self.registry} failed: wrong user name or password"
                )
            return RegistryError(
                f"registry {self.registry} needs authentication: run `karn login {self.registry}`"
            )
        if status == 403:
            return RegistryError(f"registry {self.registry} denied access: {detail}")
        what = urllib.parse.urlsplit(url).path
        return RegistryError(f"registry {self.registry}: {method} {what}: {status} {detail}")

    def _authenticate(self, challenge: str) -> None:
        scheme, params = _parse_challenge(challenge)
        if scheme == "basic":
            if not self.creds:
                raise RegistryError(
                    f"registry {self.registry} needs authentication: "
                    f"run `karn login {self.registry}`"
                )
            token = base64.b64encode(":".join(self.creds).encode()).decode()
            self.auth_header = f"Basic {token}"
        elif scheme == "bearer":
            self.auth_header = f"Bearer {self._fetch_token(params)}"
        else:
            raise RegistryError(f"registry {self.registry}: unsupported auth scheme {scheme!r}")

    def _fetch_token(self, params: dict[str, str]) -> str:
        realm = params.get("realm")
        if not realm:
            raise RegistryError(f"registry {self.registry}: bearer challenge without a realm")
        query = []
        if params.get("service"):
            query.append(("service", params["service"]))
        scope = params.get("scope")
        if not scope and self.repository:  # `karn login` asks for no scope, as docker does
            scope = f"repository:{self.repository}:{self.actions}"
        if scope:
            query.append(("scope", scope))
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {"User-Agent": USER_AGENT}
        if self.creds:
            token = base64.b64encode(":".join(self.creds).encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        resp = self._send("GET", url, headers)
        data = resp.read()
        if resp.status == 401:
            raise self._error(401, data, "GET", url)
        if resp.status != 200:
            raise RegistryError(
                f"token service {urllib.parse.urlsplit(realm).netloc}: {resp.status} "
                f"{_registry_message(data)}"
            )
        try:
            doc = json.loads(data)
            return str(doc.get("token") or doc["access_token"])
        except (ValueError, KeyError, AttributeError):
            raise RegistryError(f"registry {self.registry}: malformed token response") from None

    def ping(self) -> None:
        """GET /v2/: checks the API and the credentials (used by `karn login`)."""
        self.request("GET", f"{self.scheme}://{self.registry}/v2/").read()

    # ---- pull
    def get_manifest(self, reference: str) -> tuple[bytes, str]:
        resp = self.request(
            "GET",
            self.url(f"{self.repository}/manifests/{reference}"),
            {"Accept": ACCEPT},
            allow=(404,),
        )
        data = resp.body.read(MAX_MANIFEST + 1)
        if resp.status == 404:
            raise NotFoundError(
                f"image {self.registry}/{self.repository}:{reference} not found in the registry"
            )
        if len(data) > MAX_MANIFEST:
            raise RegistryError(f"manifest {reference} is larger than {MAX_MANIFEST} bytes")
        digest = sha256_digest(data)
        expected = (
            reference if reference.startswith("sha256:") else resp.header("Docker-Content-Digest")
        )
        if expected and expected.startswith("sha256:") and expected != digest:
            raise ImageError(f"manifest {reference}: digest mismatch (got {digest})")
        try:
            media_type = json.loads(data).get("mediaType") or resp.header("Content-Type")
        except (ValueError, AttributeError, RecursionError):
            raise ImageError(f"manifest {reference} is not valid JSON") from None
        if not isinstance(media_type, str):
            raise ImageError(f"manifest {reference}: mediaType must be a string")
        return data, media_type.split(";")[0].strip()

    def fetch_blob(self, desc: dict[str, Any], label: str) -> None:
        digest, size = desc["digest"], desc.get("size")
        if self.store.has_blob(digest):
            return
        resp = self.request("GET", self.url(f"{self.repository}/blobs/{digest}"))
        progress = Progress(label, size)
        with self.store.blob_writer(digest, size) as w:
            while chunk := resp.body.read(1 << 20):
                w.write(chunk)
                progress.advance(len(chunk))
            w.commit(f"blob {digest[:19]}")
        progress.finish()

    # ---- push
    def blob_exists(self, digest: str) -> bool:
        resp = self.request("HEAD", self.url(f"{self.repository}/blobs/{digest}"), allow=(404,))
        resp.read()
        return resp.status == 200

    def upload_blob(self, digest: str, size: int, label: str, chunk_size: int) -> str:
        """Upload one blob from the store; returns 'exists' or 'uploaded'."""
        if self.blob_exists(digest):
            note(f"{label}  already exists")
            return "exists"
        resp = self.request(
            "POST",
            self.url(f"{self.repository}/blobs/uploads/"),
            {"Content-Length": "0"},
            ok=(202,),
        )
        resp.read()
        location = self._location(resp)
        progress = Progress(label, size, "uploading")
        with open(self.store.blob_path(digest), "rb") as f:
            if size <= chunk_size:  # monolithic: one PUT with the whole blob
                body: IO[bytes] | bytes = f
                resp = self.request(
                    "PUT",
                    self._with_digest(location, digest),
                    {"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                    body=body,
                    ok=(201,),
                )
                resp.read()
                progress.advance(size)
            else:
                offset = 0
                while chunk := f.read(chunk_size):
                    end = offset + len(chunk) - 1
                    resp = self.request(
                        "PATCH",
                        location,
                        {
                            "Content-Type": "application/octet-stream",
                            "Content-Length": str(len(chunk)),
                            "Content-Range": f"{offset}-{end}",
                        },
                        body=chunk,
                        ok=(202,),
                    )
                    resp.read()
                    location = self._location(resp)
                    offset += len(chunk)
                    progress.advance(len(chunk))
                resp = self.request(
                    "PUT", self._with_digest(location, digest), {"Content-Length": "0"}, ok=(201,)
                )
                resp.read()
        progress.finish()
        return "uploaded"

    def _location(self, resp: Response) -> str:
        location = resp.header("Location")
        if not location:
            raise RegistryError(f"registry {self.registry}: upload response without Location")
        return urllib.parse.urljoin(f"{self.scheme}://{self.registry}/", location)

    @staticmethod
    def _with_digest(location: str, digest: str) -> str:
        sep = "&" if "?" in location else "?"
        return f"{location}{sep}digest={urllib.parse.quote(digest)}"

    def put_manifest(self, reference: str, data: bytes, media_type: str) -> str:
        resp = self.request(
            "PUT",
            self.url(f"{self.repository}/manifests/{reference}"),
            {"Content-Type": media_type, "Content-Length": str(len(data))},
            body=data,
            ok=(201,),
        )
        resp.read()
        return resp.header("Docker-Content-Digest") or sha256_digest(data)


def _remote(text: str) -> Reference:
    ref = parse_reference(text)
    if ref.registry is None:
        raise ImageError(
            f"{text} names no registry: use REGISTRY/NAME[:TAG], e.g. 127.0.0.1:5000/{text}"
        )
    return ref


def pull(store: Store, text: str) -> Image:
    """Download an image (linux/amd64 from an index) into the store and tag it."""
    ref = _remote(text)
    client = Registry(store, ref.remote_registry, ref.remote_repository)
    note(f"pulling {ref} from {ref.remote_registry}")
    try:
        with store.writing():
            data, media_type = client.get_manifest(ref.digest or ref.tag or "latest")
            if media_type in INDEX_TYPES:
                chosen = pick_platform(load_json(data, INDEX_SCHEMA, f"{ref}: index"), str(ref))
                data, media_type = client.get_manifest(check_digest(chosen["digest"]))
            if media_type not in MANIFEST_TYPES:
                raise ImageError(f"{ref}: unsupported manifest type {media_type}")
            manifest = load_json(data, MANIFEST_SCHEMA, f"{ref}: manifest")
            blobs = [manifest["config"], *manifest["layers"]]
            for i, desc in enumerate(blobs):
                label = "config" if i == 0 else f"layer {i}/{len(blobs) - 1}"
                client.fetch_blob(desc, f"{label} {check_digest(desc['digest'])[7:19]}")
            config = store.read_blob(manifest["config"]["digest"])
            load_json(config, CONFIG_SCHEMA, f"{ref}: config")
            digest = store.put_bytes(data)
            name = str(ref.with_tag()) if not ref.digest else None
            store.add_image(digest, len(data), name, media_type)
    finally:
        client.close()
    return store.get(digest)


def push(store: Store, local: str, dest: str | None = None, chunk_size: int = DEFAULT_CHUNK) -> str:
    """Upload an image from the store; returns the manifest digest."""
    image = store.get(local)
    ref = _remote(dest or local)
    if dest is None and ref.digest is None and str(ref.with_tag()) not in image.names:
        ref = _remote(image.names[0]) if image.names else ref
    client = Registry(store, ref.remote_registry, ref.remote_repository, push=True)
    note(f"pushing {local} to {ref}")
    try:
        blobs = [image.manifest["config"], *image.layers]
        for i, desc in enumerate(blobs):
            label = "config" if i == 0 else f"layer {i}/{len(blobs) - 1}"
            client.upload_blob(desc["digest"], desc["size"], f"{label} {desc['digest'][7:19]}",
                               chunk_size)  # fmt: skip
        data = store.read_blob(image.digest)
        media_type = image.manifest.get("mediaType") or OCI_MANIFEST
        client.put_manifest(ref.tag or ref.digest or "latest", data, media_type)
    finally:
        client.close()
    return image.digest


def login(store: Store, registry: str, user: str, password: str) -> None:
    """Check credentials against the registry (GET /v2/ with auth), then save them."""
    from karn.image.auth import save_credentials

    client = Registry(store, registry, "", push=False)
    client.creds = (user, password)
    try:
        client.ping()
    finally:
        client.close()
    save_credentials(store.auth_path, registry, user, password)
