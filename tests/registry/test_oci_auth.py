"""Registry credentials, the way real registries ask for them: Basic auth over TLS (htpasswd) and
Bearer tokens from a token service (what ACR, Docker Hub and GHCR do), both against Debian's
docker-registry. Credentials come from the shapes a push secret arrives in."""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import bcrypt
import jwt
import pytest
import requests
import trustme
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from kaito_jupyter.runtimes import oci
from kaito_jupyter.runtimes.local_server import LOOPBACK, free_port

from tests.testbed.processes import Supervisor, wait_until
from tests.testbed.registry import allow_registry, registry_binary, registry_config

USER, PASSWORD = "kaito", "s3cret-pass"


def _start(
    tmp: Path, name: str, extra: dict, *, tls: tuple[str, str, str] | None = None
) -> tuple[str, Supervisor]:
    """Start a registry with `extra` config; `tls` is (certificate, key, CA bundle)."""
    port = free_port()
    storage = tmp / "storage"
    storage.mkdir()
    config = registry_config(port, storage)
    config.update(extra)
    if tls:
        config["http"]["tls"] = {"certificate": tls[0], "key": tls[1]}
    path = tmp / "registry.json"
    path.write_text(json.dumps(config))
    supervisor = Supervisor(tmp / "logs")
    program = supervisor.start(name, [registry_binary(), "serve", str(path)])
    address = f"{LOOPBACK}:{port}"
    scheme = "https" if tls else "http"

    def answers() -> bool:
        # 401 is an answer: the registry is up and asking for credentials.
        verify = tls[2] if tls else True
        return requests.get(f"{scheme}://{address}/v2/", timeout=2, verify=verify).status_code in (
            200,
            401,
        )

    wait_until(answers, timeout=30, what=f"{name} at {address}", programs=[program])
    allow_registry(address)
    return address, supervisor


def _docker_config(registry: str, user: str = USER, password: str = PASSWORD) -> dict:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"auths": {registry: {"auth": auth}}}


def _adapter(tmp: Path) -> Path:
    src = tmp / "adapter"
    src.mkdir()
    (src / "adapter_config.json").write_text('{"r": 4}')
    (src / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    return src


@pytest.fixture(scope="module")
def basic_tls_registry(tmp_path_factory):
    """A registry with htpasswd (Basic) auth over TLS, its CA trusted through REQUESTS_CA_BUNDLE."""
    tmp = tmp_path_factory.mktemp("basic-registry")
    ca = trustme.CA()
    cert = ca.issue_cert(LOOPBACK)
    cert_path, key_path, ca_path = tmp / "cert.pem", tmp / "key.pem", tmp / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    (tmp / "htpasswd").write_text(f"{USER}:{hashed}\n")
    extra = {"auth": {"htpasswd": {"realm": "kaito-test", "path": str(tmp / "htpasswd")}}}
    address, supervisor = _start(
        tmp, "registry-basic", extra, tls=(str(cert_path), str(key_path), str(ca_path))
    )
    try:
        yield address, ca_path
    finally:
        supervisor.stop_all()


def test_basic_auth_over_tls_with_secret_shapes(basic_tls_registry, tmp_path, monkeypatch):
    address, ca_path = basic_tls_registry
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_path))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    src = _adapter(tmp_path)
    ref = f"{address}/team/adapter:1"

    # A docker config.json file.
    config_json = tmp_path / "config.json"
    config_json.write_text(json.dumps(_docker_config(address)))
    oci.push_directory(src, ref, secret=config_json)

    # A mounted kubernetes.io/dockerconfigjson secret: a directory with .dockerconfigjson.
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    (mounted / ".dockerconfigjson").write_text(json.dumps(_docker_config(f"https://{address}")))
    pulled = oci.pull_adapter(ref, tmp_path / "pulled", secret=mounted)
    assert (pulled / "adapter_config.json").read_text() == '{"r": 4}'

    # The Secret manifest itself, as `kubectl get secret -o yaml` prints it.
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "push"},
        "data": {
            ".dockerconfigjson": base64.b64encode(
                json.dumps(_docker_config(address)).encode()
            ).decode()
        },
    }
    manifest = tmp_path / "secret.yaml"
    manifest.write_text(yaml.safe_dump(secret))
    assert oci.inspect(ref, secret=manifest)["layers"]

    # No credentials, and wrong ones: refused with the reason the controller shows.
    with pytest.raises(oci.OCIError) as err:
        oci.inspect(ref)
    assert err.value.reason == "RegistryUnauthorized"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(_docker_config(address, password="nope")))
    with pytest.raises(oci.OCIError) as err:
        oci.push_directory(src, ref, secret=wrong)
    assert err.value.reason == "RegistryUnauthorized"
    assert "secret" in (err.value.hint or "")


