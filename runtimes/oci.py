"""A small OCI registry client: push a directory as an artifact, pull artifacts and images back.

What the runtimes move through registries:
- LoRA adapters, pushed by the tuning job and pulled by the inference server. The layout is the
  one Kaito's pusher writes (and its puller reads): an OCI image manifest whose config is an
  image config, with one `tar+gzip` layer holding `data/adapter_config.json` and
  `data/adapter_model.safetensors`, and the preset's name in the manifest annotation
  `sh.kaito.model.name`. Built with ORAS conventions (title and created annotations), so
  `oras`, `skopeo` and Kaito's own puller read it too.
- Model weights: Kaito's weight images (files under `workspace/tfs/weights/` in image layers),
  ORAS file artifacts (one blob per file, named by `org.opencontainers.image.title`), and
  ModelPack artifacts (`org.cncf.model.filepath`), gzip or zstd compressed.

The distribution API is spoken over HTTP(S) with `requests`: Bearer token or Basic auth,
whichever the registry's WWW-Authenticate challenge asks for, with credentials from a docker
`config.json` (a kubernetes.io/dockerconfigjson secret, mounted or as a manifest). Plain HTTP is
used for loopback registries and for hosts named in KAITO_OCI_INSECURE_REGISTRIES; TLS trusts
the system store, or the bundle in REQUESTS_CA_BUNDLE. No torch: the notebook side may import it.

Public functions (stable): `parse_reference`, `load_credentials`, `push_directory`,
`pull_directory`, `pull_adapter`, `pull_weights`, `inspect`; the `Registry` class for the rest.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import ipaddress
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import yaml

from kaito_jupyter.errors import RuntimeFailure

# Media types (OCI image spec, Docker schema 2, ORAS, ModelPack): facts, not choices.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_IMAGE_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_UNPACK = "io.deis.oras.content.unpack"  # ORAS: a directory pushed as tar+gzip
ANNOTATION_MODEL_NAME = "sh.kaito.model.name"  # Kaito: the preset an adapter was tuned from
ANNOTATION_MODELPACK_PATH = "org.cncf.model.filepath"

MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
IMAGE_CONFIGS = (OCI_IMAGE_CONFIG, DOCKER_IMAGE_CONFIG)

ADAPTER_DIR = "data"  # where Kaito's adapter images keep the adapter
WEIGHTS_DIRS = ("workspace/tfs/weights", "workspace/weights", "weights", "data")

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_AUTH_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io")

_RETRY_STATUS = {429, 500, 502, 503, 504}
_CHUNK = 1 << 20


class OCIError(RuntimeFailure):
    """A registry operation failed; `reason` says how (for the workspace's conditions)."""

    def __init__(self, message: str, *, reason: str = "RegistryError", hint: str | None = None):
        super().__init__(message, reason=reason, hint=hint)


# --- references ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """`registry/repository[:tag][@digest]`, with Docker Hub's defaults filled in."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def with_reference(self, tag: str | None = None, digest: str | None = None) -> Reference:
        return Reference(self.registry, self.repository, tag, digest)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


_REPO_RE = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")


def parse_reference(ref: str) -> Reference:
    """Parse an image reference as docker does: `ubuntu` is `docker.io/library/ubuntu:latest`.

    The first path component is the registry when it has a dot or a port, or is `localhost`.
    """
    text = str(ref).strip()
    for scheme in ("oci://", "docker://"):
        text = text.removeprefix(scheme)
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise OCIError(f"invalid digest in image reference {ref!r}", reason="InvalidImage")
    tag = None
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
        if not _TAG_RE.match(tag):
            raise OCIError(f"invalid tag {tag!r} in image reference {ref!r}", reason="InvalidImage")
    first, _, rest = text.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, text
    if registry in ("index.docker.io", DOCKER_HUB_API):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not repository or not _REPO_RE.match(repository):
        raise OCIError(
            f"invalid repository {repository!r} in image reference {ref!r}",
            reason="InvalidImage",
            hint="image references look like registry.example.com/team/adapter:1.0",
        )
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry, repository, tag, digest)


# --- credentials -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """What a docker config.json holds for one registry."""

    username: str | None = None
    password: str | None = None
    identity_token: str | None = None  # an OAuth2 refresh token (ACR, `docker login` via SSO)
    registry_token: str | None = None  # a bearer token used as is

    def basic(self) -> tuple[str, str] | None:
        if self.username is not None and self.password is not None:
            return self.username, self.password
        return None


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
        string_data = doc.get("stringData") or {}
        data = doc.get("data") or {}
        for key in (".dockerconfigjson", ".dockercfg"):
            if key in string_data:
                raw = string_data[key]
            elif key in data:
                raw = base64.b64decode(data[key]).decode()
            else:
                continue
            inner = json.loads(raw)
            return inner if key == ".dockerconfigjson" else {"auths": inner}
        raise OCIError(
            f"Secret in {path} has no .dockerconfigjson",
            reason="InvalidPushSecret",
            hint="create it with kubectl create secret docker-registry",
        )
    if "auths" in doc or "credHelpers" in doc or "credsStore" in doc:
        return doc
    return {"auths": doc}  # legacy .dockercfg: registry -> entry at the top level


def _entry_credentials(entry: dict[str, Any]) -> Credentials:
    username, password = entry.get("username"), entry.get("password")
    if entry.get("auth"):
        decoded = base64.b64decode(entry["auth"]).decode()
        username, _, password = decoded.partition(":")
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
    wanted = DOCKER_HUB if registry in (DOCKER_HUB, DOCKER_HUB_API) else registry
    for key, entry in (config.get("auths") or {}).items():
        if _auth_key_host(key) == wanted and isinstance(entry, dict):
            return _entry_credentials(entry)
    return None


# --- the distribution API --------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _plain_http(registry: str) -> bool:
    # Docker's rule: loopback registries may speak plain HTTP. Others only when listed.
    listed = {
        h.strip() for h in os.environ.get("KAITO_OCI_INSECURE_REGISTRIES", "").split(",") if h
    }
    return _is_loopback(registry) or registry in listed


_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_RE.findall(params))


