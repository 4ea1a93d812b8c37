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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urljoin, urlsplit

from kaito_jupyter.runtimes import retry

from kaito_jupyter.api import network
from kaito_jupyter.api.image_reference import digest_problem

from .credentials import Credentials, load_credentials
from .errors import OCIError
from .media import DOCKER_HUB, DOCKER_HUB_API, MANIFEST_TYPES
from .reference import Reference

RETRY_STATUS = {429, 500, 502, 503, 504}
CHUNK = 1 << 20  # bytes per read when streaming blobs
MAX_MANIFEST = 4 << 20  # distribution refuses manifests larger than this; so do we
MAX_REDIRECTS = 5
# Token services on another host than their registry, by registry host: facts of these
# registries. Others are trusted only on the registry's own host, or when listed in
# KAITO_OCI_TOKEN_REALMS (comma-separated hosts).
KNOWN_TOKEN_REALMS = {DOCKER_HUB_API: ("auth.docker.io",), "registry.gitlab.com": ("gitlab.com",)}


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
    return _is_loopback(registry) or registry.lower() in _listed("KAITO_OCI_INSECURE_REGISTRIES")


def _listed(variable: str) -> set[str]:
    return {h.strip().lower() for h in os.environ.get(variable, "").split(",") if h.strip()}


def allowed_private_registries() -> list[str]:
    """The allowed_private_registries setting (kaito.yaml or KAITO_ALLOWED_PRIVATE_REGISTRIES)."""
    from kaito_jupyter import config

    return config.load().allowed_private_registries


