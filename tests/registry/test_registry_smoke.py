"""The OCI registry the test bed starts is a real one: the distribution API round-trips a blob
and a manifest, and the catalog lists the repository."""

from __future__ import annotations

import hashlib
import json

import requests


def test_registry_answers_the_distribution_api(oci_registry):
    host, port = oci_registry.split(":")
    assert host == "127.0.0.1" and int(port) > 0
    response = requests.get(f"http://{oci_registry}/v2/", timeout=5)
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


def _push_blob(base: str, repo: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = requests.post(f"{base}/v2/{repo}/blobs/uploads/", timeout=5)
    assert start.status_code == 202, start.text
    location = start.headers["Location"]
    if location.startswith("/"):
        location = base + location
    separator = "&" if "?" in location else "?"
    put = requests.put(
        f"{location}{separator}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=5,
    )
    assert put.status_code == 201, put.text
    return digest


def test_an_oci_artifact_round_trips(oci_registry):
    base = f"http://{oci_registry}"
    repo = "smoke/adapter"
    layer = b"adapter weights stand-in"
    config = b"{}"
    layer_digest = _push_blob(base, repo, layer)
    config_digest = _push_blob(base, repo, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": len(layer),
            }
        ],
    }
    body = json.dumps(manifest).encode()
    put = requests.put(
        f"{base}/v2/{repo}/manifests/v1",
        data=body,
        headers={"Content-Type": manifest["mediaType"]},
        timeout=5,
    )
    assert put.status_code == 201, put.text

    got = requests.get(
        f"{base}/v2/{repo}/manifests/v1", headers={"Accept": manifest["mediaType"]}, timeout=5
    )
    assert got.status_code == 200
    assert json.loads(got.content)["layers"][0]["digest"] == layer_digest
    blob = requests.get(f"{base}/v2/{repo}/blobs/{layer_digest}", timeout=5)
    assert blob.content == layer
    catalog = requests.get(f"{base}/v2/_catalog", timeout=5).json()
    assert repo in catalog["repositories"]
