"""Registry credentials: a docker config.json, a mounted or manifest dockerconfigjson Secret,
or ~/.docker."""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import OCIError
from .media import DOCKER_HUB, DOCKER_HUB_API, DOCKER_HUB_AUTH_KEYS


@dataclass(frozen=True)
class Credentials:
    """What a docker config.json holds for one registry. Its repr shows which secrets are set,
    never their values."""

    username: str | None = None
    password: str | None = None
    identity_token: str | None = None  # an OAuth2 refresh token (ACR, `docker login` via SSO)
    registry_token: str | None = None  # a bearer token used as is

    def basic(self) -> tuple[str, str] | None:
        if self.username is not None and self.password is not None:
            return self.username, self.password
        return None

    def __repr__(self) -> str:
        def masked(value: str | None) -> str:
            return "None" if value is None else "***"

        return (
            f"Credentials(username={self.username!r}, password={masked(self.password)}, "
            f"identity_token={masked(self.identity_token)}, "
            f"registry_token={masked(self.registry_token)})"
        )


def _invalid(path: Path, what: str) -> OCIError:
    return OCIError(
        f"registry secret {path}: {what}",
        reason="InvalidPushSecret",
        hint="create it with kubectl create secret docker-registry, or `docker login`",
    )


def _decoded(path: Path, text: object, what: str) -> str:
    """Base64 text (a Secret's data, a config's auth) decoded to UTF-8."""
    try:
        return base64.b64decode(str(text), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, TypeError) as exc:
        raise _invalid(path, f"{what} is not base64 of UTF-8 text ({exc})") from None


def _json_object(path: Path, text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise _invalid(path, f"{what} is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _invalid(path, f"{what} is not a JSON object")
    return value


def _docker_config_from_file(path: Path) -> dict[str, Any]:
    """A docker config.json, from any of the shapes a push secret arrives in.

    - a directory (a mounted secret): its `.dockerconfigjson` or `config.json`;
    - a docker `config.json` (`{"auths": ...}`), or the legacy `.dockercfg` map;
    - a Kubernetes Secret manifest (YAML or JSON) of type kubernetes.io/dockerconfigjson.
    """
    if path.is_dir():
        for name in (".dockerconfigjson", "config.json", ".dockercfg"):
            if (path / name).is_file():
                return _docker_config_from_file(path / name)
        raise OCIError(
            f"{path} holds no .dockerconfigjson or config.json", reason="InvalidPushSecret"
        )
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise OCIError(
            f"cannot read registry credentials {path}: {exc}", reason="InvalidPushSecret"
        ) from exc
    if not isinstance(doc, dict):
        raise OCIError(f"{path} is not a docker config.json", reason="InvalidPushSecret")
    if doc.get("kind") == "Secret":
        string_data = doc.get("stringData") if isinstance(doc.get("stringData"), dict) else {}
        data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
        for key in (".dockerconfigjson", ".dockercfg"):
            if key in string_data:
                raw = str(string_data[key])
            elif key in data:
                raw = _decoded(path, data[key], f"data[{key}]")
            else:
                continue
            inner = _json_object(path, raw, key)
            return inner if key == ".dockerconfigjson" else {"auths": inner}
        raise OCIError(
            f"Secret in {path} has no .dockerconfigjson",
            reason="InvalidPushSecret",
            hint="create it with kubectl create secret docker-registry",
        )
    if "auths" in doc or "credHelpers" in doc or "credsStore" in doc:
        return doc
    return {"auths": doc}  # legacy .dockercfg: registry -> entry at the top level


def _entry_credentials(path: Path, key: str, entry: dict[str, Any]) -> Credentials:
    username, password = entry.get("username"), entry.get("password")
    if entry.get("auth"):
        if not isinstance(entry["auth"], str):
            raise _invalid(path, f"auths[{key}].auth is not a string")
        username, colon, password = _decoded(path, entry["auth"], f"auths[{key}].auth").partition(
            ":"
        )
        if not colon:
            raise _invalid(path, f"auths[{key}].auth is not base64 of user:password")
    fields = {
        "username": username,
        "password": password,
        "identitytoken": entry.get("identitytoken"),
        "registrytoken": entry.get("registrytoken"),
    }
    for name, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise _invalid(path, f"auths[{key}].{name} is not a string")
    return Credentials(
        username=username,
        password=password,
        identity_token=entry.get("identitytoken") or None,
        registry_token=entry.get("registrytoken") or None,
    )


def _auth_key_host(key: str) -> str:
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return DOCKER_HUB if host in DOCKER_HUB_AUTH_KEYS or host == DOCKER_HUB_API else host


def load_credentials(registry: str, secret: str | os.PathLike | None = None) -> Credentials | None:
    """Credentials for `registry` from a push/pull secret file or directory.

    Without `secret`, the user's docker config ($DOCKER_CONFIG/config.json or
    ~/.docker/config.json) is read, as docker and oras do. Credential helpers are not run.
    """
    if secret is not None:
        path = Path(secret).expanduser()
        if not path.exists():
            raise OCIError(f"registry secret {path} does not exist", reason="InvalidPushSecret")
    else:
        path = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"
        if not path.exists():
            return None
    config = _docker_config_from_file(path)
    auths = config.get("auths") or {}
    if not isinstance(auths, dict):
        raise _invalid(path, "auths is not a mapping of registry to credentials")
    wanted = DOCKER_HUB if registry in (DOCKER_HUB, DOCKER_HUB_API) else registry
    for key, entry in auths.items():
        if _auth_key_host(str(key)) == wanted and isinstance(entry, dict):
            return _entry_credentials(path, str(key), entry)
    return None