class Registry:
    """One registry, one repository's worth of distribution API calls, auth handled inside."""

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        plain_http: bool | None = None,
        timeout: float = 60.0,
        retries: int = 4,
    ):
        import requests  # a runtime dependency; imported here so parsing stays import-light

        self.registry = registry
        self.host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
        self.plain_http = plain_http
        self._base: str | None = None
        self.credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self.session = requests.Session()
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        self._basic = False  # the registry asked for Basic

    @property
    def base(self) -> str:
        """The API's scheme and host. Loopback and KAITO_OCI_INSECURE_REGISTRIES hosts try HTTPS
        first and fall back to plain HTTP, as docker does for insecure registries."""
        if self._base is None:
            import requests

            plain = self.plain_http
            if plain is None and _plain_http(self.host):
                try:
                    self.session.get(f"https://{self.host}/v2/", timeout=min(self.timeout, 5))
                    plain = False
                except (requests.exceptions.SSLError, requests.exceptions.ConnectionError):
                    plain = True
            self._base = f"{'http' if plain else 'https'}://{self.host}"
        return self._base

    # auth

    def _authorization(self, scope: str) -> dict[str, str]:
        if self._basic and self.credentials and self.credentials.basic():
            user, password = self.credentials.basic()
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            return {"Authorization": f"Basic {token}"}
        if scope in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scope]}"}
        return {}

    def _authenticate(self, response, scope: str) -> bool:
        """Answer a 401's challenge; True when a retry can succeed."""
        header = response.headers.get("WWW-Authenticate", "")
        scheme, params = _parse_challenge(header)
        creds = self.credentials
        if scheme == "basic":
            if self._basic or not (creds and creds.basic()):
                return False
            self._basic = True
            return True
        if scheme != "bearer" or "realm" not in params:
            return False
        # A cached token that got a 401 has expired: fetch a fresh one (once per request).
        self._tokens.pop(scope, None)
        if creds and creds.registry_token:
            self._tokens[scope] = creds.registry_token
            return True
        # The challenge's scope names what this request needs; ask for ours too (push+pull).
        scopes = sorted({scope, params.get("scope", "")} - {""})
        query = {"service": params.get("service", ""), "scope": scopes}
        if creds and creds.identity_token:
            reply = self.session.post(
                params["realm"],
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "service": params.get("service", ""),
                    "scope": " ".join(scopes),
                    "client_id": "kaito-jupyter",
                },
                timeout=self.timeout,
            )
        else:
            auth = creds.basic() if creds else None
            reply = self.session.get(params["realm"], params=query, auth=auth, timeout=self.timeout)
        if reply.status_code in (401, 403):
            return False
        if reply.status_code != 200:
            raise OCIError(
                f"token service {params['realm']} answered {reply.status_code}: {reply.text[:200]}",
                reason="RegistryUnauthorized",
            )
        body = reply.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise OCIError(
                f"token service {params['realm']} returned no token", reason="RegistryUnauthorized"
            )
        self._tokens[scope] = token
        return True

    def request(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        ok: Iterable[int] = (200,),
        body: bytes | Path | None = None,
        headers: dict[str, str] | None = None,
        stream: bool = False,
        what: str = "",
    ):
        """One API call: retried with backoff on 429/5xx and connection errors, 401s answered."""
        import requests

        url = url if url.startswith("http") else self.base + url
        ok = tuple(ok)
        authenticated = False
        attempt = 0
        while True:
            attempt += 1
            payload: Any = body
            handle = None
            if isinstance(body, Path):
                handle = payload = open(body, "rb")  # noqa: SIM115 - closed below
            try:
                response = self.session.request(
                    method,
                    url,
                    data=payload,
                    headers={**(headers or {}), **self._authorization(scope)},
                    stream=stream,
                    timeout=self.timeout,
                    allow_redirects=True,
                )
            except requests.RequestException as exc:
                if attempt <= self.retries:
                    time.sleep(min(0.5 * 2 ** (attempt - 1), 8))
                    continue
                raise OCIError(
                    f"cannot reach registry {self.registry} ({what or url}): {exc}",
                    reason="RegistryUnreachable",
                    hint="check the registry name, the network, and TLS (REQUESTS_CA_BUNDLE)",
                ) from exc
            finally:
                if handle is not None:
                    handle.close()
            if response.status_code == 401 and not authenticated:
                authenticated = True
                if self._authenticate(response, scope):
                    continue
            if response.status_code in _RETRY_STATUS and attempt <= self.retries:
                delay = float(
                    response.headers.get("Retry-After") or min(0.5 * 2 ** (attempt - 1), 8)
                )
                time.sleep(min(delay, 30))
                continue
            if response.status_code in ok:
                return response
            raise self._failure(response, what or f"{method} {url}")

    def _failure(self, response, what: str) -> OCIError:
        code = response.status_code
        detail = ""
        with contextlib.suppress(ValueError, AttributeError, KeyError, IndexError):
            errors = response.json().get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        detail = detail or response.text[:200]
        if code in (401, 403):
            return OCIError(
                f"registry {self.registry} refused {what} ({code}): {detail}",
                reason="RegistryUnauthorized",
                hint="check the image push/pull secret: a kubernetes.io/dockerconfigjson secret "
                "with credentials for this registry",
            )
        if code == 404:
            return OCIError(
                f"{what}: not found in registry {self.registry} ({detail})", reason="ImageNotFound"
            )
        return OCIError(f"registry {self.registry} answered {code} to {what}: {detail}")

    # manifests

    def get_manifest(self, ref: Reference) -> tuple[dict[str, Any], str, str]:
        """(manifest, media type, digest) of `ref`; an index is returned as is."""
        response = self.request(
            "GET",
            f"/v2/{ref.repository}/manifests/{ref.reference}",
            scope=f"repository:{ref.repository}:pull",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
            what=f"manifest {ref}",
        )
        raw = response.content
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if ref.digest and ref.digest.startswith("sha256:") and ref.digest != digest:
            raise OCIError(f"manifest of {ref} has digest {digest}", reason="DigestMismatch")
        manifest = json.loads(raw)
        media_type = manifest.get("mediaType") or response.headers.get("Content-Type", "")
        return manifest, media_type.split(";")[0].strip(), digest

    def put_manifest(self, ref: Reference, manifest: bytes, media_type: str) -> str:
        """Upload a manifest under `ref`'s tag (or digest); returns its digest."""
        self.request(
            "PUT",
            f"/v2/{ref.repository}/manifests/{ref.reference}",
            scope=f"repository:{ref.repository}:pull,push",
            ok=(201,),
            body=manifest,
            headers={"Content-Type": media_type},
            what=f"manifest upload to {ref}",
        )
        return "sha256:" + hashlib.sha256(manifest).hexdigest()

    # blobs

    def has_blob(self, repository: str, digest: str) -> bool:
        response = self.request(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            scope=f"repository:{repository}:pull,push",
            ok=(200, 404),
            what=f"blob {digest}",
        )
        return response.status_code == 200

    def push_blob(self, repository: str, content: bytes | Path, digest: str, size: int) -> None:
        """Upload one blob (monolithically) unless the registry has it already."""
        if self.has_blob(repository, digest):
            return
        scope = f"repository:{repository}:pull,push"
        start = self.request(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            scope=scope,
            ok=(202,),
            what=f"upload of {digest}",
        )
        location = start.headers["Location"]
        if not location.startswith("http"):
            location = self.base + location
        separator = "&" if "?" in location else "?"
        self.request(
            "PUT",
            f"{location}{separator}digest={digest}",
            scope=scope,
            ok=(201,),
            body=content,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            what=f"upload of {digest}",
        )

    def fetch_blob(self, repository: str, descriptor: dict[str, Any], dest: BinaryIO) -> None:
        """Stream a blob into `dest`, checking its size and sha256 digest."""
        digest = descriptor["digest"]
        response = self.request(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            scope=f"repository:{repository}:pull",
            stream=True,
            what=f"blob {digest}",
        )
        hasher = hashlib.sha256()
        size = 0
        for chunk in response.iter_content(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
            dest.write(chunk)
        algorithm, _, expected = digest.partition(":")
        if algorithm == "sha256" and hasher.hexdigest() != expected:
            raise OCIError(
                f"blob {digest} arrived with digest sha256:{hasher.hexdigest()}",
                reason="DigestMismatch",
            )
        if "size" in descriptor and size != descriptor["size"]:
            raise OCIError(
                f"blob {digest} is {size} bytes, expected {descriptor['size']}",
                reason="DigestMismatch",
            )

    def blob_bytes(self, repository: str, descriptor: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        self.fetch_blob(repository, descriptor, buffer)
        return buffer.getvalue()


def _client(
    ref: Reference, credentials: Credentials | None, secret: str | os.PathLike | None, **kwargs
) -> Registry:
    if credentials is None:
        credentials = load_credentials(ref.registry, secret)
    return Registry(ref.registry, credentials=credentials, **kwargs)


# --- push ------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.is_symlink())


def _write_layer(directory: Path, prefix: str, staging: Path) -> tuple[Path, str]:
    """A reproducible tar+gzip of `directory`'s files under `prefix/`; returns (path, diff_id).

    Fixed mtimes, owners and order: the same adapter always gives the same digest.
    """
    tar_path = staging / "layer.tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for path in _files(directory):
            rel = PurePosixPath(prefix, *path.relative_to(directory).parts)
            for parent in reversed(rel.parents[:-1]):  # data, data/sub, ...: dirs first
                name = str(parent)
                if name not in dirs:
                    dirs.add(name)
                    info = tarfile.TarInfo(name)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    tar.addfile(info)
            info = tarfile.TarInfo(str(rel))
            info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    diff_id, _ = _sha256_file(tar_path)
    gz_path = staging / "layer.tar.gz"
    with (
        open(tar_path, "rb") as src,
        open(gz_path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz,
    ):
        shutil.copyfileobj(src, gz, _CHUNK)
    tar_path.unlink()
    return gz_path, diff_id


def push_directory(
    directory: str | os.PathLike,
    ref: str,
    *,
    prefix: str = ADAPTER_DIR,
    annotations: dict[str, str] | None = None,
    credentials: Credentials | None = None,
    secret: str | os.PathLike | None = None,
    plain_http: bool | None = None,
) -> str:
    """Push the files of `directory` to the image reference `ref`; returns the manifest digest.

    The artifact is Kaito's adapter image layout: one reproducible `tar+gzip` layer with the
    files under `prefix/` (`data/` by default), an OCI image config listing the layer's diff_id,
    ORAS's title and created annotations, plus `annotations` on the manifest (pass
    {"sh.kaito.model.name": preset} for an adapter). Credentials come from `credentials`, else
    from `secret` (a docker config.json or dockerconfigjson secret), else ~/.docker/config.json.
    """
    source = Path(directory)
    if not source.is_dir() or not _files(source):
        raise OCIError(f"{source} is not a directory with files to push", reason="ImagePushFailed")
    target = parse_reference(ref)
    if target.digest:
        raise OCIError(f"push to a tag, not a digest: {ref}", reason="InvalidImage")
    client = _client(target, credentials, secret, plain_http=plain_http)
    with tempfile.TemporaryDirectory(prefix="kaito-oci-push-") as tmp:
        layer, diff_id = _write_layer(source, prefix.strip("/"), Path(tmp))
        layer_digest, layer_size = _sha256_file(layer)
        config = json.dumps(
            {"rootfs": {"type": "layers", "diff_ids": [diff_id]}}, separators=(",", ":")
        ).encode()
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        client.push_blob(target.repository, layer, layer_digest, layer_size)
        client.push_blob(target.repository, config, config_digest, len(config))
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_IMAGE_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {
                    "mediaType": LAYER_TAR_GZIP,
                    "digest": layer_digest,
                    "size": layer_size,
                    "annotations": {ANNOTATION_TITLE: "layer.tar.gz"},
                }
            ],
            "annotations": {
                ANNOTATION_CREATED: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                **(annotations or {}),
            },
        }
        body = json.dumps(manifest, separators=(",", ":")).encode()
        return client.put_manifest(target, body, OCI_MANIFEST)


# --- pull ------------------------------------------------------------------------------------


def _choose_platform(index: dict[str, Any]) -> dict[str, Any]:
    """From an index, the linux/amd64 manifest if there is one, else the first real one."""
    entries = [
        m
        for m in index.get("manifests") or []
        # BuildKit's attestation manifests are "unknown/unknown": never the content.
        if (m.get("platform") or {}).get("os") != "unknown"
    ]
    if not entries:
        raise OCIError("image index lists no manifests", reason="InvalidImage")
    for entry in entries:
        platform = entry.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return entry
    return entries[0]


def resolve_manifest(client: Registry, ref: Reference) -> tuple[dict[str, Any], str]:
    """The image (or artifact) manifest `ref` names, following an index; (manifest, digest)."""
    manifest, media_type, digest = client.get_manifest(ref)
    if media_type in (OCI_INDEX, DOCKER_LIST) or "manifests" in manifest:
        entry = _choose_platform(manifest)
        manifest, media_type, digest = client.get_manifest(
            ref.with_reference(digest=entry["digest"])
        )
    if "layers" not in manifest:
        raise OCIError(
            f"{ref} is not an image or artifact manifest ({media_type})", reason="InvalidImage"
        )
    return manifest, digest


def inspect(
    ref: str,
    *,
    credentials: Credentials | None = None,
    secret: str | os.PathLike | None = None,
    plain_http: bool | None = None,
) -> dict[str, Any]:
    """The manifest `ref` resolves to (an index followed to linux/amd64), with its digest."""
    target = parse_reference(ref)
    client = _client(target, credentials, secret, plain_http=plain_http)
    manifest, digest = resolve_manifest(client, target)
    return {**manifest, "digest": digest}


def _safe_relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name.lstrip("/"))
    if not name or ".." in path.parts or path.is_absolute():
        raise OCIError(f"artifact names an unsafe path {name!r}", reason="InvalidImage")
    return path