def checked_digest(descriptor: Any, what: str = "descriptor") -> str:
    """The digest of a manifest's descriptor, refused unless it is one we can verify: a path is
    never built nor a URL written from an unchecked one."""
    digest = descriptor.get("digest") if isinstance(descriptor, dict) else None
    if problem := digest_problem(digest):
        raise OCIError(f"{what}: {problem}", reason="InvalidImage")
    size = descriptor.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise OCIError(f"{what}: size {size!r} is not a byte count", reason="InvalidImage")
    return digest


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


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
        allowed: Iterable[str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        """`allowed`: the private registry hosts this client may reach (default: the
        allowed_private_registries setting); `sleep` waits between retries."""
        import requests  # a runtime dependency; imported here so parsing stays import-light

        self.registry = registry
        self.host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
        self.allowed = list(allowed_private_registries() if allowed is None else allowed)
        if problem := network.registry_problem(self.host, allowed=self.allowed):
            raise OCIError(problem, reason="RegistryNotAllowed")
        self.plain_http = plain_http
        self.sleep = sleep
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

    def _realm_problem(self, realm: str, *, with_credentials: bool) -> str | None:
        """Why the token service a challenge names must not be asked, or None. It must be on the
        registry's host (or a host KNOWN_TOKEN_REALMS or KAITO_OCI_TOKEN_REALMS names), over
        HTTPS; credentials go over plain HTTP only to loopback, with plain_http=True."""
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "is not an http(s) URL"
        host = parts.hostname.lower()
        registry_host = urlsplit(f"//{self.host}").hostname or ""
        trusted = {registry_host, *KNOWN_TOKEN_REALMS.get(registry_host, ())}
        if host not in trusted | _listed("KAITO_OCI_TOKEN_REALMS"):
            return (
                f"is on another host than the registry ({registry_host}); list it in "
                "KAITO_OCI_TOKEN_REALMS if that token service is the registry's"
            )
        if parts.scheme == "http":
            if with_credentials and not (self.plain_http is True and _is_loopback(host)):
                return (
                    "is plain HTTP: credentials go unencrypted only to a loopback token "
                    "service of a registry pulled with plain_http=True"
                )
            if not self.base.startswith("http://"):
                return "is plain HTTP while the registry speaks HTTPS"
        if host == registry_host:
            return None  # the registry's own host passed the policy already
        return network.registry_problem(parts.netloc, allowed=self.allowed)

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
        realm = params["realm"]
        sending = bool(creds and (creds.identity_token or creds.basic()))
        if problem := self._realm_problem(realm, with_credentials=sending):
            raise OCIError(
                f"registry {self.registry} names the token service {realm}, which {problem}: "
                "refused",
                reason="RegistryUnauthorized",
            )
        # The challenge's scope names what this request needs; ask for ours too (push+pull).
        scopes = sorted({scope, params.get("scope", "")} - {""})
        query = {"service": params.get("service", ""), "scope": scopes}
        if creds and creds.identity_token:
            reply = self.session.post(
                realm,
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "service": params.get("service", ""),
                    "scope": " ".join(scopes),
                    "client_id": "kaito-jupyter",
                },
                timeout=self.timeout,
                allow_redirects=False,
            )
        else:
            auth = creds.basic() if creds else None
            reply = self.session.get(
                realm, params=query, auth=auth, timeout=self.timeout, allow_redirects=False
            )
        if reply.status_code in (401, 403):
            return False
        if reply.status_code != 200:
            raise OCIError(
                f"token service {realm} answered {reply.status_code}: {reply.text[:200]}",
                reason="RegistryUnauthorized",
            )
        try:
            body = reply.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token or not isinstance(token, str):
            raise OCIError(
                f"token service {realm} returned no token", reason="RegistryUnauthorized"
            )
        self._tokens[scope] = token
        return True

    def _same_origin(self, url: str) -> bool:
        return _origin(url) == _origin(self.base)

    def _check_target(self, url: str, what: str) -> None:
        """A URL the registry sent us to (an upload Location, a redirect): http(s), to a host
        the registry policy allows, and HTTPS unless the registry itself speaks plain HTTP."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise OCIError(
                f"registry {self.registry} sent {what} to {url!r}", reason="InvalidImage"
            )
        if parts.scheme == "http" and not self.base.startswith("http://"):
            raise OCIError(
                f"registry {self.registry} sent {what} to plain-HTTP {url}: refused",
                reason="RegistryNotAllowed",
            )
        if problem := network.registry_problem(parts.netloc, allowed=self.allowed):
            raise OCIError(f"{what} at {url}: {problem}", reason="RegistryNotAllowed")

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
        """One API call: retried with backoff on 429/5xx and connection errors, 401s answered.

        Credentials go only to the registry's own origin: an absolute URL (an upload Location)
        or a redirect elsewhere is followed without them, once checked (_check_target)."""
        import requests

        if url.startswith(("http://", "https://")):
            self._check_target(url, what or "a request")
        else:
            url = self.base + url
        ok = tuple(ok)
        authenticated = False
        attempt = redirects = 0
        while True:
            attempt += 1
            own = self._same_origin(url)
            payload: Any = body
            handle = None
            if isinstance(body, Path):
                handle = payload = open(body, "rb")  # noqa: SIM115 - closed below
            try:
                response = self.session.request(
                    method,
                    url,
                    data=payload,
                    headers={**(headers or {}), **(self._authorization(scope) if own else {})},
                    stream=stream,
                    timeout=self.timeout,
                    allow_redirects=False,  # followed below, each target checked
                )
            except requests.RequestException as exc:
                if attempt <= self.retries:
                    self.sleep(retry.backoff(attempt))
                    continue
                raise OCIError(
                    f"cannot reach registry {self.registry} ({what or url}): {exc}",
                    reason="RegistryUnreachable",
                    hint="check the registry name, the network, and TLS (REQUESTS_CA_BUNDLE)",
                ) from exc
            finally:
                if handle is not None:
                    handle.close()
            if response.is_redirect and method in ("GET", "HEAD"):
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise OCIError(f"too many redirects for {what or url}", reason="InvalidImage")
                target = urljoin(url, response.headers["Location"])
                response.close()
                self._check_target(target, f"a redirect for {what or url}")
                url, attempt = target, attempt - 1
                continue
            if response.status_code == 401 and own and not authenticated:
                authenticated = True
                if self._authenticate(response, scope):
                    continue
            if response.status_code in RETRY_STATUS and attempt <= self.retries:
                self.sleep(retry.delay(attempt, response.headers.get("Retry-After")))
                response.close()
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
        """(manifest, media type, digest) of `ref`; an index is returned as is. A manifest pinned
        by digest is checked against it; one larger than MAX_MANIFEST is refused."""
        response = self.request(
            "GET",
            f"/v2/{ref.repository}/manifests/{ref.reference}",
            scope=f"repository:{ref.repository}:pull",
            headers={"Accept": ", ".join(MANIFEST_TYPES)},
            stream=True,
            what=f"manifest {ref}",
        )
        raw = bytearray()
        with contextlib.closing(response):
            for chunk in response.iter_content(CHUNK):
                raw += chunk
                if len(raw) > MAX_MANIFEST:
                    raise OCIError(
                        f"manifest of {ref} is larger than {MAX_MANIFEST} bytes",
                        reason="InvalidImage",
                    )
        raw = bytes(raw)
        algorithm = ref.digest.partition(":")[0] if ref.digest else "sha256"
        digest = f"{algorithm}:{hashlib.new(algorithm, raw).hexdigest()}"
        if ref.digest and ref.digest != digest:
            raise OCIError(f"manifest of {ref} has digest {digest}", reason="DigestMismatch")
        try:
            manifest = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise OCIError(f"manifest of {ref} is not JSON: {exc}", reason="InvalidImage") from None
        if not isinstance(manifest, dict):
            raise OCIError(f"manifest of {ref} is not a JSON object", reason="InvalidImage")
        media_type = manifest.get("mediaType") or response.headers.get("Content-Type", "")
        return manifest, str(media_type).split(";")[0].strip(), digest

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
        """Stream a blob into `dest` (seekable), verifying its size and digest as it arrives.

        A connection dropped mid-blob resumes where it stopped (an HTTP Range request; from the
        start if the registry ignores the range), after a backoff, up to `retries` times."""
        import requests

        digest = checked_digest(descriptor, f"blob of {repository}")
        expected = descriptor.get("size")
        algorithm, _, encoded = digest.partition(":")
        hasher = hashlib.new(algorithm)
        received = drops = 0
        while True:
            response = self.request(
                "GET",
                f"/v2/{repository}/blobs/{digest}",
                scope=f"repository:{repository}:pull",
                ok=(200, 206),
                headers={"Range": f"bytes={received}-"} if received else None,
                stream=True,
                what=f"blob {digest}",
            )
            resumed = response.status_code == 206 and response.headers.get(
                "Content-Range", ""
            ).startswith(f"bytes {received}-")
            if received and not resumed:  # the range was ignored: start over
                dest.seek(0)
                dest.truncate()
                hasher, received = hashlib.new(algorithm), 0
            try:
                with contextlib.closing(response):
                    for chunk in response.iter_content(CHUNK):
                        received += len(chunk)
                        if expected is not None and received > expected:
                            raise OCIError(
                                f"blob {digest} is larger than the {expected} bytes its "
                                "manifest declares",
                                reason="DigestMismatch",
                            )
                        hasher.update(chunk)
                        dest.write(chunk)
                break
            except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError) as exc:
                drops += 1
                if drops > self.retries:
                    raise OCIError(
                        f"the connection to registry {self.registry} dropped {drops} times while "
                        f"downloading blob {digest} ({received} of {expected or '?'} bytes): {exc}",
                        reason="DownloadInterrupted",
                        hint="check the network to the registry, then pull again",
                    ) from None
                self.sleep(retry.backoff(drops))
        if hasher.hexdigest() != encoded:
            raise OCIError(
                f"blob {digest} arrived with digest {algorithm}:{hasher.hexdigest()}",
                reason="DigestMismatch",
            )
        if expected is not None and received != expected:
            raise OCIError(
                f"blob {digest} is {received} bytes, expected {expected}", reason="DigestMismatch"
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
