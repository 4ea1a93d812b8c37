"""The OCI client against a registry that misbehaves on purpose (tests/testbed/adversary.py),
which a real registry will not do: hostile digests, lying sizes, dropped connections, a
Retry-After date, upload locations, redirects and token services on other hosts."""

from __future__ import annotations

import email.utils
import hashlib
import io
import time

import pytest
from kaito_jupyter.runtimes import oci

from tests.testbed.adversary import (
    Adversary,
    dropping,
    endless,
    json_reply,
    ranged,
    reply,
    sequence,
)
from tests.testbed.registry import allow_registry

REPO = "team/adapter"


@pytest.fixture
def registry():
    server = Adversary()
    allow_registry(server.address)
    yield server
    server.close()


@pytest.fixture
def elsewhere():
    """Another host (127.0.0.2): where an upload, a redirect or a token service should not be
    trusted with the registry's credentials."""
    server = Adversary("127.0.0.2")
    yield server
    server.close()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def serve_artifact(registry: Adversary, layers: list[dict], tag: str = "v1") -> str:
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": oci.OCI_EMPTY, "digest": sha256(b"{}"), "size": 2},
        "layers": layers,
    }
    registry.on("GET", rf"/v2/{REPO}/manifests/{tag}$", json_reply(manifest))
    return f"{registry.address}/{REPO}:{tag}"


def titled(digest: str, size: int, title: str = "adapter_config.json") -> dict:
    return {
        "mediaType": oci.LAYER_TAR,
        "digest": digest,
        "size": size,
        "annotations": {oci.ANNOTATION_TITLE: title},
    }