def _open_decompressed(path: Path, media_type: str) -> BinaryIO:
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if media_type.endswith("zstd") or magic == b"\x28\xb5\x2f\xfd":
        try:
            import zstandard
        except ImportError as exc:
            raise OCIError(
                "this image has zstd-compressed layers and the zstandard package is missing",
                reason="ImagePullFailed",
                hint="pip install 'kaito-jupyter[runtime]' (it pins zstandard)",
            ) from exc
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _extract_layer(stream: BinaryIO, dest: Path) -> None:
    """Apply one image layer to `dest`: whiteouts delete, the rest is extracted safely."""
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            rel = PurePosixPath(member.name.removeprefix("./").lstrip("/") or ".")
            name = rel.name
            if name == ".wh..wh..opq":  # opaque directory: earlier layers' contents vanish
                target = dest / _safe_relative(str(rel.parent)) if str(rel.parent) != "." else dest
                if target.is_dir():
                    for child in target.iterdir():
                        _remove(child)
                continue
            if name.startswith(".wh."):
                _remove(dest / _safe_relative(str(rel.parent / name[4:])))
                continue
            if member.isdev():
                continue
            # tarfile's "data" filter refuses absolute paths, escapes and links out of dest.
            tar.extract(member, dest, filter="data")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _is_tar(media_type: str) -> bool:
    return ".tar" in media_type  # ...layer.v1.tar[+gzip|+zstd], ...rootfs.diff.tar.gzip, ...


