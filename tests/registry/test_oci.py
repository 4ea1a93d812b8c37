"""The OCI client against a real registry on loopback: adapters round-trip in Kaito's layout, and
the other shapes weights arrive in (Kaito weight images, ORAS file artifacts, ModelPack
artifacts, multi-platform indexes, zstd layers, whiteouts) pull into a directory."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest
import zstandard
from kaito_jupyter.runtimes import oci


def _adapter_dir(tmp_path):
    src = tmp_path / "adapter"
    src.mkdir()
    (src / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
    (src / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 40)
    return src


def test_reference_parsing_follows_docker():
    assert str(oci.parse_reference("ubuntu")) == "docker.io/library/ubuntu:latest"
    ref = oci.parse_reference("127.0.0.1:5000/team/adapter:0.0.1")
    assert (ref.registry, ref.repository, ref.tag) == ("127.0.0.1:5000", "team/adapter", "0.0.1")
    pinned = oci.parse_reference("myacr.azurecr.io/a/b@sha256:" + "0" * 64)
    assert pinned.reference == "sha256:" + "0" * 64 and pinned.tag is None
    with pytest.raises(oci.OCIError) as err:
        oci.parse_reference("Registry.io/UPPER/case")
    assert err.value.reason == "InvalidImage"


def test_adapter_round_trips_in_kaitos_layout(oci_registry, tmp_path):
    src = _adapter_dir(tmp_path)
    ref = f"{oci_registry}/adapters/smollm2-demo:0.0.1"
    digest = oci.push_directory(src, ref, annotations={oci.ANNOTATION_MODEL_NAME: "smollm2"})
    assert digest.startswith("sha256:")

    manifest = oci.inspect(ref)
    assert manifest["digest"] == digest
    assert manifest["mediaType"] == oci.OCI_MANIFEST
    assert manifest["config"]["mediaType"] == oci.OCI_IMAGE_CONFIG
    assert manifest["annotations"][oci.ANNOTATION_MODEL_NAME] == "smollm2"
    assert oci.ANNOTATION_CREATED in manifest["annotations"]
    [layer] = manifest["layers"]
    assert layer["mediaType"] == oci.LAYER_TAR_GZIP

    # The layer is what Kaito's puller untars: /data/adapter_config.json and the weights.
    client = oci.Registry(oci_registry)
    blob = client.blob_bytes("adapters/smollm2-demo", layer)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        names = tar.getnames()
    assert "data/adapter_config.json" in names and "data/adapter_model.safetensors" in names
    config = json.loads(client.blob_bytes("adapters/smollm2-demo", manifest["config"]))
    assert config["rootfs"]["diff_ids"] == [
        "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
    ]

    pulled = oci.pull_adapter(ref, tmp_path / "pulled")
    assert pulled == tmp_path / "pulled" / "data"
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        assert (pulled / name).read_bytes() == (src / name).read_bytes()

    # Reproducible: the same files give the same layer, so a re-push uploads nothing new.
    again = oci.push_directory(src, f"{oci_registry}/adapters/smollm2-demo:copy")
    assert oci.inspect(f"{oci_registry}/adapters/smollm2-demo:copy")["layers"] == [layer]
    assert again != digest  # different annotations (created, model name), same content
    assert oci.inspect(f"{oci_registry}/adapters/smollm2-demo@{digest}")["digest"] == digest


def test_missing_image_and_missing_registry_fail_with_reasons(oci_registry, tmp_path):
    with pytest.raises(oci.OCIError) as err:
        oci.pull_adapter(f"{oci_registry}/nothing/here:1.0", tmp_path / "x")
    assert err.value.reason == "ImageNotFound"
    assert not (tmp_path / "x").exists()

    client = oci.Registry("127.0.0.1:9", retries=0, timeout=2, allowed=["127.0.0.1:9"])
    with pytest.raises(oci.OCIError) as err:
        client.get_manifest(oci.parse_reference("127.0.0.1:9/a/b:1"))
    assert err.value.reason == "RegistryUnreachable"
    # A loopback registry the setting does not list is refused before anything is sent.
    with pytest.raises(oci.OCIError) as err:
        oci.pull_adapter("127.0.0.1:9/a/b:1", tmp_path / "x")
    assert err.value.reason == "RegistryNotAllowed" and "allowed_private_registries" in str(
        err.value
    )


def _tar(files: dict[str, bytes], *, extra: list[tarfile.TarInfo] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info in extra:
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _push(client: oci.Registry, repo: str, tag: str, config: tuple[str, bytes], layers, **extra):
    """Push a hand-made manifest; `layers` are (media type, bytes, annotations)."""

    def blob(data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        client.push_blob(repo, data, digest, len(data))
        return {"digest": digest, "size": len(data)}

    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": {"mediaType": config[0], **blob(config[1])},
        "layers": [
            {"mediaType": mt, **blob(data), **({"annotations": notes} if notes else {})}
            for mt, data, notes in layers
        ],
        **extra,
    }
    body = json.dumps(manifest).encode()
    return client.put_manifest(
        oci.parse_reference(f"{client.registry}/{repo}:{tag}"), body, oci.OCI_MANIFEST
    ), len(body)


def test_kaito_weight_image_with_index_and_whiteouts(oci_registry, tmp_path):
    client = oci.Registry(oci_registry)
    repo = "kaito/kaito-tiny"
    weights = "workspace/tfs/weights/"
    base = _tar({"etc/os-release": b"ID=debian\n", weights + "stale.bin": b"old"})
    whiteout = tarfile.TarInfo(weights + ".wh.stale.bin")
    top = _tar(
        {weights + "config.json": b"{}", weights + "model.safetensors": b"w" * 100},
        extra=[whiteout],
    )
    zstd_layer = zstandard.ZstdCompressor().compress(_tar({weights + "tokenizer.json": b"{}"}))
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}
    ).encode()
    amd64, size = _push(
        client,
        repo,
        "amd64",
        (oci.OCI_IMAGE_CONFIG, config),
        [
            (oci.LAYER_TAR_GZIP, gzip.compress(base), None),
            (oci.LAYER_TAR, top, None),
            (oci.LAYER_TAR_ZSTD, zstd_layer, None),
        ],
    )
    index = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_INDEX,
        "manifests": [
            {"mediaType": oci.OCI_MANIFEST, "digest": amd64, "size": size,
             "platform": {"architecture": "arm64", "os": "unknown"}},
            {"mediaType": oci.OCI_MANIFEST, "digest": amd64, "size": size,
             "platform": {"architecture": "amd64", "os": "linux"}},
        ],
    }  # fmt: skip
    client.put_manifest(
        oci.parse_reference(f"{oci_registry}/{repo}:0.1"), json.dumps(index).encode(), oci.OCI_INDEX
    )

    checkpoint = oci.pull_weights(f"{oci_registry}/{repo}:0.1", tmp_path / "weights")
    assert checkpoint == tmp_path / "weights" / "workspace" / "tfs" / "weights"
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]


def test_oras_file_artifact_and_modelpack(oci_registry, tmp_path):
    client = oci.Registry(oci_registry)
    # `oras push ref config.json model.safetensors`: an empty config, one titled blob per file,
    # with ORAS's default media type (".tar", though the files are not tars).
    _push(
        client,
        "oras/tiny",
        "v1",
        (oci.OCI_EMPTY, b"{}"),
        [
            (oci.LAYER_TAR, b'{"model_type": "llama"}', {oci.ANNOTATION_TITLE: "config.json"}),
            (oci.LAYER_TAR, b"weights", {oci.ANNOTATION_TITLE: "model.safetensors"}),
            (
                oci.LAYER_TAR_GZIP,
                gzip.compress(_tar({"tokenizer/tokenizer.json": b"{}"})),
                {oci.ANNOTATION_TITLE: "tokenizer", oci.ANNOTATION_UNPACK: "true"},
            ),
        ],
        artifactType="application/vnd.example.model",
    )
    checkpoint = oci.pull_weights(f"{oci_registry}/oras/tiny:v1", tmp_path / "oras")
    assert (checkpoint / "model.safetensors").read_bytes() == b"weights"
    assert (checkpoint / "tokenizer" / "tokenizer.json").exists()

    _push(
        client,
        "modelpack/tiny",
        "v1",
        ("application/vnd.cncf.model.config.v1+json", b'{"descriptor": {}}'),
        [
            ("application/vnd.cncf.model.weight.config.v1.raw", b"{}", {oci.ANNOTATION_MODELPACK_PATH: "config.json"}),
            ("application/vnd.cncf.model.weight.v1.raw", b"w", {oci.ANNOTATION_MODELPACK_PATH: "model.safetensors"}),
            ("application/vnd.cncf.model.weight.v1.tar+zstd",
             zstandard.ZstdCompressor().compress(_tar({"tokenizer.json": b"{}"})),
             {oci.ANNOTATION_MODELPACK_PATH: "tokenizer.json"}),
        ],
    )  # fmt: skip
    checkpoint = oci.pull_weights(f"{oci_registry}/modelpack/tiny:v1", tmp_path / "modelpack")
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]


def test_unsafe_paths_in_artifacts_are_refused(oci_registry, tmp_path):
    client = oci.Registry(oci_registry)
    _push(
        client,
        "evil/escape",
        "v1",
        (oci.OCI_EMPTY, b"{}"),
        [(oci.LAYER_TAR, b"x", {oci.ANNOTATION_TITLE: "../../outside"})],
    )
    with pytest.raises(oci.OCIError) as err:
        oci.pull_directory(f"{oci_registry}/evil/escape:v1", tmp_path / "in")
    assert err.value.reason == "InvalidImage"
    assert not (tmp_path / "outside").exists()
