"""The distribution API over HTTP(S): auth challenges, retries, blobs and manifests."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import ipaddress
import json
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO

from .credentials import Credentials, load_credentials
from .errors import OCIError
from .media import DOCKER_HUB, DOCKER_HUB_API, MANIFEST_TYPES
from .reference import Reference

RETRY_STATUS = {429, 500, 502, 503, 504}
CHUNK = 1 << 20  # bytes per read when streaming blobs


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
            if response.status_code in RETRY_STATUS and attempt <= self.retries:
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
        for chunk in response.iter_content(CHUNK):
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


def client_for(
    ref: Reference, credentials: Credentials | None, secret: str | os.PathLike | None, **kwargs
) -> Registry:
    if credentials is None:
        credentials = load_credentials(ref.registry, secret)
    return Registry(ref.registry, credentials=credentials, **kwargs)