def test_a_digest_that_is_a_path_never_becomes_one(registry, tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("precious")
    registry.on("GET", r"/blobs/", reply(200, b"evil"))  # any blob the client asks for
    for digest in (str(victim), "sha256:../../precious.txt", "/home/x"):
        ref = serve_artifact(registry, [titled(digest, 4)], tag="bad")
        with pytest.raises(oci.OCIError) as err:
            oci.pull_directory(ref, tmp_path / "out", plain_http=True)
        assert err.value.reason == "InvalidImage" and "not a digest" in err.value.message
        registry.routes = registry.routes[:1]
    assert victim.read_text() == "precious"
    assert not registry.seen("GET", "/blobs/"), "a blob was fetched by an unchecked digest"
    assert not (tmp_path / "out").exists()


def test_unknown_digest_algorithms_fail_closed(registry, tmp_path):
    content = b'{"r": 4}'
    registry.on("GET", r"/blobs/", reply(200, content))
    digest = "md5:" + hashlib.md5(content).hexdigest()
    ref = serve_artifact(registry, [titled(digest, len(content))])
    with pytest.raises(oci.OCIError) as err:
        oci.pull_directory(ref, tmp_path / "out", plain_http=True)
    assert err.value.reason == "InvalidImage" and "'md5' is not supported" in err.value.message
    assert not registry.seen("GET", "/blobs/")


def test_sha512_blobs_and_manifests_are_verified(registry, tmp_path):
    content, tampered = b'{"r": 4}', b'{"r": 5}'
    digest = "sha512:" + hashlib.sha512(content).hexdigest()
    registry.on("GET", rf"/blobs/{digest}$", sequence(reply(200, tampered), reply(200, content)))
    ref = serve_artifact(registry, [titled(digest, len(content))])
    with pytest.raises(oci.OCIError) as err:
        oci.pull_directory(ref, tmp_path / "out", plain_http=True)
    assert err.value.reason == "DigestMismatch"
    pulled = oci.pull_directory(ref, tmp_path / "out", plain_http=True)
    assert (pulled / "adapter_config.json").read_bytes() == content
    # A reference pinned by a sha512 digest is checked with sha512.
    pinned = f"{registry.address}/{REPO}@sha512:{'0' * 128}"
    registry.on("GET", r"/manifests/sha512:", json_reply({"layers": []}))
    with pytest.raises(oci.OCIError) as err:
        oci.inspect(pinned, plain_http=True)
    assert err.value.reason == "DigestMismatch"


def test_a_blob_larger_than_declared_is_cut_off(registry):
    digest = sha256(b"x" * 10)
    registry.on("GET", r"/blobs/", endless(64 << 20, limit=64 << 20))
    client = oci.Registry(registry.address, plain_http=True)
    with pytest.raises(oci.OCIError) as err:
        client.fetch_blob(REPO, {"digest": digest, "size": 10}, io.BytesIO())
    assert err.value.reason == "DigestMismatch"
    assert "larger than the 10 bytes its manifest declares" in err.value.message


def test_a_dropped_blob_resumes_where_it_stopped(registry):
    blob = bytes(range(256)) * 4096 * 4  # 4 MiB, read in 1 MiB chunks
    digest = sha256(blob)
    drop = 3_000_000
    registry.on("GET", rf"/blobs/{digest}$", sequence(dropping(blob, after=drop), ranged(blob)))
    waits: list[float] = []
    client = oci.Registry(registry.address, plain_http=True, sleep=waits.append)
    out = io.BytesIO()
    client.fetch_blob(REPO, {"digest": digest, "size": len(blob)}, out)
    assert out.getvalue() == blob
    first, second = registry.seen("GET", "/blobs/")
    assert "range" not in first.headers
    resumed_at = int(second.headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= drop  # the chunks that arrived whole are kept
    assert len(waits) == 1 and 0 < waits[0] <= 1.0  # a backoff with jitter, not a fixed wait


def test_a_registry_ignoring_the_range_restarts_the_blob(registry):
    blob = b"abc" * 100_000
    digest = sha256(blob)
    registry.on("GET", r"/blobs/", sequence(dropping(blob, after=150_000), reply(200, blob)))
    out = io.BytesIO()
    oci.Registry(registry.address, plain_http=True, sleep=lambda s: None).fetch_blob(
        REPO, {"digest": digest, "size": len(blob)}, out
    )
    assert out.getvalue() == blob


def test_a_connection_that_keeps_dropping_is_an_error_with_a_reason(registry, tmp_path):
    blob = b"z" * 200_000
    digest = sha256(blob)
    registry.on("GET", r"/blobs/", dropping(blob, after=1000))
    client = oci.Registry(registry.address, plain_http=True, retries=2, sleep=lambda s: None)
    with pytest.raises(oci.OCIError) as err:
        client.fetch_blob(REPO, {"digest": digest, "size": len(blob)}, io.BytesIO())
    assert err.value.reason == "DownloadInterrupted"
    assert "dropped 3 times" in err.value.message and err.value.hint
    assert len(registry.seen("GET", "/blobs/")) == 3


def test_retry_after_as_an_http_date_is_honoured(registry):
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    manifest = {"schemaVersion": 2, "layers": []}
    registry.on(
        "GET",
        r"/manifests/",
        sequence(reply(503, b"busy", {"Retry-After": when}), json_reply(manifest)),
    )
    waits: list[float] = []
    client = oci.Registry(registry.address, plain_http=True, sleep=waits.append)
    assert client.get_manifest(oci.parse_reference(f"{registry.address}/{REPO}:v1"))[0] == manifest
    [wait] = waits
    assert 15 < wait <= 20  # until the date the registry named, not a backoff of a second


def _basic_registry(registry: Adversary, location: str) -> oci.Credentials:
    """A registry that asks for Basic credentials and starts uploads at `location`."""

    def needs_auth(answer):
        def guarded(handler):
            if not handler.headers.get("Authorization", "").startswith("Basic "):
                return reply(401, b"", {"WWW-Authenticate": 'Basic realm="test"'})(handler)
            return answer(handler)

        return guarded

    registry.on("HEAD", r"/blobs/", needs_auth(reply(404)))
    registry.on("POST", r"/blobs/uploads/$", needs_auth(reply(202, b"", {"Location": location})))
    return oci.Credentials(username="kaito", password="s3cret")


def test_an_upload_location_on_another_host_gets_no_credentials(registry, elsewhere):
    elsewhere.on("PUT", r"/upload", reply(201))
    creds = _basic_registry(registry, f"{elsewhere.url}/upload/1?state=x")
    blob = b"adapter bytes"

    # Not allowed: refused before anything reaches the other host.
    client = oci.Registry(registry.address, credentials=creds, plain_http=True)
    with pytest.raises(oci.OCIError) as err:
        client.push_blob(REPO, blob, sha256(blob), len(blob))
    assert err.value.reason == "RegistryNotAllowed" and not elsewhere.requests

    # Allowed as a host: the blob goes there, the registry's credentials do not.
    allow_registry(elsewhere.address)
    client = oci.Registry(registry.address, credentials=creds, plain_http=True)
    client.push_blob(REPO, blob, sha256(blob), len(blob))
    [upload] = elsewhere.seen("PUT", "/upload/1")
    assert "authorization" not in upload.headers
    assert registry.seen("POST", "/blobs/uploads/")[-1].headers["authorization"].startswith("Basic")


def test_redirects_are_checked_and_stripped_of_credentials(registry, elsewhere):
    blob = b"weights"
    digest = sha256(blob)
    registry.on("GET", r"/blobs/", reply(307, b"", {"Location": f"{elsewhere.url}/signed/blob"}))
    elsewhere.on("GET", r"/signed/blob", reply(200, blob))
    creds = oci.Credentials(registry_token="registry-token")
    client = oci.Registry(registry.address, credentials=creds, plain_http=True)
    client._tokens[f"repository:{REPO}:pull"] = "registry-token"
    with pytest.raises(oci.OCIError) as err:
        client.fetch_blob(REPO, {"digest": digest, "size": len(blob)}, io.BytesIO())
    assert err.value.reason == "RegistryNotAllowed" and not elsewhere.requests

    allow_registry(elsewhere.address)
    client = oci.Registry(registry.address, credentials=creds, plain_http=True)
    client._tokens[f"repository:{REPO}:pull"] = "registry-token"
    out = io.BytesIO()
    client.fetch_blob(REPO, {"digest": digest, "size": len(blob)}, out)
    assert out.getvalue() == blob
    assert registry.seen("GET", "/blobs/")[-1].headers["authorization"] == "Bearer registry-token"
    assert "authorization" not in elsewhere.seen("GET", "/signed/blob")[0].headers


@pytest.mark.parametrize(
    ("realm", "plain_http", "why"),
    [
        ("{elsewhere}/token", True, "is on another host than the registry"),
        ("{registry}/token", None, "is plain HTTP"),  # plain HTTP found by fallback, not asked
        ("ftp://127.0.0.1/token", True, "is not an http(s) URL"),
        ("file:///etc/passwd", True, "is not an http(s) URL"),
    ],
)
def test_token_services_are_checked_before_credentials_go_there(
    registry, elsewhere, realm, plain_http, why
):
    realm = realm.format(elsewhere=elsewhere.url, registry=registry.url)
    challenge = f'Bearer realm="{realm}",service="test",scope="repository:{REPO}:pull"'
    registry.on("GET", r"/manifests/", reply(401, b"", {"WWW-Authenticate": challenge}))
    registry.on("GET", r"/token", json_reply({"token": "t"}))
    elsewhere.on("GET", r"/token", json_reply({"token": "t"}))
    allow_registry(elsewhere.address)
    creds = oci.Credentials(username="kaito", password="s3cret")
    client = oci.Registry(registry.address, credentials=creds, plain_http=plain_http)
    with pytest.raises(oci.OCIError) as err:
        client.get_manifest(oci.parse_reference(f"{registry.address}/{REPO}:v1"))
    assert err.value.reason == "RegistryUnauthorized" and why in err.value.message
    assert "s3cret" not in str(err.value)
    assert not elsewhere.requests and not registry.seen("GET", "/token")