def pull_directory(
    ref: str,
    dest: str | os.PathLike,
    *,
    credentials: Credentials | None = None,
    secret: str | os.PathLike | None = None,
    plain_http: bool | None = None,
) -> Path:
    """Pull image or artifact `ref` into directory `dest` (created; its contents replaced).

    - an image (image config): its layers are unpacked in order, as a container runtime would;
    - an ORAS artifact: each titled blob is written under its title; a directory pushed by
      ORAS (`io.deis.oras.content.unpack`) is unpacked;
    - a ModelPack artifact: each layer goes to its `org.cncf.model.filepath`.
    Blobs are checked against their digests. Returns `dest`.
    """
    target = parse_reference(ref)
    client = _client(target, credentials, secret, plain_http=plain_http)
    manifest, _ = resolve_manifest(client, target)
    out = Path(dest)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        root = staging / "root"
        root.mkdir()
        image = (manifest.get("config") or {}).get("mediaType") in IMAGE_CONFIGS
        for layer in manifest["layers"]:
            _pull_layer(client, target.repository, layer, root, image=image, scratch=staging)
        if out.exists():
            _remove(out)
        root.rename(out)  # atomic: a half-pulled artifact is never seen at `dest`
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _pull_layer(
    client: Registry,
    repository: str,
    layer: dict[str, Any],
    root: Path,
    *,
    image: bool,
    scratch: Path,
) -> None:
    media_type = layer.get("mediaType", "")
    notes = layer.get("annotations") or {}
    blob = scratch / layer["digest"].replace(":", "-")
    with open(blob, "wb") as handle:
        client.fetch_blob(repository, layer, handle)
    try:
        modelpack_path = notes.get(ANNOTATION_MODELPACK_PATH)
        title = notes.get(ANNOTATION_TITLE)
        if not image and modelpack_path and not _is_tar(media_type):
            _place(blob, root / _safe_relative(modelpack_path))
        elif not image and title and notes.get(ANNOTATION_UNPACK) == "true":
            with _open_decompressed(blob, media_type) as stream:
                _extract_layer(stream, root)
        elif not image and title:
            # ORAS's default media type for a file is ...layer.v1.tar whatever the file is:
            # the title, not the media type, says this blob is a file.
            _place(blob, root / _safe_relative(title))
        elif image or _is_tar(media_type):
            with _open_decompressed(blob, media_type) as stream:
                _extract_layer(stream, root)
        else:
            raise OCIError(
                f"layer {layer['digest']} ({media_type}) has no file name and is not a tar",
                reason="InvalidImage",
            )
    finally:
        blob.unlink(missing_ok=True)