class _TokenService:
    """A token service as distribution's token auth specifies: Basic credentials in, a JWT with
    the granted `access` out, signed by a key whose certificate the registry trusts."""

    def __init__(self, tmp: Path, service: str, issuer: str):
        self.service, self.issuer = service, issuer
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kaito-test-token-signer")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = tmp / "token-root.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[dict] = []
        self.authorized = 0  # requests that carried the right Basic credentials
        service_ref = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                query = parse_qs(urlparse(self.path).query)
                service_ref.requests.append(query)
                header = self.headers.get("Authorization", "")
                authorized = (
                    header == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                )
                service_ref.authorized += authorized
                if header and not authorized:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": service_ref.token(query.get("scope", []), authorized)})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.realm = f"http://{LOOPBACK}:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, scopes: list[str], authorized: bool) -> str:
        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            # Anonymous users get nothing: the registry answers 401 again.
            access.append(
                {"type": kind, "name": name, "actions": actions.split(",") if authorized else []}
            )
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": USER if authorized else "",
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        x5c = [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"x5c": x5c})


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("token-registry")
    tokens = _TokenService(tmp, service="kaito-test-registry", issuer="kaito-test-issuer")
    extra = {
        "auth": {
            "token": {
                "realm": tokens.realm,
                "service": tokens.service,
                "issuer": tokens.issuer,
                "rootcertbundle": str(tokens.bundle),
            }
        }
    }
    address, supervisor = _start(tmp, "registry-token", extra)
    try:
        yield address, tokens
    finally:
        supervisor.stop_all()
        tokens.server.shutdown()


def test_bearer_token_auth(token_registry, tmp_path, monkeypatch):
    address, tokens = token_registry
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    (tmp_path / "docker").mkdir()
    src = _adapter(tmp_path)
    ref = f"{address}/team/tuned:2"

    with pytest.raises(oci.OCIError) as err:
        oci.push_directory(src, ref)  # anonymous: the token grants nothing
    assert err.value.reason == "RegistryUnauthorized"

    # Without a secret, ~/.docker/config.json ($DOCKER_CONFIG) is used, as docker and oras do.
    (tmp_path / "docker" / "config.json").write_text(json.dumps(_docker_config(address)))
    # The token service is plain HTTP: the credentials go there only when plain HTTP was asked
    # for explicitly (it is on loopback); otherwise nothing is sent and the push is refused.
    before = len(tokens.requests)
    with pytest.raises(oci.OCIError) as err:
        oci.push_directory(src, ref)
    assert err.value.reason == "RegistryUnauthorized" and "plain HTTP" in err.value.message
    assert len(tokens.requests) == before
    digest = oci.push_directory(src, ref, plain_http=True)
    assert tokens.authorized, "the token service never saw the credentials"
    assert any("repository:team/tuned:pull,push" in q.get("scope", []) for q in tokens.requests)
    assert all(q.get("service") == [tokens.service] for q in tokens.requests)
    pulled = oci.pull_adapter(f"{address}/team/tuned@{digest}", tmp_path / "out", plain_http=True)
    assert (pulled / "adapter_model.safetensors").read_bytes() == b"\0" * 64
