"""The local OCI image layout store: adapter images that live on this machine, no registry.

A local tuning workspace whose `output.image` names no registry it may push to (a bare
`adapters/phi-qlora:v1`, or a registry that is neither loopback nor configured) keeps its
adapter here, as an image in Kaito's adapter layout (one tar+gzip layer of
`data/adapter_config.json` and `data/adapter_model.safetensors`). A later inference workspace
names it with the same `image:` string Kaito uses, and the local backend resolves that string
here before any remote registry.

The directory is an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`), so `oras`
and `skopeo` read it too; each index entry carries the reference in
`org.opencontainers.image.ref.name`. index.json is replaced atomically under a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from kaito_jupyter.api import image_reference

REF_NAME = "org.opencontainers.image.ref.name"
MODEL_NAME = "sh.kaito.model.name"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def normalise(reference: str) -> str:
    return reference.strip().removeprefix("oci://")


class ImageStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _index(self) -> dict:
        try:
            return json.loads((self.root / "index.json").read_text())
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": []}  # fmt: skip

    def _blob(self, digest: str) -> Path:
        algorithm, encoded = digest.split(":", 1)
        return self.root / "blobs" / algorithm / encoded

    def _put_blob(self, data: bytes | Path) -> tuple[str, int]:
        if isinstance(data, Path):
            hasher = hashlib.sha256()
            with data.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    hasher.update(chunk)
            digest, size = "sha256:" + hasher.hexdigest(), data.stat().st_size
        else:
            digest, size = "sha256:" + hashlib.sha256(data).hexdigest(), len(data)
        target = self._blob(digest)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            if isinstance(data, Path):
                shutil.copyfile(data, tmp)
            else:
                tmp.write_bytes(data)
            tmp.replace(target)
        return digest, size

    def put_adapter(self, reference: str, directory: Path, *, preset: str | None = None) -> str:
        """Store the adapter in `directory` as image `reference`; returns the manifest digest."""
        reference = normalise(reference)
        image_reference.split(reference)  # refuse what is not an image reference
        with tempfile.TemporaryDirectory(prefix="kaito-layout-") as tmp:
            layer, diff_id = _adapter_layer(directory, Path(tmp))
            with self._locked():
                layer_digest, layer_size = self._put_blob(layer)
                config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [diff_id]}},
                                    separators=(",", ":")).encode()  # fmt: skip
                config_digest, config_size = self._put_blob(config)
                annotations = {
                    "org.opencontainers.image.created": datetime.now(UTC).strftime(
                        "%Y-%m-%dT%H:%M:%SZ"
                    )
                }
                if preset:
                    annotations[MODEL_NAME] = preset
                manifest = json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": OCI_CONFIG, "digest": config_digest,
                                   "size": config_size},
                        "layers": [{"mediaType": LAYER, "digest": layer_digest,
                                    "size": layer_size}],
                        "annotations": annotations,
                    },
                    separators=(",", ":"),
                ).encode()  # fmt: skip
                digest, size = self._put_blob(manifest)
                index = self._index()
                index["manifests"] = [
                    m
                    for m in index["manifests"]
                    if (m.get("annotations") or {}).get(REF_NAME) != reference
                ] + [
                    {"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
                     "annotations": {REF_NAME: reference}}
                ]  # fmt: skip
                (self.root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
                tmp_index = self.root / "index.json.tmp"
                tmp_index.write_text(json.dumps(index, indent=1))
                os.replace(tmp_index, self.root / "index.json")
        return digest

    def find(self, reference: str) -> str | None:
        """The manifest digest stored for `reference` (a tag or its digest), or None."""
        reference = normalise(reference)
        name, _, digest = reference.partition("@")
        for m in self._index()["manifests"]:
            ref = (m.get("annotations") or {}).get(REF_NAME)
            if ref == reference or (digest and m.get("digest") == digest and
                                    ref and ref.split(":")[0] == name.split(":")[0]):  # fmt: skip
                return m["digest"]
        return None

    def references(self) -> list[str]:
        return sorted(
            (m.get("annotations") or {}).get(REF_NAME, "") for m in self._index()["manifests"]
        )

    def extract_adapter(self, reference: str, cache: Path) -> Path:
        """The adapter files of `reference`, unpacked once under `cache/<digest>/`."""
        digest = self.find(reference)
        if digest is None:
            raise KeyError(reference)
        target = cache / digest.replace(":", "-")
        if (target / ADAPTER_FILES[0]).is_file():
            return target
        manifest = json.loads(self._blob(digest).read_text())
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache.mkdir(parents=True,
                                        exist_ok=True) or cache))  # fmt: skip
        try:
            for layer in manifest.get("layers") or []:
                with tarfile.open(self._blob(layer["digest"]), "r:gz") as tar:
                    tar.extractall(staging, filter="data")
            found = next((p.parent for p in staging.rglob(ADAPTER_FILES[0])), None)
            if found is None:
                raise KeyError(f"{reference} holds no {ADAPTER_FILES[0]}")
            if target.exists():
                shutil.rmtree(target)
            found.replace(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


def _adapter_layer(directory: Path, staging: Path) -> tuple[Path, str]:
    """Kaito's adapter layer (data/<files>), reproducible; from the OCI client's own writer."""
    from kaito_jupyter.runtimes.oci.push import _write_layer

    only = staging / "adapter"
    only.mkdir()
    for name in ADAPTER_FILES:
        source = directory / name
        if not source.is_file():
            raise FileNotFoundError(f"{directory} holds no {name}")
        os.link(source, only / name) if _same_fs(source, only) else shutil.copyfile(
            source, only / name
        )
    return _write_layer(only, "data", staging)


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev
