"""Registry credentials: `karn login` writes $KARN_HOME/auth.json; the docker config is read too.

Both files use docker's format: {"auths": {"REGISTRY": {"auth": base64("user:password")}}}.
Credential helpers (credsStore/credHelpers) are not supported.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile

from karn.errors import UsageError
from karn.hints import Any


def docker_config_path() -> str:
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return os.path.join(base, "config.json")


def _read(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise UsageError(f"{path}: unreadable credentials file ({err})") from None
    return doc if isinstance(doc, dict) else {}


def _keys(registry: str) -> tuple[str, ...]:
    keys: tuple[str, ...] = (registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/")
    if registry == "docker.io":
        keys += ("https://index.docker.io/v1/", "index.docker.io")
    return keys


def _decode(entry: Any) -> tuple[str, str] | None:
    if not isinstance(entry, dict):
        return None
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        return user, password
    if entry.get("username") and "password" in entry:
        return str(entry["username"]), str(entry["password"])
    return None


def find_credentials(auth_path: str, registry: str) -> tuple[str, str] | None:
    """(user, password) for a registry: karn's own file first, then docker's."""
    for path in (auth_path, docker_config_path()):
        auths = _read(path).get("auths") or {}
        for key in _keys(registry):
            creds = _decode(auths.get(key))
            if creds:
                return creds
    return None


def save_credentials(auth_path: str, registry: str, user: str, password: str) -> None:
    doc = _read(auth_path)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    doc.setdefault("auths", {})[registry] = {"auth": token}
    _write(auth_path, doc)


def remove_credentials(auth_path: str, registry: str) -> bool:
    doc = _read(auth_path)
    found = (doc.get("auths") or {}).pop(registry, None) is not None
    if found:
        _write(auth_path, doc)
    return found


def _write(path: str, doc: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".auth-", dir=os.path.dirname(path))
    try:
        os.fchmod(fd, 0o600)  # passwords: owner only
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