def _place(blob: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    blob.replace(target)


def _find_dir(root: Path, marker: str, preferred: Iterable[str]) -> Path | None:
    for rel in preferred:
        if (root / rel / marker).is_file():
            return root / rel
    if (root / marker).is_file():
        return root
    found = sorted(root.rglob(marker), key=lambda p: (len(p.parts), str(p)))
    return found[0].parent if found else None


def pull_adapter(
    ref: str,
    dest: str | os.PathLike,
    *,
    credentials: Credentials | None = None,
    secret: str | os.PathLike | None = None,
    plain_http: bool | None = None,
) -> Path:
    """Pull a LoRA adapter image into `dest`; returns the directory holding adapter_config.json.

    Reads Kaito's adapter images (`/data/adapter_*`), the ones `push_directory` writes, and ORAS
    artifacts of the two files.
    """
    root = pull_directory(ref, dest, credentials=credentials, secret=secret, plain_http=plain_http)
    found = _find_dir(root, "adapter_config.json", (ADAPTER_DIR,))
    if found is None:
        raise OCIError(
            f"image {ref} holds no adapter_config.json",
            reason="InvalidAdapter",
            hint="an adapter image has /data/adapter_config.json and /data/adapter_model.safetensors",
        )
    return found


def pull_weights(
    ref: str,
    dest: str | os.PathLike,
    *,
    credentials: Credentials | None = None,
    secret: str | os.PathLike | None = None,
    plain_http: bool | None = None,
) -> Path:
    """Pull model weights into `dest`; returns the checkpoint directory (the one with config.json).

    Reads Kaito's weight images (`/workspace/tfs/weights/`), ORAS file artifacts and ModelPack
    artifacts.
    """
    root = pull_directory(ref, dest, credentials=credentials, secret=secret, plain_http=plain_http)
    found = _find_dir(root, "config.json", WEIGHTS_DIRS)
    if found is None:
        raise OCIError(
            f"image {ref} holds no config.json: it is not a model checkpoint",
            reason="ModelNotFound",
        )
    return found
